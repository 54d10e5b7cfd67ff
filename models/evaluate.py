"""Held-out evaluation of predicted demand against statistics, and the release gate.

Both sources answer the same question for the held-out trips: how many pickups to expect on
each link (and 500 m cell) in each 30-minute slot and day type the trips cover. Expected counts
are ``rate * pi * covered_h`` where ``covered_h`` are the hours of the slot the held-out file
covers and ``pi`` its sampling fraction of all NYC trips (:mod:`models.statistics`): the
citywide volume of the held-out time is given to both sources alike; they are judged on how
they spread it over space and time.

Metrics (the production level: 500 m cell x 30-minute slot x day type; every cell with a
cruisable link, every covered slot):

* ``mae``, ``rmse`` of pickup counts, ``poisson_deviance`` (mean unit deviance);
* ``link_loglik_per_pickup``: mean log-probability of each held-out pickup's link among all
  cruisable links in its slot (multinomial, conditional on the slot's total; a pickup split
  between the two directions of a street counts by its shares).

Each comes with ``ratio`` = model / statistics; for the log-likelihood, the ratio of the two
(negative) values, so below 1 is better everywhere. The gate passes when the model's Poisson
deviance *and* link log-likelihood are both better than statistics'.

A cell model with recent-demand inputs (feature spec 2, :mod:`models.rolling`) is evaluated on
held-out *dates* of a month of pickups instead (:func:`evaluate_cell_model`): per 500 m cell x
slot of its ``slot_minutes`` x date, against statistics and the stronger recent-level baseline,
and its gate compares it with the latter.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOTS_PER_DAY, DemandTable, _atomic_write
from models.errors import DemandDataError
from models.predict import FEATURES_NPZ, MODEL_JSON, MODEL_ONNX, DemandModel, read_model_json
from models.snap import SnapConfig, Snapped, snap_pickups
from models.statistics import (
    StatsConfig,
    effective_exposure,
    file_sha256,
    full_graph,
    network_bbox,
)
from models.train import poisson_deviance
from models.trips import Trips, read_trips
from tiles import Graph, TileStore

if TYPE_CHECKING:  # models.rolling is loaded only for a cell model
    from models.rolling import MonthData

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
_DAY_START_MIN = (0, 5 * 1440, 6 * 1440)  # a Monday, a Saturday, a Sunday


def heldout_windows(model_doc: dict[str, Any], trip_file: Path) -> set[int] | None:
    """Windows of ``trip_file`` not used in training (None: the file was not used at all).

    Raises DemandDataError when the file was used whole (a span sample) for training.
    """
    sha = file_sha256(trip_file)
    for f in model_doc.get("training", {}).get("train_files", []):
        if f.get("sha256") != sha:
            continue
        if f.get("mode") != "windows":
            raise DemandDataError(f"{trip_file} was used for training: not held-out data")
        used = set(f.get("windows_used", []))
        return {i for i in range(len(f.get("windows", []))) if i not in used}
    return None


def _metrics(y: F64, mu: F64) -> dict[str, float]:
    err = mu - y
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err * err))),
        "poisson_deviance": poisson_deviance(y, mu),
    }


def evaluate(
    store: TileStore,
    model_dir: str | os.PathLike[str],
    trip_files: list[str | os.PathLike[str]],
    windows: set[int] | None = None,
    model: DemandModel | None = None,
    stats_config: StatsConfig = StatsConfig(),
    snap_config: SnapConfig = SnapConfig(),
    days: frozenset[dt.date] | None = None,
) -> dict[str, Any]:
    """Model and statistics on held-out trips (see the module docstring); a cell model
    (recent inputs) on held-out dates (:func:`evaluate_cell_model`)."""
    d = Path(model_dir)
    model = DemandModel(d) if model is None else model
    table: DemandTable = model.table
    if table.network_sha256 != store.meta.get("source_sha256", ""):
        raise DemandDataError("the demand model was built on another road network")
    if model.granularity == "cell":
        return evaluate_cell_model(store, model, trip_files, days=days)
    trips = read_trips(list(trip_files), network_bbox(table.grid))
    used: list[dict[str, Any]] = []
    for fi, f in enumerate(trip_files):
        held = heldout_windows(model.doc, Path(f))
        keep = windows if windows is not None else held
        if trips.mode[fi] == "windows" and keep is not None:
            if held is not None and not keep <= held:
                raise DemandDataError(
                    f"windows {sorted(keep - held)} of {f} were used for training"
                )
            trips = trips.restrict_windows(fi, keep)
        used.append({"path": str(f), "windows": sorted(keep) if keep is not None else "all"})
    return evaluate_trips(
        g_store=store,
        model=model,
        trips=trips,
        used=used,
        stats_config=stats_config,
        snap_config=snap_config,
    )


def evaluate_trips(
    g_store: TileStore,
    model: DemandModel,
    trips: Trips,
    used: list[dict[str, Any]],
    stats_config: StatsConfig = StatsConfig(),
    snap_config: SnapConfig = SnapConfig(),
) -> dict[str, Any]:
    """A link model against statistics on held-out trips: expected pickups per (covered slot,
    cruisable link) from each, scored per cell and per link against the observed ones."""
    table = model.table
    g = full_graph(g_store)
    if trips.n == 0:
        raise DemandDataError("no held-out pickup inside the road network")
    snapped = snap_pickups(
        g, trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat, snap_config
    )
    exposure, _ = effective_exposure(trips, stats_config)
    allowed = g.cruise_allowed()
    edges = g.edge_id[allowed].astype(np.int64)
    slots = [
        (dt, s) for dt in range(len(DAY_TYPES)) for s in range(SLOTS_PER_DAY) if exposure[dt, s] > 0
    ]
    if not slots:
        raise DemandDataError("the held-out trips cover no time")
    minutes = np.array([_DAY_START_MIN[dt] + 30 * s for dt, s in slots], dtype=np.int64)
    rate_model = model.rates(edges, minutes).astype(np.float64)  # (K, n)
    dts = np.array([dt for dt, _ in slots])
    sls = np.array([s for _, s in slots])
    rate_stat = table.pickups_per_h[dts[:, None], sls[:, None], edges[None, :]].astype(np.float64)
    expo = exposure[dts, sls][:, None]
    mu = {"model": rate_model * expo, "statistics": rate_stat * expo}
    obs = _observed(g, trips, snapped, allowed, edges, slots)
    # cells: every cell with a cruisable link
    cells, cell_col = np.unique(table.edge_cell[edges].astype(np.int64), return_inverse=True)
    result = {name: _scores(m, obs, cells.size, cell_col) for name, m in mu.items()}
    ratios = {
        key: (
            result["model"][key] / result["statistics"][key]
            if result["statistics"][key] != 0
            else float("nan")
        )
        for key in result["model"]
        if key != "expected_pickups"
    }
    passed = bool(
        result["model"]["poisson_deviance"] < result["statistics"]["poisson_deviance"]
        and result["model"]["link_loglik_per_pickup"]
        > result["statistics"]["link_loglik_per_pickup"]
    )
    return {
        "model_version": model.version,
        "statistics_version": table.version,
        "evaluated_on": used,
        "heldout_pickups": float(np.sum(obs.w)),
        "slots": [f"{DAY_TYPES[dt]} {s // 2:02d}:{30 * (s % 2):02d}" for dt, s in slots],
        "cells": int(cells.size),
        "links": int(edges.size),
        "model": _round(result["model"]),
        "statistics": _round(result["statistics"]),
        "ratio_model_over_statistics": _round(ratios),
        # the recent level needs pickups before each slot: a file of short windows has none
        "recent_baseline": None,
        "ratio_model_over_recent_baseline": None,
        "slot_minutes": 30,
        "model_beats_statistics": passed,
    }


@dataclass(frozen=True, eq=False)
class _Observed:
    """The held-out pickups: per (slot k, link column) counts ``y``, and per snapped pickup
    inside a slot and on a cruisable link its slot ``k``, column ``col`` and weight ``w``."""

    y: F64
    k: npt.NDArray[np.int64]
    col: npt.NDArray[np.int64]
    w: F64


def _observed(
    g: Graph,
    trips: Trips,
    snapped: Snapped,
    allowed: npt.NDArray[np.bool_],
    edges: npt.NDArray[np.int64],
    slots: list[tuple[int, int]],
) -> _Observed:
    trip_i, edge_local, w = snapped.edge_weights(g.n)
    col_of_local = np.full(g.n, -1, dtype=np.int64)
    col_of_local[np.flatnonzero(allowed)] = np.arange(edges.size)
    col = col_of_local[edge_local]
    t_dt = trips.pickup_day_type[trip_i]
    t_slot = (trips.pickup_minute_of_week[trip_i] % 1440) // 30
    k_of = {(dt, s): k for k, (dt, s) in enumerate(slots)}
    k = np.array([k_of.get((int(a), int(b)), -1) for a, b in zip(t_dt, t_slot, strict=True)])
    ok = (col >= 0) & (k >= 0)
    y = np.zeros((len(slots), edges.size))
    np.add.at(y, (k[ok], col[ok]), w[ok])
    return _Observed(y, k[ok], col[ok], w[ok])


def _scores(
    m: F64, obs: _Observed, n_cells: int, cell_col: npt.NDArray[np.int64]
) -> dict[str, float]:
    """Expected pickups ``m`` (slot x link) scored: the cell metrics, the per-pickup link
    log-likelihood within its slot, and the expected total."""

    def to_cells(a: F64) -> F64:
        out = np.zeros((a.shape[0], n_cells))
        for r in range(a.shape[0]):
            out[r] = np.bincount(cell_col, weights=a[r], minlength=n_cells)
        return out

    met = _metrics(to_cells(obs.y).ravel(), to_cells(m).ravel())
    p = m / np.maximum(m.sum(axis=1, keepdims=True), 1e-300)
    ll = np.log(np.maximum(p[obs.k, obs.col], 1e-300))
    met["link_loglik_per_pickup"] = float(np.sum(obs.w * ll) / np.sum(obs.w))
    met["expected_pickups"] = float(m.sum())
    return met


#: a cell model is evaluated on consecutive dates: at most this many between the first and
#: the last pickup (a sample over years would need a timeline of millions of minutes)
MAX_EVAL_SPAN_DAYS = 62


def evaluate_cell_model(
    store: TileStore,
    model: DemandModel,
    trip_files: list[str | os.PathLike[str]],
    days: frozenset[dt.date] | None = None,
) -> dict[str, Any]:
    """A cell model (spec 2) on held-out dates of a month of pickups, against statistics and
    the recent-level baseline (:mod:`models.rolling`).

    Held out: ``days``, or the (at most 7) dates of the files after the last training date.
    Recent inputs come from the files' own records, before each slot. Refuses a date the model
    was trained on.
    """
    from models.rolling import beats, evaluate_days, ratios

    table = model.table
    train = model.doc.get("training", {})
    md, held = _heldout_month(store, model, trip_files, days)
    rates = table.pickups_per_h.astype(np.float64) * model.pickups_per_hail
    window = int(train.get("selection", {}).get("recent_level_window_min", 60))

    def predictor(x: npt.NDArray[np.float32]) -> F64:
        return np.asarray(model.run(x)[:, 0], dtype=np.float64)

    res = evaluate_days(
        md, [md.day_index(d) for d in held], rates, model.slot_minutes, predictor, window
    )
    src = res["sources"]
    beats_recent = beats(res, "model", "recent_baseline")
    offline_ok = src["model_offline"]["poisson_deviance"] <= src["statistics"]["poisson_deviance"]
    return {
        "model_version": model.version,
        "statistics_version": table.version,
        "evaluated_on": [
            {"path": str(f), "days": [d.isoformat() for d in held]} for f in trip_files
        ],
        "heldout_pickups": res["heldout_pickups"],
        "slot_minutes": res["slot_minutes"],
        "slots": res["slots"],
        "cells": res["cells"],
        "links": res["links"],
        "recent_level_window_min": window,
        "model": src["model"],
        "statistics": src["statistics"],
        "recent_baseline": src["recent_baseline"],
        "model_offline": src["model_offline"],
        "ratio_model_over_statistics": ratios(res, "model", "statistics"),
        "ratio_model_over_recent_baseline": ratios(res, "model", "recent_baseline"),
        "ratio_offline_model_over_statistics": ratios(res, "model_offline", "statistics"),
        "model_beats_statistics": beats(res, "model", "statistics"),
        "model_beats_recent_baseline": beats_recent,
        "offline_no_worse_than_statistics": offline_ok,
        # the gate: the stronger baseline, and a cab offline no worse than statistics
        "gate_passed": bool(beats_recent and offline_ok),
    }


def _heldout_month(
    store: TileStore,
    model: DemandModel,
    trip_files: list[str | os.PathLike[str]],
    days: frozenset[dt.date] | None,
) -> tuple[MonthData, list[dt.date]]:
    """The files' month binned as the model's (same grid and network) and the held-out dates:
    ``days``, else the first 7 after the last training date; never a training date, and each
    with pickups and the day before."""
    from models.rolling import cached_month

    table = model.table
    trained = {
        dt.date.fromisoformat(x) for x in model.doc.get("training", {}).get("train_days", [])
    }
    if days is not None and set(days) & trained:
        raise DemandDataError(
            f"dates {', '.join(d.isoformat() for d in sorted(set(days) & trained))} were used"
            " for training"
        )
    probe = read_trips(list(trip_files), network_bbox(table.grid))
    if probe.n == 0:
        raise DemandDataError("no held-out pickup inside the road network")
    lo, hi = int(probe.pickup_date_ord.min()), int(probe.pickup_date_ord.max())
    if hi - lo + 1 > MAX_EVAL_SPAN_DAYS:
        raise DemandDataError(
            f"a recent-demand model is evaluated on consecutive days of pickups (the Uber"
            f" month); these files span {hi - lo + 1} days"
        )
    md = cached_month(store, list(trip_files), probe)
    if md.grid.to_json() != table.grid.to_json() or md.n_local != table.n_edges:
        raise DemandDataError("the trips were binned on another grid or network than the model")
    present = {md.date_of(i) for i in np.unique(md.pk_day)}
    if days is None:
        last = max(trained) if trained else dt.date.min
        held = sorted(d for d in present if d > last)[:7]
    else:
        held = sorted(days)
    used = sorted(set(held) & trained)
    if used:
        raise DemandDataError(
            f"dates {', '.join(d.isoformat() for d in used)} were used for training"
        )
    missing = [d for d in held if d not in present or md.day_index(d) < 1]
    if not held or missing:
        raise DemandDataError(
            "no held-out date with pickups (and the day before) in these files"
            + (f": {', '.join(d.isoformat() for d in missing)}" if missing else "")
        )
    return md, held


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in d.items()}


def apply_gate(model_dir: str | os.PathLike[str], evaluation: dict[str, Any]) -> bool:
    """Record the gate's decision; when the model loses, the directory ships statistics only:
    ``model.onnx`` and ``features.npz`` are removed, ``model.json`` and ``demand.json`` say so.
    """
    d = Path(model_dir)
    doc = read_model_json(d)
    recent = "gate_passed" in evaluation
    passed = bool(evaluation["gate_passed"] if recent else evaluation["model_beats_statistics"])
    against = (
        "the recent-level baseline (and offline no worse than statistics)"
        if recent
        else "statistics"
    )
    reason = (
        f"model beats {against} on held-out data (Poisson deviance and link log-likelihood)"
        if passed
        else f"model does not beat {against} on held-out data: shipping statistics only"
    )
    doc["gate"] = {
        "passed": passed,
        "reason": reason,
        "evaluated_on": evaluation["evaluated_on"],
        "model": evaluation["model"],
        "statistics": evaluation["statistics"],
        "ratio_model_over_statistics": evaluation["ratio_model_over_statistics"],
        "ratio_model_over_recent_baseline": evaluation.get("ratio_model_over_recent_baseline"),
        "compared_with": "recent_baseline" if recent else "statistics",
    }
    doc["shipped"] = passed
    table = DemandTable.load(d)
    meta = dict(table.meta)
    meta["predicted_model"] = {"version": doc["version"], "shipped": passed, "reason": reason}
    meta["source"] = "statistical+onnx" if passed else "statistical only"
    if not passed:
        for name in (MODEL_ONNX, FEATURES_NPZ):
            (d / name).unlink(missing_ok=True)
    blob = json.dumps(doc, indent=2).encode()
    _atomic_write(d / MODEL_JSON, lambda fh: fh.write(blob))
    DemandTable(
        **{**{f: getattr(table, f) for f in table.__dataclass_fields__}, "meta": meta}
    ).save(d)
    return passed
