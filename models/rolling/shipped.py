"""The shipped model: trained on dates with its statistical table (:func:`train_recent_model`) and
exported to ONNX (:func:`export_onnx`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.demand import DAY_TYPES, SLOTS_PER_DAY, DemandTable, _atomic_write
from models.errors import DemandDataError
from models.features import CELL_FEATURE_SPEC_VERSION, CELL_FEATURES, CELL_STATIC_FEATURES
from models.predict import FEATURES_NPZ, MODEL_JSON, MODEL_ONNX, MODEL_SCHEMA_VERSION
from models.rolling.config import (
    F32,
    F64,
    INPUT_NAME,
    LEVEL_INDEX,
    LEVEL_KINDS,
    MISSING_INDEX,
    OUTPUT_NAME,
    RecentConfig,
)
from models.rolling.fitting import Fitted, relative_matrix
from models.rolling.month import (
    MonthData,
    cell_sum,
    exp_cum_of,
    prepare_month,
    static_cells_of,
    stats_rates,
)
from models.rolling.rows import make_rows
from models.rolling.selection import select_and_fit
from models.snap import SnapConfig
from models.statistics import build_from_trips, file_sha256, full_graph, make_grid, network_bbox
from models.train import C_FLOOR
from models.train_onnx import sort_opsets
from models.trips import FORMAT_RECORDS, Trips, read_trips
from tiles import Graph, TileStore

REL_INPUT = "X_relative"  # gbr_recent: what its trees read


def export_onnx(fitted: Fitted, x_check: F32) -> tuple[bytes, float]:
    """ONNX graph ``X`` (N, F) float32 -> ``correction`` (N, 1) float32 (floored), and the
    largest relative difference to sklearn on ``x_check``."""
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    relative = fitted.kind == "gbr_recent"
    onx = convert_sklearn(
        fitted.estimator,
        initial_types=[
            (REL_INPUT if relative else INPUT_NAME, FloatTensorType([None, len(CELL_FEATURES)]))
        ],
        target_opset={"": 17, "ai.onnx.ml": 3},
        name="nagashi_recent_demand_correction",
    )
    graph = onx.graph
    if relative:
        # the trees read X @ A (models.rolling.relative_matrix): the graph's input stays X
        graph.node.insert(0, helper.make_node("MatMul", [INPUT_NAME, "relative_a"], [REL_INPUT]))
        a = relative_matrix()
        graph.initializer.extend(
            [helper.make_tensor("relative_a", 1, list(a.shape), a.ravel().tolist())]
        )
        (inp,) = graph.input
        inp.name = INPUT_NAME
    raw = graph.output[0].name
    floored = OUTPUT_NAME if fitted.offline == "model" else "floored"
    level = fitted.kind in LEVEL_KINDS
    graph.node.extend(
        [
            helper.make_node("Reshape", [raw, "col_shape"], ["raw_col"]),
            helper.make_node("Max", ["raw_col", "c_floor"], ["clamped" if level else floored]),
        ]
    )
    if level:
        graph.node.extend(
            [
                helper.make_node("Gather", [INPUT_NAME, "level_index"], ["log_level"], axis=1),
                helper.make_node("Exp", ["log_level"], ["level"]),
                helper.make_node("Mul", ["clamped", "level"], [floored]),
            ]
        )
        graph.initializer.extend([helper.make_tensor("level_index", 7, [1], [LEVEL_INDEX])])
    graph.initializer.extend(
        [
            helper.make_tensor("c_floor", 1, [1], [C_FLOOR]),
            helper.make_tensor("col_shape", 7, [2], [-1, 1]),
        ]
    )
    if fitted.offline == "statistics":
        # without recent inputs the factor is 1 (statistics): c + missing * (1 - c)
        graph.node.extend(
            [
                helper.make_node("Gather", [INPUT_NAME, "missing_index"], ["missing"], axis=1),
                helper.make_node("Sub", ["one", floored], ["to_one"]),
                helper.make_node("Mul", ["missing", "to_one"], ["shift"]),
                helper.make_node("Add", [floored, "shift"], [OUTPUT_NAME]),
            ]
        )
        graph.initializer.extend(
            [
                helper.make_tensor("missing_index", 7, [1], [MISSING_INDEX]),
                helper.make_tensor("one", 1, [1], [1.0]),
            ]
        )
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(OUTPUT_NAME, 1, [None, 1])])
    sort_opsets(onx)
    blob = onx.SerializeToString()
    import onnxruntime as ort

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (got,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x_check})
    want = fitted.predict(x_check)
    rel = np.abs(np.asarray(got, np.float64)[:, 0] - want) / np.maximum(want, 1e-6)
    return blob, float(rel.max()) if rel.size else 0.0


def train_recent_model(
    store: TileStore,
    pickup_files: list[str | os.PathLike[str]],
    value_files: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    train_days: frozenset[dt.date],
    config: RecentConfig = RecentConfig(),
    snap_config: SnapConfig = SnapConfig(),
    month: MonthData | None = None,
    trips: Trips | None = None,
) -> dict[str, Any]:
    """Train the recent-demand model on ``train_days`` of ``pickup_files`` into ``out``.

    The directory gets the statistical table of those days (rates from the pickups, fares,
    trip times and drop-offs from ``value_files``), ``model.onnx``, ``features.npz`` and
    ``model.json``. ``month``/``trips`` may pass the already-read data.
    """
    g = full_graph(store)
    grid = make_grid(g, config.stats.cell_m)
    bbox = network_bbox(grid)
    if trips is None:
        trips = read_trips(list(pickup_files), bbox)
    md = prepare_month(store, trips, snap_config) if month is None else month
    days = _training_days(md, train_days)
    value_trips = read_trips(list(value_files), bbox)
    if not any(FORMAT_RECORDS[f][1:] for f in value_trips.formats):
        raise DemandDataError(
            "the value files record no fares, trip times or drop-offs: give yellow-cab trips"
        )
    fitted, sel = select_and_fit(md, days, config)
    table, pi, ha = _device_table(
        store, g, md, days, pickup_files, bbox, train_days, value_trips, config, snap_config
    )
    crate = cell_sum(md, ha)
    check = make_rows(md, days[-2:], config.slot_minutes, crate, exp_cum_of(md, crate))
    blob, parity = export_onnx(fitted, check.x)
    if not parity <= 1e-4:
        raise DemandDataError(f"the exported ONNX model differs from sklearn by {parity:.3g}")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    table.save(d)
    _atomic_write(d / MODEL_ONNX, lambda fh: fh.write(blob))
    _atomic_write(
        d / FEATURES_NPZ,
        lambda fh: np.savez(fh, static_cells=static_cells_of(md, crate), area_cells=md.area_cells),
    )
    doc = _model_json(
        blob=blob,
        fitted=fitted,
        sel=sel,
        parity=parity,
        table=table,
        pi=pi,
        md=md,
        days=days,
        trips=trips,
        store=store,
        pickup_files=pickup_files,
        value_files=value_files,
        config=config,
    )
    _atomic_write(d / MODEL_JSON, lambda fh: fh.write(json.dumps(doc, indent=2).encode()))
    return doc


def _training_days(md: MonthData, train_days: frozenset[dt.date]) -> list[int]:
    """The month's indices of ``train_days``, which must be consecutive dates of the month."""
    days = sorted(md.day_index(d) for d in train_days)
    if (
        not days
        or days[0] < 0
        or days[-1] >= md.n_days
        or days != list(range(days[0], days[-1] + 1))
    ):
        raise DemandDataError("training dates must be consecutive dates of the pickup files")
    return days


def _device_table(
    store: TileStore,
    g: Graph,
    md: MonthData,
    days: list[int],
    pickup_files: list[str | os.PathLike[str]],
    bbox: tuple[float, float, float, float],
    train_days: frozenset[dt.date],
    value_trips: Trips,
    config: RecentConfig,
    snap_config: SnapConfig,
) -> tuple[DemandTable, float, F64]:
    """The device's table: rates of the training dates (recent-source pickups scaled to
    hails); with the source's pickups per hail and the statistics the model learnt against
    (in pickups), which the table's rates must reproduce."""
    # (the month's four citywide gaps of 11-18 minutes count as covered: whole days)
    rate_trips = read_trips(list(pickup_files), bbox, days=frozenset(train_days))
    rate_trips = replace(
        rate_trips, covered_h=tuple(_covered(md, days) for _ in rate_trips.covered_h)
    )
    table, report = build_from_trips(
        store, g, rate_trips, config.stats, snap_config, value_trips=value_trips
    )
    inv_pi = float(report["inputs"][0]["real_trips_per_sample_trip"])
    pi = 1.0 / inv_pi
    # the model learnt against statistics of exactly these rates (in pickups)
    ha = stats_rates(md, days, config.stats)
    drift = float(np.max(np.abs(table.pickups_per_h.astype(np.float64) * pi - ha)))
    if not drift <= 1e-3 * max(float(ha.max()), 1.0):
        raise DemandDataError(f"the table's rates differ from the training statistics by {drift}")
    return table, pi, ha


def _model_json(
    *,
    blob: bytes,
    fitted: Fitted,
    sel: dict[str, Any],
    parity: float,
    table: DemandTable,
    pi: float,
    md: MonthData,
    days: list[int],
    trips: Trips,
    store: TileStore,
    pickup_files: list[str | os.PathLike[str]],
    value_files: list[str | os.PathLike[str]],
    config: RecentConfig,
) -> dict[str, Any]:
    """model.json of a cell model: its interface, recent inputs, statistics and training."""
    version = f"{fitted.kind}-" + hashlib.sha256(blob).hexdigest()[:12]
    doc: dict[str, Any] = {
        "schema_version": MODEL_SCHEMA_VERSION,
        "version": version,
        "kind": {
            "gbr": "sklearn.GradientBoostingRegressor",
            "gbr_level": "sklearn.GradientBoostingRegressor x the recent area level",
            "gbr_recent": "sklearn.GradientBoostingRegressor around the recent-level baseline"
            " (inputs relative to the area's recent level)",
            "poisson": "sklearn.PoissonRegressor (standardised inputs)",
        }[fitted.kind]
        + " correction of statistical demand per 500 m cell and slot, with recent-demand inputs",
        "granularity": "cell",
        "slot_minutes": config.slot_minutes,
        "feature_spec_version": CELL_FEATURE_SPEC_VERSION,
        "features": list(CELL_FEATURES),
        "static_features": list(CELL_STATIC_FEATURES),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, len(CELL_FEATURES)]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, 1], "unit": "factor"},
        "output_is_log": False,
        "correction_floor": C_FLOOR,
        "max_rate_per_h": 20.0 * float(table.pickups_per_h.max()),
        "recent": {
            "pickups_per_hail": pi,
            "meaning": (
                "recent inputs count pickups of the source the model learnt from (app pickups);"
                " expected = table rate x pickups_per_hail x hours"
            ),
            "leads_min": list(config.leads_min),
            "dropout": config.dropout,
        },
        "statistics_version": table.version,
        "network_sha256": table.network_sha256,
        "n_edges": table.n_edges,
        "target": (
            "app pickups (the Uber April 2014 month) per 500 m cell and slot, as a factor on"
            " statistics scaled to the yellow-cab volume (docs/demand.md, Sources)"
        ),
        "training": {
            "tiles": str(store.path),
            "train_files": [
                {
                    "path": str(f),
                    "sha256": file_sha256(Path(f)),
                    "format": trips.formats[i],
                    "mode": "days",
                }
                for i, f in enumerate(pickup_files)
            ],
            "value_files": [{"path": str(f), "sha256": file_sha256(Path(f))} for f in value_files],
            "train_days": [md.date_of(i).isoformat() for i in days],
            "fitted_row_days": [md.date_of(i).isoformat() for i in fitted.train_days],
            "selection": sel,
            "n_estimators_selected": fitted.trees,
            "onnx_parity_max_rel_diff": parity,
            "config": json.loads(json.dumps(asdict(config))),
        },
        "shipped": True,
        "gate": None,
    }
    return doc


def _covered(md: MonthData, days: list[int]) -> F64:
    """Hours of each (day type, slot) the dates cover (whole days)."""
    out = np.zeros((len(DAY_TYPES), SLOTS_PER_DAY))
    for t in range(len(DAY_TYPES)):
        out[t] = 0.5 * int(np.sum(md.day_type[np.asarray(days)] == t))
    return out
