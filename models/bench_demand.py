"""Demand per planning tick: ONNX model (one batched call) against the statistical lookup.

For every cruisable link within ``--radius-m`` of ``--point`` (Times Square by default) and the
slots a ``--horizon-min`` horizon covers, measures in one run:

* ``onnx_tick``: :meth:`models.DemandModel.tick` (feature assembly + one ONNX Runtime call on
  CPU with ``--threads`` intra-op threads, one row per link + output checks), what the planner
  calls per tick;
* ``onnx_run_only``: just the ``InferenceSession.run`` call on the same feature matrix;
* ``statistical_tick``: :func:`models.statistical_tick` (the peer: a table lookup).

Peak RSS of the agent side (load the demand directory, answer one tick) is measured in a fresh
subprocess (its ``VmHWM``: Linux carries ``ru_maxrss`` of the forking parent over ``exec``) so
that building and training do not count. Without ``--model``, tiles are built
from ``--osm`` and a small model (``--trees``) is trained on the real trips in a temporary
directory first (not timed).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError
from models.features import assemble
from models.predict import DemandModel, InferenceConfig, statistical_tick
from models.recent import RecentPickups
from tiles import TileStore, build_tiles
from tiles.fileio import real_data_dir

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

DEFAULT_OSM = str(real_data_dir() / "osm" / "nyc_manhattan_midtown.osm.pbf")
DEFAULT_TRIPS = str(real_data_dir() / "trips")
UBER_MONTH = "nyc_uber_2014-04_fivethirtyeight.csv.zip"


def _recent_inputs(trips_dir: str, at: str, grid: Any) -> RecentPickups:
    """The Uber month's pickups of the 24 hours before ``at`` (local time), as the live layer
    would pass them."""
    import datetime as dt

    from models.statistics import network_bbox
    from models.trips import read_trips

    try:
        when = dt.datetime.fromisoformat(at)
    except ValueError:
        raise DemandDataError("--recent-at: expected a local time like 2014-04-29T18:00") from None
    t = read_trips([Path(trips_dir) / UBER_MONTH], network_bbox(grid))
    ago = ((when - dt.datetime(1970, 1, 1)).total_seconds() - t.pickup_s) / 60.0
    keep = (ago > 0) & (ago <= 1440)
    return RecentPickups(ago[keep], t.lon[keep], t.lat[keep])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="demand directory with model.onnx")
    p.add_argument("--tiles", default=None, help="tile database (with --model)")
    p.add_argument("--osm", default=DEFAULT_OSM, help="OSM extract when building tiles")
    p.add_argument("--trips-dir", default=DEFAULT_TRIPS, help="real TLC trips when training")
    p.add_argument("--trees", type=int, default=60, help="most trees when training")
    p.add_argument("--point", default="-73.9855,40.7580", metavar="LON,LAT")
    p.add_argument("--radius-m", type=float, default=3000.0)
    p.add_argument("--horizon-min", type=int, default=60)
    p.add_argument("--minute-of-week", type=int, default=1 * 1440 + 18 * 60, help="Tue 18:00")
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument(
        "--cell",
        action="store_true",
        help="without --model: train the recent-demand cell model (GLM, 15-min slots) instead",
    )
    p.add_argument(
        "--recent-at",
        default="2014-04-29T18:00",
        help="cell model: recent inputs are the Uber month's pickups of the day before this"
        " local time (a Tuesday 18:00 by default, like --minute-of-week)",
    )


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p95_ms": round(float(np.percentile(a, 95)), 4),
        "max_ms": round(float(a.max()), 4),
    }


_RSS_PROBE = """
import json, resource, sys
import numpy as np
from models.predict import InferenceConfig, open_demand
from tiles import TileStore
table, model = open_demand(sys.argv[1], InferenceConfig(intra_op_threads=int(sys.argv[6])))
g = TileStore(sys.argv[2]).radius_graph(float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
e = g.edge_id[g.cruise_allowed()]
model.tick(e, int(sys.argv[7]), int(sys.argv[8]))
# VmHWM belongs to this process image; ru_maxrss would include the forking parent's RSS
try:
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    mb = int(hwm.split()[1]) / 1024
except (OSError, StopIteration):
    mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mb": mb}))
"""


def _prepare(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    if args.model is not None:
        if args.tiles is None:
            raise DemandDataError("--model needs --tiles (the network it was built on)")
        return Path(args.model), Path(args.tiles)
    from models.train import TrainConfig, train_model

    tiles, _ = build_tiles(args.osm, tmp / "tiles")
    trips = Path(args.trips_dir)
    if args.cell:
        import datetime as dt

        from models.rolling import RecentConfig, train_recent_model

        days = frozenset(dt.date(2014, 4, 1) + dt.timedelta(days=i) for i in range(23))
        with TileStore(tiles) as store:
            train_recent_model(
                store,
                [trips / UBER_MONTH],
                [trips / "nyc_tlc_yellow_2015-06_reuven.csv"],
                tmp / "demand",
                days,
                RecentConfig(kinds=("poisson",)),
            )
        return tmp / "demand", tiles
    with TileStore(tiles) as store:
        train_model(
            store,
            [
                trips / "nyc_tlc_yellow_2009-2015_gcp_taxi-train.csv",
                trips / "nyc_tlc_yellow_2015-06_reuven.csv",
            ],
            [trips / "nyc_tlc_yellow_2009-2015_gcp_taxi-valid.csv"],
            tmp / "demand",
            train_windows={0, 1},
            config=TrainConfig(n_estimators_max=args.trees),
        )
    return tmp / "demand", tiles


def _cell_rows(model: DemandModel, edges: Any, slots: Any, mow: int) -> Any:
    """The rows a cell model's tick sends to ONNX Runtime (offline inputs: same shape)."""
    from models.features import assemble_cells
    from models.recent import missing_features

    cells = np.unique(model.table.edge_cell[edges].astype(np.int64))
    sub = 30 // model.slot_minutes
    rel = np.maximum(
        (np.asarray(slots) - mow)[:, None] + model.slot_minutes * np.arange(sub), 0
    ).ravel()
    m = (mow + rel) % (7 * 1440)
    wd = m // 1440
    day_type = np.where(wd < 5, 0, np.where(wd == 5, 1, 2))
    feats = np.broadcast_to(missing_features(1, cells.size), (rel.size, cells.size, 8))
    return assemble_cells(
        model.static_cells,
        model.cell_rate_h,
        model.nb_rate_h,
        cells,
        day_type,
        m % 1440,
        rel,
        model.slot_minutes,
        feats,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    lon, lat = (float(v) for v in args.point.split(","))
    with tempfile.TemporaryDirectory(prefix="nagashi-bench-demand-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        model_dir, tiles = _prepare(args, tmp)
        prepare_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = DemandModel(model_dir, config=InferenceConfig(intra_op_threads=args.threads))
        load_s = time.perf_counter() - t0
        with TileStore(tiles) as store:
            g = store.radius_graph(lon, lat, args.radius_m)
        edges = g.edge_id[g.cruise_allowed()].astype(np.int64)
        mow, hz = args.minute_of_week, args.horizon_min
        recent = None
        if model.granularity == "cell":
            recent = _recent_inputs(args.trips_dir, args.recent_at, model.table.grid)
        tick = model.tick(edges, mow, hz, recent=recent)  # warm-up
        x = _one_call_rows(model, edges, tick.slot_minute_of_week, mow)
        times = _interleaved_timings(model, edges, mow, hz, recent, x, args.repeats)
        agent_rss = _agent_peak_rss_mb(model_dir, tiles, lon, lat, args)
        doc = json.loads((model_dir / "model.json").read_text())
    o, s = _stats(times["onnx"]), _stats(times["statistical"])
    extra: dict[str, Any] = {}
    if recent is not None:
        extra = {
            "granularity": "cell",
            "slot_minutes": model.slot_minutes,
            "recent_pickups": int(recent.minutes_ago.size),
            "recent_at": args.recent_at,
            "onnx_tick_offline": _stats(times["offline"]),
        }
    return {
        **extra,
        "model_version": model.version,
        "kind": doc.get("kind"),
        "trees": doc["training"]["n_estimators_selected"],
        "point": [lon, lat],
        "radius_m": args.radius_m,
        "links": int(edges.size),
        "slots_per_tick": int(tick.slot_minute_of_week.size),
        "rows_per_call": int(x.shape[0]),
        "threads": args.threads,
        "repeats": args.repeats,
        "prepare_s": round(prepare_s, 2),
        "model_load_s": round(load_s, 4),
        "onnx_tick": o,
        "onnx_run_only": _stats(times["run"]),
        "statistical_tick": s,
        "ratio_p95_onnx_over_statistical": round(o["p95_ms"] / s["p95_ms"], 2),
        "goal_p95_ms": 5.0,
        "agent_peak_rss_mb": round(agent_rss, 1),
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _one_call_rows(model: DemandModel, edges: I64, slots: I64, mow: int) -> F32:
    """The input of one ONNX call of a tick (what ``tick()`` sends)."""
    if model.granularity == "cell":
        rows: F32 = _cell_rows(model, edges, slots, mow)
        return rows
    # one row per link
    return assemble(model.static, model.table, model.cell_rate, edges, slots[:1])


def _interleaved_timings(
    model: DemandModel,
    edges: I64,
    mow: int,
    hz: int,
    recent: RecentPickups | None,
    x: F32,
    repeats: int,
) -> dict[str, list[float]]:
    """Seconds per repeat of the model's tick (with recent inputs, and without when it has
    them), of the ONNX call alone and of the statistical tick, interleaved in one loop."""
    times: dict[str, list[float]] = {"onnx": [], "offline": [], "run": [], "statistical": []}
    for _ in range(repeats):
        t = time.perf_counter()
        model.tick(edges, mow, hz, recent=recent)
        times["onnx"].append(time.perf_counter() - t)
        if recent is not None:
            t = time.perf_counter()
            model.tick(edges, mow, hz)
            times["offline"].append(time.perf_counter() - t)
        t = time.perf_counter()
        model.session.run([model.output_name], {model.input_name: x})
        times["run"].append(time.perf_counter() - t)
        t = time.perf_counter()
        statistical_tick(model.table, edges, mow, hz)
        times["statistical"].append(time.perf_counter() - t)
    return times


def _agent_peak_rss_mb(
    model_dir: Path, tiles: Path, lon: float, lat: float, args: argparse.Namespace
) -> float:
    """Peak RSS of a fresh process that loads what the agent loads and runs one tick."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_PROBE,
            str(model_dir),
            str(tiles),
            str(lon),
            str(lat),
            str(args.radius_m),
            str(args.threads),
            str(args.minute_of_week),
            str(args.horizon_min),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(probe.stdout)["peak_rss_mb"])
