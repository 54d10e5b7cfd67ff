"""``nagashi-agent``: every simulated cab runs the agent's own tick (issue 16, "the policy as
shipped").

:class:`NagashiAgentPolicy` gives each cab of the policy under test what the runtime gives
:func:`agent.decide.decide`, and makes it drive what the tick's instruction shows:

* **The bundle.** :func:`sim_bundle`: the world's road graph (the ``radius_graph`` of a
  :class:`tiles.TileStore`, the same rule, on the simulator's graph), the demand table at the
  simulated market's rates (``share x multiplier``, what :meth:`World.tick_demand` gives the
  other nagashi policies), the world's planner parameters (``params.yaml``'s, as run), the
  safety defaults, no business area, and the supply prior ``nagashi-live`` plans with
  (:func:`tools.sim.live.supply_prior`) as the bundle's ``supply.npz``. Time: minute 0 of the
  simulated week is Monday 2014-04-21 00:00 UTC (:data:`SIM_MONDAY`), so the tick's
  ``minute_of_week`` is the simulator's; a rule that depends on the date is read on that week
  (the simulator's other policies read the ordinary week). The cab's clock is a UNIX time
  (:func:`tools.sim.sim_model.cab_time_s`): its fixes, ``now_s`` and the live snapshot's
  ``built_s`` / ``expires_s`` as it receives it (:func:`~tools.sim.sim_model.cab_snapshot`).
* **With the model** (``nagashi-agent+model``, ``nagashi-agent-offline+model``, ``simulate
  --model``): the bundle also carries the world's cell demand model on its table
  (:class:`tools.sim.sim_model.BundleModel`) and ``params.yaml``'s ``live.pickups_per_hail``
  (the +model live layer's units), so :func:`~agent.decide.decide` asks it with the recent
  inputs its own :func:`~agent.tick_recent.tick_recent` makes of the snapshot the cab has
  fetched; in the live layer's first hour the snapshot comes without its cell counts
  (``RECENT_SIM_WARMING``). Offline, or warming up, the ticks equal ``nagashi-agent``'s.
* **The tick's inputs.** The cab ticks every :data:`TICK_S` (``AgentConfig.plan_interval_s``,
  5 s) on its own clock, and at once when it is off the route shown (``off_route``). The
  simulator only sees a cab at the ends of its links, so at each junction the cab runs the
  latest tick that was due (and skips the earlier ones of the same link: they saw the same
  route and, but for up to one snapshot, the same fleet): a fix made from its true position
  at that time on its link (the link's geometry, ``fraction = 1 - elapsed / tau``), with
  Gaussian error of ``gps_sigma_m`` metres and ``heading_sigma_deg`` degrees (seeded), the
  link's heading and cruising speed, ``accuracy_m`` = the error's 68 % radius; the previous
  fix and the last moving one; the cab's own vacant passes (``last_pass_age_s``); the route it
  was shown (the hysteresis); and the live layer as ``nagashi-live`` gets it
  (:meth:`tools.sim.live.LiveLayer.seen_by`: the newest snapshot it has fetched, up to a
  minute old, and its own last heartbeat in it).
* **Driving the instruction.** A ``route`` instruction is driven link by link from the cab's
  link on (when the tick matched the next link already, from there). A ``fallback`` (みちなりに)
  is driven as a driver follows the road: the instruction's continuation, else
  :func:`safety.follow_the_road` from the cab's true link, else the straightest allowed turn.
  A queued link that is not an allowed successor any more (a no-entry window opened) ends the
  queue and the cab ticks again.

The counts (:meth:`NagashiAgentPolicy.stats`, in ``RunResult.policy_stats``): ticks (the calls
of :func:`~agent.decide.decide`), by trigger, fallbacks and their reason codes, moves from a
route and from following the road, the CPU seconds in the tick, and, with ``compare`` (on for
``nagashi-agent``), how often the tick's first move equals the one ``nagashi-live`` reads out of
its shared table for the same cab, link, time, snapshot, own passes and shown route (that
read-out's CPU is counted apart, ``compare_cpu_s``, not in the cab's cost); with the model,
against ``nagashi-live+model``'s read-out, and the ticks by their recent inputs
(``readouts_by_recent``: ``used`` or the ``RECENT_*`` reason, ``not_asked`` when the tick
asked no demand).
"""

from __future__ import annotations

import datetime as dt
import math
import time
import zoneinfo
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.bundle import LoadedBundle
from agent.decide import LIVE_NO_SNAPSHOT, LiveInput, TickInputs, decide
from agent.planner import plan_from_table
from models import SupplyTable
from models.demand import DemandTable
from safety import Fix, SafetyConfig, SafetyGate, follow_the_road
from tiles.geo import haversine_m
from tiles.graph import Graph
from tools.sim.live import AREA
from tools.sim.policies import Allowed, Fleet, NagashiLivePolicy
from tools.sim.sim_model import (
    RECENT_SIM_WARMING,
    RECENT_USED,
    SimModel,
    cab_snapshot,
    cab_time_s,
    warming,
    warming_snapshot,
)
from tools.sim.world import World

F64 = npt.NDArray[np.float64]

#: the agent's replanning interval (``agent.runtime.AgentConfig.plan_interval_s``)
TICK_S = 5.0
#: an off-route tick comes at most this often (``AgentConfig.min_replan_interval_s``)
MIN_TICK_S = 1.0
#: minute 0 of the simulated week: a Monday (local time = UTC in the simulated bundle)
SIM_MONDAY = dt.date(2014, 4, 21)
SIM_EPOCH_S = dt.datetime(
    SIM_MONDAY.year, SIM_MONDAY.month, SIM_MONDAY.day, tzinfo=dt.UTC
).timestamp()
#: GPS error of the simulated fixes: one sigma per axis, metres, and of the heading, degrees
GPS_SIGMA_M = 5.0
HEADING_SIGMA_DEG = 5.0
#: the 68 % radius of a 2-D Gaussian error of one sigma per axis is 1.515 sigma
R68_PER_SIGMA = 1.515
M_PER_DEG_LAT = 111_195.0
LOCALE = "en"


class WorldTiles:
    """The simulated bundle's tiles: :meth:`tiles.TileStore.radius_graph` on the world's graph
    (edges whose start or end lies within the radius, as the store cuts them), and no way
    names (they only label the tablet's instruction)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def radius_graph(self, lon: float, lat: float, radius_m: float) -> Graph:
        g = self.graph
        du = haversine_m(lon, lat, g.u_lon, g.u_lat)
        dv = haversine_m(lon, lat, g.v_lon, g.v_lat)
        return g.subset((du <= radius_m) | (dv <= radius_m))

    def way_names(self, way_ids: Iterable[int]) -> dict[int, str]:
        return {}

    def close(self) -> None:
        """Nothing to close (the graph is the world's)."""


def sim_bundle(
    world: World,
    multiplier: float,
    supply: SupplyTable | None,
    model: SimModel | None = None,
    live_pickups_per_hail: float | None = None,
) -> LoadedBundle:
    """The bundle the simulated agents run (module docs); with ``model`` (``+model``) it
    carries the world's cell model on its table (:class:`tools.sim.sim_model.BundleModel`)
    and its ``params.yaml`` names the live layer's units (``live_pickups_per_hail``)."""
    t = world.table
    scale = np.float32(world.share * multiplier)
    table: DemandTable = replace(t, pickups_per_h=(t.pickups_per_h * scale).astype(np.float32))
    doc: dict[str, Any] = {"version": "sim", "planner": world.params.to_json()}
    if model is not None and live_pickups_per_hail is not None:
        doc["live"] = {"pickups_per_hail": live_pickups_per_hail}
    return LoadedBundle(
        bundle_id="sim",
        path=Path("simulated"),
        manifest={"area": AREA},
        store=WorldTiles(world.graph),  # type: ignore[arg-type]  # the world's graph as the tiles
        demand=table,
        # the model's factors on this table (duck-typed as the DemandModel the tick asks)
        model=None if model is None else model.in_bundle(table, float(scale)),  # type: ignore[arg-type]
        planner=world.params,
        safety=SafetyConfig(),
        area=None,
        timezone=zoneinfo.ZoneInfo("UTC"),
        params_doc=doc,
        supply=supply,
    )


@dataclass
class _Cab:
    """What one simulated agent keeps between ticks."""

    last_tick_s: float | None = None
    ticked: bool = False  # ever (the first tick's trigger is "first")
    fix: Fix | None = None
    moving: Fix | None = None
    shown: tuple[int, ...] = ()  # global ids: the instruction's route (the cab's link first)
    queue: list[int] = field(default_factory=list)  # local links the driver means to drive
    from_route: bool = False  # the queue is a route instruction (not following the road)


class NagashiAgentPolicy(NagashiLivePolicy):
    """Each cab runs :func:`agent.decide.decide` and drives its instruction (module docs).
    ``live=False``: every cab offline (the supply prior only); ``compare``: count the first
    moves equal to ``nagashi-live``'s read-out."""

    name = "nagashi-agent"

    def __init__(
        self,
        world: World,
        allowed: Allowed,
        rng: np.random.Generator,
        m: float,
        *,
        seed: int,
        n_cabs: int = 0,
        live: bool = True,
        compare: bool = True,
        tick_s: float = TICK_S,
        gps_sigma_m: float = GPS_SIGMA_M,
        heading_sigma_deg: float = HEADING_SIGMA_DEG,
        model: bool = False,
    ):
        super().__init__(world, allowed, rng, m, seed=seed, live=live, n_cabs=n_cabs, model=model)
        if tick_s <= 0 or gps_sigma_m < 0 or heading_sigma_deg < 0:
            raise ValueError("tick_s must be positive and the GPS errors not negative")
        self.compare = compare
        self.tick_s = tick_s
        self.gps_sigma_m = gps_sigma_m
        self.heading_sigma_deg = heading_sigma_deg
        self.gps_rng = np.random.default_rng([seed, 0x6F1C])
        self.bundle = (
            sim_bundle(world, m, self.prior, world.model, self.live_pickups_per_hail)
            if model
            else sim_bundle(world, m, self.prior)
        )
        # with the model: the ticks by the recent inputs decide gave it (used, or why none)
        self.tick_recent: Counter[str] = Counter()
        self.tick_expected_60m: tuple[float, float] | None = None  # (min, max)
        self.gate = SafetyGate(self.bundle.safety, area=None, locale=LOCALE)
        self.cabs: dict[int, _Cab] = {}
        g = world.graph
        self.gid = np.asarray(g.edge_id, dtype=np.int64)
        self.speed_mps = np.asarray(world.length_m / np.maximum(world.tau_s, 1e-9))
        self.ticks = 0
        self.triggers: Counter[str] = Counter()
        self.fallbacks = 0
        self.reasons: Counter[str] = Counter()
        self.route_moves = 0
        self.road_moves = 0
        self.retick = 0  # a queued link was no longer allowed: ticked again
        self.compared = 0
        self.equal = 0
        self.tick_cpu_s = 0.0
        self.compare_cpu_s = 0.0

    # ---- what the policy reports -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        moves = self.route_moves + self.road_moves
        return self._model_stats() | {
            "ticks": self.ticks,
            "ticks_by_trigger": dict(sorted(self.triggers.items())),
            "fallback_ticks": self.fallbacks,
            "fallback_share": self.fallbacks / self.ticks if self.ticks else math.nan,
            "fallback_reasons": dict(sorted(self.reasons.items())),
            "moves": moves,
            "route_moves": self.route_moves,
            "road_moves": self.road_moves,
            "reticks": self.retick,
            "first_moves_compared": self.compared,
            "first_moves_equal": self.equal,
            "first_move_equal_share": self.equal / self.compared if self.compared else math.nan,
            "tick_cpu_s": self.tick_cpu_s,
            "compare_cpu_s": self.compare_cpu_s,
            "gps_sigma_m": self.gps_sigma_m,
            "tick_s": self.tick_s,
        }

    def _model_stats(self) -> dict[str, Any]:
        """With the model: the ticks by their recent inputs (``readouts_by_recent``, as the
        ``+model`` policies report their read-outs: ``used`` or the reason; ``not_asked``: a
        tick that asked no demand), the live layer's units, and the compared ``+model``
        read-outs' own counts."""
        if not self.use_model:
            return {}
        e = self.tick_expected_60m
        return {
            "readouts_by_recent": dict(sorted(self.tick_recent.items())),
            "compare_readouts_by_recent": {
                k: v for k, v in sorted(self.recent_reasons.items()) if v
            },
            "live_pickups_per_hail": self.live_pickups_per_hail,
            "expected_fleet_pickups_60m": None if e is None else list(e),
            "live_counts": None if self.live is None else self.live.counts,
        }

    def route_of(self, taxi: int) -> Sequence[int]:
        cab = self.cabs.get(taxi)
        return cab.queue if cab is not None else ()

    def reset_taxi(self, taxi: int) -> None:
        super().reset_taxi(taxi)
        cab = self.cabs.get(taxi)
        if cab is not None:  # vacant again after a trip: the agent ticked on, the route ended
            cab.queue = []
            cab.shown = ()
            cab.from_route = False
            cab.fix = cab.moving = None  # its fixes from before the trip say nothing now

    # ---- the cab at the end of a link ------------------------------------------------------

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        self._note_own_pass(taxi, link, t_s)
        cab = self.cabs.setdefault(taxi, _Cab())
        ok = self.allowed.at(t_s)
        succ = self.world.succ[link]
        due = self._due(cab, link, t_s)
        if due is not None:
            self._tick(taxi, cab, link, t_s, due[0], due[1], fleet)
        elif cab.queue and (cab.queue[0] not in succ or not ok[cab.queue[0]]):
            self.retick += 1
            self._tick(taxi, cab, link, t_s, t_s, "off_route", fleet)
        if cab.queue and cab.queue[0] in succ and ok[cab.queue[0]]:
            f = cab.queue.pop(0)
            if cab.from_route:
                self.route_moves += 1
            else:
                self.road_moves += 1
            return f
        cab.queue = []
        self.road_moves += 1
        return self._straightest(link, t_s)

    def _due(self, cab: _Cab, link: int, t_s: float) -> tuple[float, str] | None:
        """(time, trigger) of the tick the cab runs at this junction, None when none is due."""
        if cab.last_tick_s is None:
            return t_s, ("interval" if cab.ticked else "first")
        elapsed = t_s - cab.last_tick_s
        if elapsed >= self.tick_s:
            return cab.last_tick_s + math.floor(elapsed / self.tick_s) * self.tick_s, "interval"
        if cab.shown and int(self.gid[link]) not in cab.shown and elapsed >= MIN_TICK_S:
            return t_s, "off_route"
        return None

    def _tick(
        self, taxi: int, cab: _Cab, link: int, t_s: float, at_s: float, trigger: str, fleet: Fleet
    ) -> None:
        w = self.world
        fix = self.make_fix(link, max(0.0, 1.0 - (t_s - at_s) / float(w.tau_s[link])), at_s)
        live = None
        warm = False
        if self.live is not None:
            snap, own_link, own_route = self.live.seen_by(taxi, at_s)
            seen = None
            if snap is not None:  # on the cab's clock; warming up: without its cell counts
                warm = self.use_model and warming(snap)
                seen = cab_snapshot(w, warming_snapshot(snap) if warm else snap)
            live = LiveInput(
                area=AREA,
                snapshot=seen,
                age_s=0.0 if snap is None else max(at_s - snap.built_s, 0.0),
                own_link=own_link,
                own_route=own_route,
                reason="" if snap is not None else LIVE_NO_SNAPSHOT,
            )
        mine = self.own_passes.get(taxi, {})
        ages = tuple(sorted((int(self.gid[f]), max(at_s - t, 0.0)) for f, t in mine.items()))
        inputs = TickInputs(
            now_s=cab_time_s(w, at_s),
            fix=fix,
            previous_fix=cab.fix,
            locale=LOCALE,
            trigger=trigger,
            last_moving_fix=cab.moving,
            last_pass_age_s=ages,
            previous_route=cab.shown,
            live=live,
            spread_salt=self.salt_of(taxi),  # the cab's own, as its vehicle id gives it
        )
        c0 = time.process_time()
        result = decide(self.bundle, inputs, self.gate)
        self.tick_cpu_s += time.process_time() - c0
        self.ticks += 1
        self.triggers[trigger] += 1
        if self.use_model:
            self._count_recent(result.recent, warm)
        cab.last_tick_s = at_s
        cab.ticked = True
        cab.fix = fix
        if (
            fix.speed_mps is not None
            and fix.speed_mps >= self.bundle.safety.gps.min_speed_for_heading_mps
        ):
            cab.moving = fix
        ins = result.instruction
        route = tuple(int(x) for x in ins.route_edges)
        if ins.kind == "route":
            cab.shown = route
            cab.queue = self._from_link(link, route)
            cab.from_route = bool(cab.queue)
        else:
            self.fallbacks += 1
            for code in ins.reason_codes:
                self.reasons[str(code)] += 1
            cab.shown = ()
            cab.queue = self._from_link(link, route) or self._road(link, t_s)
            cab.from_route = False
        if self.compare and ins.kind == "route" and cab.queue:
            c0 = time.process_time()
            first = self._live_first_move(taxi, link, t_s, fleet, inputs.previous_route)
            self.compare_cpu_s += time.process_time() - c0
            self.compared += 1
            self.equal += int(first == cab.queue[0])

    def _count_recent(self, rec: dict[str, Any] | None, warm: bool) -> None:
        """Count a tick by the recent inputs its demand model had (:meth:`_model_stats`)."""
        if rec is None:
            self.tick_recent["not_asked"] += 1
            return
        if warm:
            self.tick_recent[RECENT_SIM_WARMING] += 1
            return
        self.tick_recent[str(rec.get("reason") or RECENT_USED)] += 1
        expected = rec.get("expected_fleet_pickups_60m")
        if expected is not None:
            x, e = float(expected), self.tick_expected_60m
            self.tick_expected_60m = (x, x) if e is None else (min(e[0], x), max(e[1], x))

    # ---- the simulated GPS and the driver --------------------------------------------------

    def make_fix(self, link: int, fraction: float, t_s: float) -> Fix:
        """The fix of a cab at ``fraction`` of local ``link`` at simulated time ``t_s``: its
        true position and heading there, with the simulated receiver's error."""
        geom = np.asarray(self.world.graph.geometry(link), dtype=np.float64)
        lon, lat, bearing = _point_along(geom, fraction)
        s = self.gps_sigma_m
        de, dn = self.gps_rng.normal(0.0, s, 2) if s > 0 else (0.0, 0.0)
        dh = self.gps_rng.normal(0.0, self.heading_sigma_deg) if self.heading_sigma_deg > 0 else 0.0
        lat2 = lat + dn / M_PER_DEG_LAT
        lon2 = lon + de / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
        return Fix(
            time_s=cab_time_s(self.world, t_s),
            lon=float(lon2),
            lat=float(lat2),
            heading_deg=float((bearing + dh) % 360.0),
            speed_mps=float(self.speed_mps[link]),
            accuracy_m=max(R68_PER_SIGMA * s, 1.0),
        )

    def _from_link(self, link: int, route: tuple[int, ...]) -> list[int]:
        """The local links of ``route`` (global ids) the cab at the end of ``link`` drives:
        those after its link, or the whole route when it starts at a successor (the tick
        matched the next link already); [] when the route is not drivable from here."""
        if not route:
            return []
        local = [int(x) for x in self.world.graph.local(list(route))]
        if link in local:
            rest = local[local.index(link) + 1 :]
        elif local[0] in self.world.succ[link]:
            rest = local
        else:
            return []
        if -1 in rest:
            rest = rest[: rest.index(-1)]
        return rest

    def _road(self, link: int, t_s: float) -> list[int]:
        """A driver told to follow the road, from the cab's true link."""
        g = self.world.graph
        road = follow_the_road(
            g, int(self.gid[link]), self.world.minute_at(t_s), self.bundle.safety.route
        )
        return [int(x) for x in g.local(list(road[1:]))]

    def _straightest(self, link: int, t_s: float) -> int:
        """The allowed successor with the gentlest turn (no U-turn unless it is the only way);
        -1 at a dead end."""
        succ = self.allowed.successors(link, t_s)
        if not succ:
            return -1
        g = self.world.graph
        s = np.asarray(succ, dtype=np.int64)
        turn = np.abs(
            (g.bearing_start[s].astype(np.float64) - float(g.bearing_end[link]) + 180.0) % 360.0
            - 180.0
        )
        uturn = (g.v_node[s] == g.u_node[link]) & (g.u_node[s] == g.v_node[link])
        turn = np.where(uturn, 360.0, turn)
        return int(s[int(np.argmin(turn))])

    def _live_first_move(
        self, taxi: int, link: int, t_s: float, fleet: Fleet, shown: tuple[int, ...]
    ) -> int:
        """The first link ``nagashi-live``'s read-out gives this cab here (its shared table,
        its view of the fleet), with the same shown route for the hysteresis."""
        if self.table is None or t_s - self.t0 >= self.world.config.replan_s:
            self.table = self._solve(t_s, fleet)
            self.t0 = t_s
        g = self.world.graph
        here = int(self.gid[link])
        previous = list(shown[shown.index(here) + 1 :]) if here in shown else None
        plan = plan_from_table(
            self._table_for(taxi, t_s),
            here,
            1.0,
            self.world.minute_at(t_s),
            self.world.params,
            "statistics",
            previous_route=previous or None,
            committed_links=1 if previous else 0,
        )
        return int(g.local([plan.edges[0]])[0]) if plan.edges else -1


def _point_along(geom: F64, fraction: float) -> tuple[float, float, float]:
    """(lon, lat, bearing in degrees) at ``fraction`` of a polyline's length (planar, local
    metres: links are short)."""
    lat0 = float(geom[:, 1].mean())
    kx = M_PER_DEG_LAT * math.cos(math.radians(lat0))
    dx = np.diff(geom[:, 0]) * kx
    dy = np.diff(geom[:, 1]) * M_PER_DEG_LAT
    seg = np.hypot(dx, dy)
    total = float(seg.sum())
    if seg.size == 0 or total <= 0:
        return float(geom[0, 0]), float(geom[0, 1]), 0.0
    target = min(max(fraction, 0.0), 1.0) * total
    cum = np.cumsum(seg)
    i = min(int(np.searchsorted(cum, target)), seg.size - 1)
    before = float(cum[i] - seg[i])
    u = (target - before) / float(seg[i]) if seg[i] > 0 else 0.0
    lon = float(geom[i, 0] + u * (geom[i + 1, 0] - geom[i, 0]))
    lat = float(geom[i, 1] + u * (geom[i + 1, 1] - geom[i, 1]))
    bearing = math.degrees(math.atan2(float(dx[i]), float(dy[i]))) % 360.0
    return lon, lat, bearing
