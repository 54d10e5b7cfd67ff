"""Device side: predicted demand from the ONNX model, one batched call per planning tick.

A demand directory holds the statistical table (``demand.npz``/``demand.json``) and, when the
model passed the release gate, ``model.onnx`` + ``model.json`` (feature spec, version, bounds) +
``features.npz`` (static per-link features). :func:`open_demand` returns the table and, if one
ships, a :class:`DemandModel`; :meth:`DemandModel.tick` answers a :class:`TickDemand` for the
links and horizon of one tick; :func:`statistical_tick` answers the same from statistics.

Two model kinds (``model.json`` ``granularity``): the link model (feature spec 1, one row per
link, no recent inputs) and the recent-demand cell model (spec 2, :mod:`models.rolling`): one
row per (500 m cell, slot), a factor on statistics for every link of the cell, from the time,
the place and the pickups seen in the last hours (:class:`~models.recent.RecentPickups`, given
to :meth:`DemandModel.tick` by the fleet's live layer; without them, a cab offline, the model
answers as it was trained to: ``recent_missing``). A trip-log replay of a tick reproduces it
only if the recent pickups it saw are recorded with it (the live layer's job, issue 14).

Every failure is typed: missing, corrupt or inconsistent files raise
:class:`~models.errors.DemandDataError`; NaN, negative or absurd outputs raise
:class:`~models.errors.ModelOutputError`. safety/ falls back to statistics on either.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import DemandTable, TickDemand, tick_demand_from_table
from models.errors import DemandDataError, ModelOutputError
from models.features import (
    CELL_FEATURE_SPEC_VERSION,
    CELL_FEATURES,
    CELL_STATIC_FEATURES,
    FEATURE_SPEC_VERSION,
    FEATURES,
    RATE_FLOOR_PER_H,
    STATIC_FEATURES,
    assemble,
    assemble_cells,
    cell_rates,
)
from models.recent import (
    RecentCounts,
    RecentPickups,
    cab_features,
    counts_features,
    expected_per_minute_of_week,
    missing_features,
    neighbour_sum,
    week_cumulative,
    week_window,
)

log = logging.getLogger(__name__)

MODEL_ONNX = "model.onnx"
MODEL_JSON = "model.json"
FEATURES_NPZ = "features.npz"
MODEL_SCHEMA_VERSION = 1
MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_JSON_BYTES = 1024 * 1024


@dataclass(frozen=True)
class InferenceConfig:
    """ONNX Runtime settings for the cab (CPU only)."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise DemandDataError(f"{path} is {size} bytes, over the {limit}-byte bound")
        return path.read_bytes()
    except FileNotFoundError as e:
        raise DemandDataError(f"{path} is missing") from e
    except OSError as e:
        raise DemandDataError(f"cannot read {path}: {e}") from e


def read_model_json(directory: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(directory) / MODEL_JSON
    try:
        doc = json.loads(_read_bounded(p, MAX_JSON_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DemandDataError(f"{p} is corrupt: {e}") from e
    if not isinstance(doc, dict):
        raise DemandDataError(f"{p} is not a JSON object")
    if doc.get("schema_version") != MODEL_SCHEMA_VERSION:
        raise DemandDataError(f"{p} has schema {doc.get('schema_version')!r}")
    return doc


class DemandModel:
    """The ONNX predicted-demand model of one demand directory, ready for ticks."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        table: DemandTable | None = None,
        config: InferenceConfig = InferenceConfig(),
    ) -> None:
        d = Path(directory)
        self.directory = d
        self.config = config
        self.table = DemandTable.load(d) if table is None else table
        doc = read_model_json(d)
        self.doc = doc
        if doc.get("shipped") is False:
            raise DemandDataError(
                f"model {doc.get('version')} in {d} was rejected by the release gate: "
                f"{(doc.get('gate') or {}).get('reason', 'statistics only')}"
            )
        try:
            self.version = str(doc["version"])
            spec = int(doc["feature_spec_version"])
            features = tuple(doc["features"])
            self.max_rate_per_h = float(doc["max_rate_per_h"])
            in_name = str(doc["input"]["name"])
            out_name = str(doc["output"]["name"])
            stat_version = str(doc["statistics_version"])
        except (KeyError, TypeError, ValueError) as e:
            raise DemandDataError(f"{d / MODEL_JSON} lacks or mangles {e}") from e
        #: "link" (spec 1: one row per link, no recent inputs) or "cell" (spec 2: one row per
        #: 500 m cell and slot, recent-demand inputs; see models.rolling)
        self.granularity = str(doc.get("granularity", "link"))
        want = (
            (FEATURE_SPEC_VERSION, FEATURES)
            if self.granularity == "link"
            else (CELL_FEATURE_SPEC_VERSION, CELL_FEATURES)
        )
        if self.granularity not in ("link", "cell") or (spec, features) != want:
            raise DemandDataError(
                f"model {self.version} ({self.granularity}) wants feature spec {spec}"
                f" {list(features)}; this build computes spec {want[0]} {list(want[1])}"
            )
        if stat_version != self.table.version:
            raise DemandDataError(
                f"model {self.version} was trained with statistics {stat_version}, the directory"
                f" holds {self.table.version}"
            )
        if not (np.isfinite(self.max_rate_per_h) and self.max_rate_per_h > 0):
            raise DemandDataError(f"model {self.version} has no usable max_rate_per_h")
        self.n_features = len(want[1])
        if self.granularity == "link":
            self._load_link_features(d)
        else:
            self._load_cell_features(d, doc)
        blob = _read_bounded(d / MODEL_ONNX, MAX_MODEL_BYTES)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = config.intra_op_threads
        opts.inter_op_num_threads = config.inter_op_threads
        try:
            self.session = ort.InferenceSession(
                blob, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's pybind errors derive from Exception only
            raise DemandDataError(f"{d / MODEL_ONNX} does not load: {e}") from e
        self._check_signature(in_name, out_name)
        self.input_name = in_name
        self.output_name = out_name

    def _load_link_features(self, d: Path) -> None:
        try:
            with np.load(d / FEATURES_NPZ, allow_pickle=False) as z:
                static = np.asarray(z["static"], dtype=np.float32)
        except FileNotFoundError as e:
            raise DemandDataError(f"{d / FEATURES_NPZ} is missing") from e
        except (OSError, ValueError, KeyError) as e:
            raise DemandDataError(f"{d / FEATURES_NPZ} is corrupt: {e}") from e
        if static.shape != (self.table.n_edges, len(STATIC_FEATURES)) or not np.all(
            np.isfinite(static)
        ):
            raise DemandDataError(
                f"{d / FEATURES_NPZ} has shape {static.shape} or non-finite values; expected"
                f" ({self.table.n_edges}, {len(STATIC_FEATURES)})"
            )
        self.static = static
        self.cell_rate = cell_rates(self.table)

    def _load_cell_features(self, d: Path, doc: dict[str, Any]) -> None:
        grid = self.table.grid
        try:
            with np.load(d / FEATURES_NPZ, allow_pickle=False) as z:
                static = np.asarray(z["static_cells"], dtype=np.float32)
                area = np.asarray(z["area_cells"], dtype=np.int64)
        except FileNotFoundError as e:
            raise DemandDataError(f"{d / FEATURES_NPZ} is missing") from e
        except (OSError, ValueError, KeyError) as e:
            raise DemandDataError(f"{d / FEATURES_NPZ} is corrupt: {e}") from e
        if (
            static.shape != (grid.n_cells, len(CELL_STATIC_FEATURES))
            or not np.all(np.isfinite(static))
            or area.ndim != 1
            or area.size == 0
            or int(area.min()) < 0
            or int(area.max()) >= grid.n_cells
        ):
            raise DemandDataError(
                f"{d / FEATURES_NPZ} has cell features of shape {static.shape} or bad area"
                f" cells; expected ({grid.n_cells}, {len(CELL_STATIC_FEATURES)})"
            )
        try:
            self.slot_minutes = int(doc["slot_minutes"])
            pi = float(doc["recent"]["pickups_per_hail"])
        except (KeyError, TypeError, ValueError) as e:
            raise DemandDataError(f"{d / MODEL_JSON} lacks or mangles {e}") from e
        if self.slot_minutes not in (15, 30) or not (math.isfinite(pi) and pi > 0):
            raise DemandDataError(
                f"model {self.version}: slot_minutes {self.slot_minutes} (15 or 30) or"
                f" pickups_per_hail {pi} (> 0) unusable"
            )
        self.static_cells = static
        self.area_cells = area
        self.pickups_per_hail = pi
        crate = cell_rates(self.table).astype(np.float64)
        self.cell_rate_h = crate * pi  # recent-source pickups per hour
        self.nb_rate_h = neighbour_sum(self.cell_rate_h, grid)
        self.exp_week_cum = week_cumulative(expected_per_minute_of_week(crate, pi))

    def expected_area_pickups(self, end_minute_of_week: int, window_min: int) -> float:
        """A cell model's expected pickups (its recent source's units) over the whole area in
        the ``window_min`` minutes before ``end_minute_of_week`` of an ordinary week."""
        e = week_window(self.exp_week_cum, int(end_minute_of_week) % (7 * 1440), window_min)
        return float(e[0, self.area_cells].sum())

    def _check_signature(self, in_name: str, out_name: str) -> None:
        ins = self.session.get_inputs()
        outs = self.session.get_outputs()
        where = f"model {self.version}"
        if len(ins) != 1 or ins[0].name != in_name or ins[0].type != "tensor(float)":
            got = [(i.name, i.type) for i in ins]
            raise DemandDataError(f"{where}: inputs {got}, expected [({in_name!r}, float)]")
        shape = list(ins[0].shape)
        if len(shape) != 2 or shape[1] != self.n_features:
            raise DemandDataError(f"{where}: input shape {shape}, expected [N, {self.n_features}]")
        if len(outs) != 1 or outs[0].name != out_name or outs[0].type != "tensor(float)":
            got = [(o.name, o.type) for o in outs]
            raise DemandDataError(f"{where}: outputs {got}, expected [({out_name!r}, float)]")
        oshape = list(outs[0].shape)
        if len(oshape) != 2 or oshape[1] != 1:
            raise DemandDataError(f"{where}: output shape {oshape}, expected [N, 1]")

    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One ONNX Runtime call on a feature matrix; its (N, 1) output, shape-checked."""
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: x})
        except Exception as e_:  # onnxruntime's pybind errors derive from Exception only
            raise ModelOutputError(f"model {self.version} failed to run: {e_}") from e_
        out = np.asarray(out)
        if out.shape != (x.shape[0], 1):
            raise ModelOutputError(
                f"model {self.version} returned shape {out.shape}, expected ({x.shape[0]}, 1)"
            )
        return out

    def rates(
        self, edge_ids: npt.ArrayLike, minutes_of_week: npt.ArrayLike
    ) -> npt.NDArray[np.float32]:
        """Expected hails per hour, shape (len(minutes), len(edge_ids)): one ONNX call.

        A cell model answers without recent inputs here (as a cab offline), each minute's
        30-minute slot as :meth:`tick` does.
        """
        e = np.asarray(edge_ids, dtype=np.int64)
        mins = np.atleast_1d(np.asarray(minutes_of_week, dtype=np.int64))
        if e.size and (e.min() < 0 or e.max() >= self.table.n_edges):
            raise DemandDataError("edge ids outside the demand model's network")
        if e.size == 0 or mins.size == 0:
            return np.zeros((mins.size, e.size), dtype=np.float32)
        if self.granularity == "cell":
            starts = (mins // 30) * 30
            cells, inv = np.unique(self.table.edge_cell[e].astype(np.int64), return_inverse=True)
            corr = np.stack([self.cell_corrections(cells, s, int(s), None)[0] for s in starts])
            out = self.table.rates(e, starts).astype(np.float64) * corr[:, inv]
            check_output(out, self.max_rate_per_h, self.version)
            return np.asarray(out, dtype=np.float32)
        x = assemble(self.static, self.table, self.cell_rate, e, mins)
        out = self.run(x)
        check_output(out, self.max_rate_per_h, self.version)
        return out.reshape(mins.size, e.size).astype(np.float32)

    def cell_corrections(
        self,
        cells: npt.NDArray[np.int64],
        slot_starts: npt.ArrayLike,
        now_minute_of_week: int,
        recent: RecentPickups | RecentCounts | None,
    ) -> npt.NDArray[np.float64]:
        """Factors on statistics ``(len(slot_starts), len(cells))`` of a cell model: one ONNX
        call over every model slot inside the given 30-minute slots, recent inputs ending at
        ``now_minute_of_week`` (a live snapshot's counts: at its own minute; none:
        ``recent_missing``), averaged per 30-minute slot."""
        starts = np.atleast_1d(np.asarray(slot_starts, dtype=np.int64))
        sub = 30 // self.slot_minutes
        # model slots, as offsets from now (the horizon may cross the end of the week)
        rel0 = (starts - now_minute_of_week) % (7 * 1440)
        rel0 = np.where(rel0 > 7 * 1440 - 30, rel0 - 7 * 1440, rel0)
        rel = (rel0[:, None] + self.slot_minutes * np.arange(sub)[None, :]).ravel()
        mow = (now_minute_of_week + rel) % (7 * 1440)
        weekday = mow // 1440
        day_type = np.where(weekday < 5, 0, np.where(weekday == 5, 1, 2))
        lead = np.maximum(rel, 0).astype(np.float64)
        if recent is None:
            feats = missing_features(1, cells.size)
        elif isinstance(recent, RecentCounts):
            feats = counts_features(
                recent, self.table.grid, self.exp_week_cum, cells, self.area_cells
            )
        else:
            feats = cab_features(
                recent,
                self.table.grid,
                now_minute_of_week,
                self.exp_week_cum,
                cells,
                self.area_cells,
            )
        x = assemble_cells(
            self.static_cells,
            self.cell_rate_h,
            self.nb_rate_h,
            cells,
            day_type,
            mow % 1440,
            lead,
            self.slot_minutes,
            np.broadcast_to(feats, (rel.size, cells.size, feats.shape[2])),
        )
        out = self.run(x).astype(np.float64)
        if not np.all(np.isfinite(out)) or np.any(out < 0):
            raise ModelOutputError(f"model {self.version} returned NaN or negative factors")
        return np.asarray(out.reshape(starts.size, sub, cells.size).mean(axis=1), np.float64)

    def tick(
        self,
        edge_ids: npt.ArrayLike,
        minute_of_week: int,
        horizon_min: int,
        recent: RecentPickups | RecentCounts | None = None,
    ) -> TickDemand:
        """Predicted TickDemand over the slots covering ``horizon_min`` from now (fares,
        durations and drop-offs from statistics).

        Cell model (spec 2): one ONNX call, one row per (cell of the links, model slot), with
        the recent pickups (``recent``; the fleet's live layer: its pickups, or a snapshot's
        per-cell counts, :class:`~models.recent.RecentCounts`) seen before now, or without
        them (``None``: a cab offline); each link gets its cell's factor on statistics.

        Link model (spec 1, no recent inputs: ``recent`` is not used): one ONNX call with one
        row per link, at the current slot: the model's correction of statistics (``rate /
        stat_rate``, trained on 3-hour blocks, so it does not resolve finer time) is applied to
        the statistical rate of every slot of the horizon. Use :meth:`rates` to evaluate every
        (slot, link) row instead.
        """
        base = tick_demand_from_table(self.table, edge_ids, minute_of_week, horizon_min)
        if self.granularity == "cell":
            e = base.edge_id.astype(np.int64)
            cells, inv = np.unique(self.table.edge_cell[e].astype(np.int64), return_inverse=True)
            corr = self.cell_corrections(cells, base.slot_minute_of_week, minute_of_week, recent)
            rates = (base.pickups_per_h.astype(np.float64) * corr[:, inv]).astype(np.float32)
            check_output(rates, self.max_rate_per_h, self.version)
            return replace(base, pickups_per_h=rates, source=f"onnx:{self.version}")
        now = self.rates(base.edge_id, base.slot_minute_of_week[:1])  # (1, n)
        stat = np.maximum(base.pickups_per_h.astype(np.float64), RATE_FLOOR_PER_H)  # (K, n)
        correction = now.astype(np.float64) / stat[:1]
        rates = (stat * correction).astype(np.float32)
        check_output(rates, self.max_rate_per_h, self.version)
        return replace(base, pickups_per_h=rates, source=f"onnx:{self.version}")


def check_output(out: npt.NDArray[Any], max_rate_per_h: float, version: str) -> None:
    """Raise ModelOutputError on NaN, infinite, negative or absurd rates."""
    if not np.all(np.isfinite(out)):
        raise ModelOutputError(f"model {version} returned NaN or infinite rates")
    if np.any(out < 0):
        raise ModelOutputError(f"model {version} returned negative rates (min {out.min():.3g})")
    if np.any(out > max_rate_per_h):
        raise ModelOutputError(
            f"model {version} returned {out.max():.3g} hails/h on a link, above the absurd"
            f" bound {max_rate_per_h:.3g}"
        )


def statistical_tick(
    table: DemandTable, edge_ids: npt.ArrayLike, minute_of_week: int, horizon_min: int
) -> TickDemand:
    """The statistical TickDemand (same shape and slots as :meth:`DemandModel.tick`)."""
    return tick_demand_from_table(table, edge_ids, minute_of_week, horizon_min)


def open_demand(
    directory: str | os.PathLike[str],
    config: InferenceConfig = InferenceConfig(),
    *,
    table: DemandTable | None = None,
) -> tuple[DemandTable, DemandModel | None]:
    """The statistical table and, when one shipped (gate passed), the ONNX model (built on
    that table). ``table``: the directory's table, already loaded (it is not read again)."""
    d = Path(directory)
    if table is None:
        table = DemandTable.load(d)
    if not (d / MODEL_JSON).exists():
        return table, None
    doc = read_model_json(d)
    if not doc.get("shipped", False):
        log.info("demand in %s: statistics only (%s)", d, (doc.get("gate") or {}).get("reason"))
        return table, None
    return table, DemandModel(d, table, config)
