"""Training the predicted-demand model and exporting it to ONNX (build side, ``train`` extra).

The model is a correction of statistical demand, learned where statistics are weakest:

    rate(link, slot) = stat_rate(link, slot) * max(c(x), C_FLOOR)

``c`` is a scikit-learn ``GradientBoostingRegressor`` over :data:`models.features.FEATURES`
(link class, shape and position, pickups around it, time of week, statistical rates of the link
and of its cell). It is fitted by weighted least squares on ``y / mu0`` with weights ``mu0``,
where ``y`` are pickups of a (link, day type, block of slots) and ``mu0`` their expectation
under statistics: that minimises Pearson's chi-square ``sum (y - c mu0)^2 / mu0``, the usual
quadratic stand-in for the Poisson likelihood (sklearn's GradientBoostingRegressor has no Poisson
loss, and HistGradientBoostingRegressor, which has one, does not convert with skl2onnx 1.20).

Cross-fitting: ``mu0`` of the training rows comes from statistics built *without* those rows
(four folds split by pickup timestamp), otherwise the correction would learn that statistics fit
their own data. On the device, the full statistical table (all training data) is the input.
Within each (day type, block), ``mu0`` is rescaled to the observed total, so the correction
learns where pickups go and leaves how many to statistics (whose totals rest on the whole
citywide sample).

Selection: the number of trees is chosen on the validation file (Poisson deviance of its
pickups per link, day type and block) with ``staged_predict``. The held-out windows of the
2015-06 file are never read here: ``nagashi demand eval`` and ``gate`` use them.

The exported graph takes ``X`` (N, F) float32 and returns ``rate`` (N, 1) float32; the clamp
and the multiplication by ``exp(stat_log_rate)`` are nodes inside the graph, so the device gets
absolute hails per hour from one call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import DAY_TYPES, SLOTS_PER_DAY, CellGrid, DemandTable, _atomic_write
from models.errors import DemandDataError
from models.features import (
    FEATURE_SPEC_VERSION,
    FEATURES,
    MANHATTAN_GRID_DEG,
    STATIC_FEATURES,
    assemble,
    cell_rates,
    log_rate,
)
from models.predict import FEATURES_NPZ, MODEL_JSON, MODEL_ONNX, MODEL_SCHEMA_VERSION
from models.snap import SnapConfig, Snapped, snap_pickups, twin_edges
from models.statistics import (
    StatsConfig,
    build_from_trips,
    edge_midpoints,
    effective_exposure,
    file_sha256,
    full_graph,
    make_grid,
    network_bbox,
    pickup_counts,
    rates_from_counts,
)
from models.train_onnx import C_FLOOR, INPUT_NAME, OUTPUT_NAME, onnx_parity, to_onnx
from models.trips import FORMAT_DESCRIPTIONS, Trips, read_trips
from tiles import Graph, TileStore
from tiles.geo import LocalProjection

log = logging.getLogger(__name__)

__all__ = [
    "C_FLOOR",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TrainConfig",
    "poisson_deviance",
    "static_features",
    "train_model",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainConfig:
    """Model training parameters."""

    #: device budget: a tick over the ~2,500 links within 3 km evaluates every tree once per
    #: link; 80 depth-3 trees keep one call near 2-4 ms on one core (see bench_demand)
    n_estimators_max: int = 80
    learning_rate: float = 0.05
    max_depth: int = 3
    min_samples_leaf: int = 200
    subsample: float = 0.7
    block_slots: int = 6  # training rows aggregate 6 slots (3 h) of one day type
    # chosen on the valid file (Poisson deviance): 4 folds and preserved slot totals beat
    # 2 folds / free totals in both window folds (see docs/demand.md)
    folds: int = 4  # cross-fitting folds for the statistical offset
    preserve_slot_totals: bool = True  # learn only where pickups go (see _block_rows)
    seed: int = 7
    n_threads_eval: int = 1


@dataclass(frozen=True, eq=False)
class _Rows:
    x: F32
    y: F64  # pickups
    mu0: F64  # their expectation under statistics


def static_features(g: Graph, trips: Trips, snapped: Snapped, table: DemandTable) -> F32:
    """Per-link static features (see :data:`models.features.STATIC_FEATURES`)."""
    mid_lon, mid_lat = edge_midpoints(g)
    proj = LocalProjection(float(mid_lon.mean()), float(mid_lat.mean()))
    x, y = proj.to_xy(mid_lon, mid_lat)
    a = math.radians(MANHATTAN_GRID_DEG)
    along = x * math.sin(a) + y * math.cos(a)
    across = x * math.cos(a) - y * math.sin(a)
    bearing = np.radians(0.5 * (g.bearing_start.astype(np.float64) + g.bearing_end))
    px, py = proj.to_xy(trips.lon[snapped.ok], trips.lat[snapped.ok])
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([px, py]))
    pts = np.column_stack([x, y])
    n100 = np.array([len(v) for v in tree.query_ball_point(pts, 100.0)], dtype=np.float64)
    n300 = np.array([len(v) for v in tree.query_ball_point(pts, 300.0)], dtype=np.float64)
    link_total = table.pickups_per_h.sum(axis=(0, 1)).astype(np.float64)
    share = link_total / max(float(link_total.sum()), 1e-12)
    out = np.column_stack(
        [
            g.highway.astype(np.float64),
            g.length_m.astype(np.float64),
            (twin_edges(g) < 0).astype(np.float64),
            along,
            across,
            np.cos(2 * bearing),
            np.sin(2 * bearing),
            np.log1p(n100),
            np.log1p(n300),
            log_rate(share * 1e3),  # floored like rates; 1e3 keeps it above the floor
        ]
    ).astype(np.float32)
    if out.shape[1] != len(STATIC_FEATURES):
        raise DemandDataError("static feature count does not match the spec")
    # order by global edge id (the graph's local order is ascending global ids)
    full = np.zeros((g.n_edges_total, out.shape[1]), dtype=np.float32)
    full[g.edge_id] = out
    return full


def _block_rows(
    static: F32,
    table: DemandTable,
    counts: F64,
    exposure: F64,
    rates0: F64,
    edges: npt.NDArray[np.int64],
    block_slots: int,
    preserve_totals: bool = False,
) -> _Rows:
    """Rows per (day type, block, link): features at the block's middle slot.

    ``preserve_totals`` rescales each block's expectations to its observed total, so that the
    correction learns where pickups go, not how many there are (statistics keep the totals).
    """
    n_blocks = SLOTS_PER_DAY // block_slots
    crate = cell_rates(table)
    xs: list[F32] = []
    ys: list[F64] = []
    mus: list[F64] = []
    for d in range(len(DAY_TYPES)):
        for b in range(n_blocks):
            sl = slice(b * block_slots, (b + 1) * block_slots)
            e_b = exposure[d, sl]
            if float(e_b.sum()) <= 0:
                continue
            mid_slot = b * block_slots + block_slots // 2
            minute = (0 if d == 0 else (5 if d == 1 else 6)) * 1440 + mid_slot * 30
            xs.append(assemble(static, table, crate, edges, [minute]))
            y_b = counts[d, sl][:, edges].sum(axis=0)
            mu_b = (rates0[d, sl][:, edges] * e_b[:, None]).sum(axis=0)
            if preserve_totals and y_b.sum() > 0 and mu_b.sum() > 0:
                mu_b = mu_b * (y_b.sum() / mu_b.sum())
            ys.append(y_b)
            mus.append(mu_b)
    return _Rows(np.concatenate(xs), np.concatenate(ys), np.concatenate(mus))


def poisson_deviance(y: F64, mu: F64) -> float:
    """Mean Poisson deviance ``2 * mean(y log(y/mu) - (y - mu))`` (mu > 0)."""
    mu = np.maximum(mu, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(2.0 * np.mean(t - (y - mu)))


def _fold_of(trips: Trips, folds: int) -> npt.NDArray[np.int64]:
    """Fold of each trip from a hash of its pickup timestamp (same instant, same fold)."""
    ts = trips.pickup_s.astype(np.int64)
    h = (ts * 2654435761) % (2**32)
    return np.asarray((h >> 7) % folds, dtype=np.int64)


def train_model(
    store: TileStore,
    train_files: list[str | os.PathLike[str]],
    valid_files: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    train_windows: set[int] | None = None,
    config: TrainConfig = TrainConfig(),
    stats_config: StatsConfig = StatsConfig(),
    snap_config: SnapConfig = SnapConfig(),
) -> dict[str, Any]:
    """Build statistics and train, select and export the model into ``out``; return model.json.

    ``train_windows`` keeps only those windows of windows-mode training files (the others are
    held out for :mod:`models.evaluate`); span samples are used whole.
    """
    _require_train_extra()
    g = full_graph(store)
    grid = make_grid(g, stats_config.cell_m)
    bbox = network_bbox(grid)
    trips = read_trips(list(train_files), bbox)
    if train_windows is not None:
        for fi, mode in enumerate(trips.mode):
            if mode == "windows":
                trips = trips.restrict_windows(fi, train_windows)
    table, _ = build_from_trips(store, g, trips, stats_config, snap_config)
    snapped = snap_pickups(
        g, trips.lon, trips.lat, trips.dropoff_lon, trips.dropoff_lat, snap_config
    )
    static = static_features(g, trips, snapped, table)
    edges = g.edge_id[g.cruise_allowed()].astype(np.int64)
    x, y, mu0 = _cross_fitted_rows(g, grid, trips, snapped, table, edges, config, stats_config)
    model = _fit(x, y, mu0, config)
    # selection on the validation file
    vrows = _validation_rows(
        g, bbox, static, table, edges, valid_files, config, stats_config, snap_config
    )
    best, dev_model, dev_stats = _select_trees(model, vrows)
    blob = to_onnx(model)
    parity = onnx_parity(blob, model, vrows.x)
    if not parity <= 1e-4:
        raise DemandDataError(f"the exported ONNX model differs from sklearn by {parity:.3g}")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    table.save(d)
    _atomic_write(d / MODEL_ONNX, lambda fh: fh.write(blob))
    _atomic_write(d / FEATURES_NPZ, lambda fh: np.savez(fh, static=static))
    figures = {
        "rows": int(x.shape[0]),
        "pickups": float(y.sum()),
        "n_estimators_selected": best,
        "onnx_parity_max_rel_diff": parity,
        "valid_poisson_deviance_model": round(dev_model, 6),
        "valid_poisson_deviance_statistics": round(dev_stats, 6),
        "config": asdict(config),
    }
    doc = _model_json(blob, table, trips, store, train_files, valid_files, train_windows, figures)
    _atomic_write(d / MODEL_JSON, lambda fh: fh.write(json.dumps(doc, indent=2).encode()))
    return doc


def _require_train_extra() -> None:
    """Fail at once, before any data is read, without the ``train`` extra."""
    try:
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
        import sklearn.ensemble  # noqa: F401
    except ImportError as e:
        raise DemandDataError(
            f"training needs the train extra (pip install -e '.[train]'): {e}"
        ) from e


def _cross_fitted_rows(
    g: Graph,
    grid: CellGrid,
    trips: Trips,
    snapped: Snapped,
    table: DemandTable,
    edges: npt.NDArray[np.int64],
    config: TrainConfig,
    stats_config: StatsConfig,
) -> tuple[F32, F64, F64]:
    """Training rows (x, pickups y, their expectation mu0 > 0), cross-fitted: for each fold,
    statistics, densities and link shares from the other folds, targets from this one."""
    allowed = g.cruise_allowed()
    mid_lon, mid_lat = edge_midpoints(g)
    edge_cell = grid.cell_of(mid_lon, mid_lat)
    length = g.length_m.astype(np.float64)
    exposure, _ = effective_exposure(trips, stats_config)
    fold = _fold_of(trips, config.folds)
    rows: list[_Rows] = []
    for k in range(config.folds):
        in_k = fold == k
        out_counts = pickup_counts(trips.subset(~in_k), _sub(snapped, ~in_k), g.n)
        in_counts = pickup_counts(trips.subset(in_k), _sub(snapped, in_k), g.n)
        share_out = float(np.sum(~in_k)) / max(trips.n, 1)
        rates_oof = rates_from_counts(
            out_counts,
            exposure * share_out,
            edge_cell,
            grid.n_cells,
            length,
            allowed,
            stats_config,
        )
        table_oof = dataclasses.replace(table, pickups_per_h=rates_oof.astype(np.float32))
        static_oof = static_features(g, trips.subset(~in_k), _sub(snapped, ~in_k), table_oof)
        rows.append(
            _block_rows(
                static_oof,
                table_oof,
                in_counts,
                exposure * (1.0 - share_out),
                rates_oof,
                edges,
                config.block_slots,
                config.preserve_slot_totals,
            )
        )
    x = np.concatenate([r.x for r in rows])
    y = np.concatenate([r.y for r in rows])
    mu0 = np.concatenate([r.mu0 for r in rows])
    keep = mu0 > 0
    return x[keep], y[keep], mu0[keep]


def _fit(x: F32, y: F64, mu0: F64, config: TrainConfig) -> Any:
    """The correction ``c``: least squares on ``y / mu0`` weighted by ``mu0`` (module docs)."""
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(
        loss="squared_error",
        n_estimators=config.n_estimators_max,
        learning_rate=config.learning_rate,
        max_depth=config.max_depth,
        min_samples_leaf=config.min_samples_leaf,
        subsample=config.subsample,
        random_state=config.seed,
    )
    model.fit(x, y / mu0, sample_weight=mu0)
    return model


def _validation_rows(
    g: Graph,
    bbox: tuple[float, float, float, float],
    static: F32,
    table: DemandTable,
    edges: npt.NDArray[np.int64],
    valid_files: list[str | os.PathLike[str]],
    config: TrainConfig,
    stats_config: StatsConfig,
    snap_config: SnapConfig,
) -> _Rows:
    """Rows of the validation file's pickups against the full statistics."""
    vtrips = read_trips(list(valid_files), bbox)
    vsnap = snap_pickups(
        g, vtrips.lon, vtrips.lat, vtrips.dropoff_lon, vtrips.dropoff_lat, snap_config
    )
    vcounts = pickup_counts(vtrips, vsnap, g.n)
    vexpo, _ = effective_exposure(vtrips, stats_config)
    return _block_rows(
        static,
        table,
        vcounts,
        vexpo,
        table.pickups_per_h.astype(np.float64),
        edges,
        config.block_slots,
    )


def _select_trees(model: Any, vrows: _Rows) -> tuple[int, float, float]:
    """Keep the number of trees with the least validation deviance (``staged_predict``); the
    model is cut to it. Returns (trees, its deviance, the deviance of statistics alone)."""
    base_dev = poisson_deviance(vrows.y, vrows.mu0)
    devs: list[float] = []
    for pred in model.staged_predict(vrows.x):
        devs.append(poisson_deviance(vrows.y, vrows.mu0 * np.maximum(pred, C_FLOOR)))
    best = int(np.argmin(devs)) + 1
    model.n_estimators = best
    model.n_estimators_ = best
    model.estimators_ = model.estimators_[:best]
    model.train_score_ = model.train_score_[:best]
    log.info(
        "selected %d trees: valid deviance %.5f (statistics %.5f)", best, devs[best - 1], base_dev
    )
    return best, devs[best - 1], base_dev


def _model_json(
    blob: bytes,
    table: DemandTable,
    trips: Trips,
    store: TileStore,
    train_files: list[str | os.PathLike[str]],
    valid_files: list[str | os.PathLike[str]],
    train_windows: set[int] | None,
    figures: dict[str, Any],
) -> dict[str, Any]:
    """model.json: the model's interface, its statistics, what it was trained from and the
    training ``figures``."""
    max_stat = float(table.pickups_per_h.max())
    return {
        "schema_version": MODEL_SCHEMA_VERSION,
        "version": "gbr-" + hashlib.sha256(blob).hexdigest()[:12],
        "kind": "sklearn.GradientBoostingRegressor correction of statistical demand",
        "feature_spec_version": FEATURE_SPEC_VERSION,
        "features": list(FEATURES),
        "static_features": list(STATIC_FEATURES),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, len(FEATURES)]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, 1], "unit": "hails/h"},
        "output_is_log": False,
        "correction_floor": C_FLOOR,
        # outputs above this are absurd: 20x the busiest link-slot of statistics
        "max_rate_per_h": 20.0 * max_stat,
        "statistics_version": table.version,
        "network_sha256": table.network_sha256,
        "n_edges": table.n_edges,
        "target": _target_text(trips.formats),
        "training": {
            "tiles": str(store.path),
            "train_files": [
                {
                    "path": str(f),
                    "sha256": file_sha256(Path(f)),
                    "format": trips.formats[i],
                    "kind": FORMAT_DESCRIPTIONS[trips.formats[i]],
                    "mode": trips.mode[i],
                    "windows_used": (
                        sorted(train_windows)
                        if train_windows is not None and trips.mode[i] == "windows"
                        else list(range(len(trips.windows[i])))
                    ),
                    "windows": [w.to_json() for w in trips.windows[i]],
                }
                for i, f in enumerate(train_files)
            ],
            "valid_files": [{"path": str(f), "sha256": file_sha256(Path(f))} for f in valid_files],
            **figures,
        },
        "shipped": True,
        "gate": None,
    }


def _target_text(formats: tuple[str, ...]) -> str:
    """What the model's output means, given the formats of the pickups it learnt from."""
    if "uber2014" in formats:
        return (
            "pickups per hour learnt from app pickups (the Uber April 2014 month) and street"
            " hails (TLC yellow cabs), scaled to the yellow-cab citywide volume: app demand"
            " stands in for street hails where and when they follow it (docs/demand.md, Sources)"
        )
    return "street hails per hour (TLC yellow-cab pickups, scaled to the citywide volume)"


def _sub(s: Snapped, mask: npt.NDArray[np.bool_]) -> Snapped:
    return Snapped(
        s.edge_a[mask], s.edge_b[mask], s.weight_a[mask], s.distance_m[mask], s.rule[mask]
    )
