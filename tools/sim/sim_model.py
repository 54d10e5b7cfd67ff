"""The recent-demand cell model in the simulator (issue 18): ``nagashi simulate --model DIR``.

The ``+model`` nagashi policies (``nagashi-live+model``, ``nagashi-offline+model``) plan with
the tick demand a cab with that model in its bundle would plan with: the model's factor per
(500 m cell, 30-minute slot) times the table's rates (:meth:`models.DemandModel.cell_corrections`,
the factor :meth:`models.DemandModel.tick` applies), the rates being the simulated market's
(:meth:`tools.sim.world.World.tick_demand`). The model is asked with the recent inputs the cab
would have, :class:`models.RecentCounts` from the live snapshot it has fetched, turned into
the model's inputs by the cab's own code (:func:`agent.tick_recent.tick_recent`: the units,
the grid check, ``RECENT_MAX_SCALE`` / ``RECENT_MIN_EXPECTED``), or without them (``None``,
a cab offline: by the model's design its factor is then 1, statistics).

**What the live layer counts** (:class:`tools.sim.live.LiveLayer` ``counts``). Under
``--matching hail`` the fleet server sees only its cabs' meter pickups (``"pickups"``); under
``--matching dispatch`` it also receives every passenger request it dispatches, so it counts
every request when it is made (``"requests"``; the meter pickup of a dispatched request is the
same passenger and is not counted again).

**Units** (``params.yaml`` ``live.pickups_per_hail`` of the simulated bundle: what one count
of the live layer is per hail of the demand table; the cab scales its counts by the model's
``recent.pickups_per_hail`` over it). The model counts pickups of its own source (the Uber
month: ``model.json`` ``recent.pickups_per_hail`` Uber pickups per table hail). A replayed
passenger of that same source *is* one such pickup, so a counted request is one model pickup
(scale 1). Replayed records of another source are ``Replay.share`` passengers per table hail
(what the planner is told). Meter pickups (hail) are what a fleet of ``n`` cabs at the TLC's
trips per cab-hour (:data:`tools.sim.world.TRIPS_PER_TAXI_H`) makes of the table's hails in
the shift (``n x 1.5 / observed area rate``), the figure a fleet would configure from its
size: it never reads the replayed day's volume.

**Warm-up.** The simulated live layer starts with the shift: until it has run for the
snapshot's longest window (60 min) its counts miss the time before the shift, so the cab is
given no recent inputs then (:data:`RECENT_SIM_WARMING`, counted like the ``RECENT_*`` reasons).

**The cab's clock.** The simulator's time is seconds since the shift start; a cab's clock (its
fixes' times, ``TickInputs.now_s``, a snapshot's ``built_s`` as the cab receives it) is a UNIX
time, minute 0 of the simulated week being Monday 2014-04-21 00:00 UTC (:func:`cab_time_s`;
:func:`cab_snapshot` puts a simulated snapshot on it).

**In the agent's own tick** (``nagashi-agent+model``, ``nagashi-agent-offline+model``,
:mod:`tools.sim.agent_tick`): the simulated bundle carries the model as :class:`BundleModel`,
the model's factors on the bundle's table at the simulated rates (what :meth:`SimModel.tick`
gives ``nagashi-live+model``), and :func:`agent.decide.decide` runs its own
:func:`~agent.tick_recent.tick_recent` on the snapshot the cab has fetched, on the cab's
clock. During the warm-up the cab is given that snapshot without its cell counts
(:func:`warming_snapshot`: the fleet part stays), so its tick asks the model without recent
inputs, and the policy counts the tick as :data:`RECENT_SIM_WARMING`.

No leakage: the model's training days (``model.json`` ``training.train_days``) and its
statistics' days are refused as replayed days, as the demand table's are
(``--allow-in-sample`` allows both).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.bundle import LoadedBundle
from agent.tick_live import LiveInput
from agent.tick_recent import tick_recent
from models import (
    DemandDataError,
    DemandModel,
    DemandTable,
    ModelsError,
    RecentCounts,
    TickDemand,
    tick_demand_from_table,
)
from models.predict import check_output
from safety import SafetyConfig
from sync.live import GridSpec, Snapshot
from tools.errors import ToolsError

if TYPE_CHECKING:
    from tools.sim.replay import Replay
    from tools.sim.world import World

__all__ = [
    "RECENT_SIM_WARMING",
    "RECENT_USED",
    "BundleModel",
    "SimModel",
    "cab_snapshot",
    "cab_time_s",
    "load_sim_model",
    "model_days",
    "warming",
    "warming_snapshot",
]

#: the live layer has not yet run for the snapshot's longest window (module docs)
RECENT_SIM_WARMING = "RECENT_SIM_WARMING"
#: the tick's recent inputs came from the snapshot (the ``used`` entry of the counts)
RECENT_USED = "used"
#: the snapshot's longest window, seconds
_WARM_S = 3600.0
#: minute 0 of the simulated week as a UNIX time (``tools.sim.agent_tick.SIM_EPOCH_S``)
_SIM_EPOCH_S = dt.datetime(2014, 4, 21, tzinfo=dt.UTC).timestamp()
_UTC = zoneinfo.ZoneInfo("UTC")


@dataclass(eq=False)
class SimModel:
    """A cell demand model as the simulated cabs use it (module docs). Picklable for the
    worker processes and Dask: the ONNX session is made again where it is first used.

    ``source_units``: the model's pickups per replayed passenger when the replayed records
    are the model's own source (1.0), else None (another source: ``replay_share``
    passengers per table hail)."""

    directory: str
    version: str
    train_days: tuple[str, ...]
    statistics_days: object
    pickups_per_hail: float
    source_units: float | None
    replay_share: float | None
    grid: GridSpec
    train_formats: tuple[str, ...] = ()  # the trip formats the model learnt from
    _model: DemandModel | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None  # an onnxruntime session does not pickle
        return state

    @property
    def model(self) -> DemandModel:
        if self._model is None:
            self._model = DemandModel(self.directory)
        return self._model

    def with_replay(self, replay: Replay) -> SimModel:
        """This model with the units of ``replay``'s passengers (module docs): a record of the
        model's own source is one of its pickups; another source's are ``replay.share``
        passengers per table hail."""
        same = bool(self.train_formats) and set(replay.formats) <= set(self.train_formats)
        out = dataclasses.replace(
            self,
            source_units=1.0 if same else None,
            replay_share=None if same else replay.share,
        )
        out._model = self._model
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "version": self.version,
            "train_days": [self.train_days[0], self.train_days[-1]] if self.train_days else [],
            "train_dates": len(self.train_days),
            "statistics_days": self.statistics_days,
            "pickups_per_hail": self.pickups_per_hail,
            "train_formats": list(self.train_formats),
            "passengers_are_its_source": self.source_units is not None,
        }

    def live_pickups_per_hail(self, world: World, counts: str, n_cabs: int) -> float:
        """What one count of the live layer is per hail of the demand table (module docs,
        "Units"): ``counts`` ``"requests"`` or ``"pickups"`` (the meter pickups of the
        ``n_cabs`` cabs that report)."""
        if counts == "requests":
            if self.source_units is not None:
                return self.pickups_per_hail / self.source_units
            if self.replay_share is not None:
                return self.replay_share
            return world.share
        cfg = world.config
        if world.observed_area_rate_h <= 0 or n_cabs < 1:
            return math.inf  # nothing to count with: the model's counts are never used
        return n_cabs * cfg.trips_per_taxi_h / world.observed_area_rate_h

    def bundle(self, world: World, live_pickups_per_hail: float) -> LoadedBundle:
        """What :func:`agent.tick_recent.tick_recent` reads of the cab's bundle: its
        ``params.yaml`` ``live`` section (the units) and its clock (UTC, minute 0 of the
        simulated week on a Monday, as ``nagashi-agent``'s bundle)."""
        return LoadedBundle(
            bundle_id="sim",
            path=Path("simulated"),
            manifest={"area": "sim"},
            store=None,  # type: ignore[arg-type]  # tick_recent reads no tiles
            demand=world.table,
            model=self.model,
            planner=world.params,
            safety=SafetyConfig(),
            area=None,
            timezone=_UTC,
            params_doc={
                "version": "sim",
                "live": {"pickups_per_hail": live_pickups_per_hail},
            },
        )

    def recent(
        self, lb: LoadedBundle, world: World, snap: Snapshot | None
    ) -> tuple[RecentCounts | None, dict[str, Any]]:
        """The recent inputs a cab that fetched ``snap`` gives the model, and the tick
        record's ``recent`` (:func:`agent.tick_recent.tick_recent`; the simulator's own
        reason: :data:`RECENT_SIM_WARMING`)."""
        if snap is not None and warming(snap):
            return None, {"reason": RECENT_SIM_WARMING}
        live = None
        if snap is not None:
            # the snapshot's clock is the shift's: on the cab's clock it is a UNIX time
            live = LiveInput(area=snap.area, snapshot=cab_snapshot(world, snap))
        return tick_recent(lb, self.model, live)

    def tick(
        self, base: TickDemand, minute_of_week: int, recent: RecentCounts | None
    ) -> TickDemand:
        """``base`` (the table's tick demand at the simulated rates) with every link's rates
        times its cell's factor, as :meth:`models.DemandModel.tick` applies it to the
        table's, the recent inputs ending where ``recent`` says (none: a cab offline)."""
        m = self.model
        e = base.edge_id.astype(np.int64)
        cells, inv = np.unique(m.table.edge_cell[e].astype(np.int64), return_inverse=True)
        corr = m.cell_corrections(cells, base.slot_minute_of_week, minute_of_week, recent)
        rates = (base.pickups_per_h.astype(np.float64) * corr[:, inv]).astype(np.float32)
        return dataclasses.replace(base, pickups_per_h=rates, source=f"onnx:{m.version}")

    def in_bundle(self, table: DemandTable, scale: float) -> BundleModel:
        """The model as the simulated agent's bundle carries it: its factors on ``table``
        (the bundle's, the world's table at the simulated rates, ``scale`` x its own)."""
        return BundleModel(self, table, scale)


class BundleModel:
    """A cell model in the simulated agent's bundle (module docs): what
    :func:`agent.decide.tick_demand` and :func:`agent.tick_recent.tick_recent` ask of a
    :class:`models.DemandModel` (its grid, units and expected pickups are the model's own),
    with :meth:`tick` the model's factors (:meth:`SimModel.tick`) on ``table``, the bundle's
    table at the simulated rates (``scale`` x the model's own rates, so the absurd-rate bound
    is scaled too)."""

    granularity = "cell"

    def __init__(self, sim: SimModel, table: DemandTable, scale: float) -> None:
        self.sim = sim
        self.scaled = table
        self.scale = float(scale)

    @property
    def version(self) -> str:
        return self.sim.version

    @property
    def table(self) -> DemandTable:
        """The model's own table (its grid and network: what ``tick_recent`` checks)."""
        return self.sim.model.table

    @property
    def pickups_per_hail(self) -> float:
        return self.sim.model.pickups_per_hail

    def expected_area_pickups(self, end_minute_of_week: int, window_min: int) -> float:
        return self.sim.model.expected_area_pickups(end_minute_of_week, window_min)

    def tick(
        self,
        edge_ids: npt.ArrayLike,
        minute_of_week: int,
        horizon_min: int,
        recent: RecentCounts | None = None,
    ) -> TickDemand:
        """:meth:`models.DemandModel.tick` on the bundle's table: the factors of the cells of
        ``edge_ids`` (``recent``: the inputs ending at the snapshot's minute; None: offline)
        times the bundle's rates; raises :class:`models.ModelOutputError` as it does."""
        base = tick_demand_from_table(self.scaled, edge_ids, minute_of_week, horizon_min)
        out = self.sim.tick(base, minute_of_week, recent)
        check_output(out.pickups_per_h, self.sim.model.max_rate_per_h * self.scale, self.version)
        return out


def cab_time_s(world: World, t_s: float) -> float:
    """Simulated time ``t_s`` (seconds since the shift start) on the cab's clock (a UNIX time:
    minute 0 of the simulated week is Monday 2014-04-21 00:00 UTC; module docs)."""
    return _SIM_EPOCH_S + world.minute_at(t_s) * 60.0


def cab_snapshot(world: World, snap: Snapshot) -> Snapshot:
    """``snap`` (built on the simulator's clock) as the cab receives it: its ``built_s`` and
    ``expires_s`` on the cab's clock (:func:`cab_time_s`)."""
    return dataclasses.replace(
        snap, built_s=cab_time_s(world, snap.built_s), expires_s=cab_time_s(world, snap.expires_s)
    )


def warming(snap: Snapshot) -> bool:
    """Whether the simulated live layer had not yet run for the snapshot's longest window
    when it built ``snap`` (on the simulator's clock; module docs, "Warm-up")."""
    return snap.built_s < _WARM_S


def warming_snapshot(snap: Snapshot) -> Snapshot:
    """``snap`` without its cell counts (no grid, no cells): what the agent's tick gets
    during the warm-up (module docs), its fleet counts unchanged."""
    none = np.zeros(0, dtype=np.int64)
    return dataclasses.replace(
        snap, grid=None, cell_ids=none, pickups=np.zeros((0, 3), dtype=np.int64)
    )


def model_days(model: DemandModel) -> tuple[tuple[str, ...], object]:
    """The dates the model was trained on (``model.json`` ``training.train_days``) and its
    statistics' days (``demand.json`` ``days``); a model that does not say is refused."""
    training = model.doc.get("training")
    days = training.get("train_days") if isinstance(training, dict) else None
    if not isinstance(days, list) or not days or not all(isinstance(d, str) for d in days):
        raise ToolsError(
            f"--model {model.directory}: model.json does not record its training days, so the "
            "replay cannot be checked for leakage"
        )
    return tuple(sorted(days)), model.table.meta.get("days")


def load_sim_model(
    directory: str,
    world_table: DemandTable,
    days: frozenset[dt.date] | None,
    allow_in_sample: bool,
) -> SimModel:
    """The cell model of a ``demand train`` directory for the simulator, checked: it loads
    (``shipped``), is a cell model on the demand table's network and grid, and was not
    trained on a replayed day (nor were its statistics), unless ``allow_in_sample``. Every
    refusal is a :class:`ToolsError` (one line, exit 2). The units of the replayed passengers
    are set by :meth:`SimModel.with_replay` once they are read."""
    from tools.sim.replay import describe_days, in_sample_days

    if days is None:
        raise ToolsError(
            "--model needs --passengers and --days: the model's recent inputs count real "
            "pickups of held-out days"
        )
    try:
        model = DemandModel(directory)
    except (ModelsError, OSError) as e:
        raise ToolsError(f"--model {directory}: {e}") from None
    if model.granularity != "cell":
        raise ToolsError(
            f"--model {directory}: a {model.granularity} model; the simulator takes the "
            "recent-demand cell model (demand train --train-days)"
        )
    if (
        model.table.network_sha256 != world_table.network_sha256
        or model.table.n_edges != world_table.n_edges
        or model.table.grid.to_json() != world_table.grid.to_json()
        or not np.array_equal(model.table.edge_cell, world_table.edge_cell)
    ):
        raise ToolsError(
            f"--model {directory}: built for another road network or cell grid than --demand"
        )
    train, stat_days = model_days(model)
    trained = {dt.date.fromisoformat(d) for d in train}
    leaked = sorted(set(days) & trained)
    stat_leaked = in_sample_days(model.table, days)
    if stat_leaked is None and not allow_in_sample:
        raise ToolsError(
            f"--model {directory}: its statistics do not record their days, so the replay "
            "cannot be checked for leakage (pass --allow-in-sample)"
        )
    leaked = sorted(set(leaked) | set(stat_leaked or ()))
    if leaked and not allow_in_sample:
        raise ToolsError(
            f"refusing to replay {describe_days(leaked)}: the model {model.version} was trained "
            "on those days (pass --allow-in-sample to replay them anyway)"
        )
    g = model.table.grid
    grid: GridSpec = (g.min_lon, g.min_lat, g.cell_deg_lon, g.cell_deg_lat, g.ncols, g.nrows)
    try:
        pph = float(model.pickups_per_hail)
    except (AttributeError, TypeError, ValueError) as e:  # a cell model always has it
        raise DemandDataError(f"--model {directory}: no recent.pickups_per_hail") from e
    sim = SimModel(
        directory=str(directory),
        version=model.version,
        train_days=train,
        statistics_days=stat_days,
        pickups_per_hail=pph,
        source_units=None,
        replay_share=None,
        grid=grid,
        train_formats=tuple(sorted(_train_formats(model))),
    )
    sim._model = model
    return sim


def _train_formats(model: DemandModel) -> set[str]:
    """The trip formats the model learnt from (``model.json`` ``training.train_files``)."""
    training = model.doc.get("training")
    files = training.get("train_files") if isinstance(training, dict) else None
    if not isinstance(files, list):
        return set()
    return {str(f.get("format")) for f in files if isinstance(f, dict) and f.get("format")}
