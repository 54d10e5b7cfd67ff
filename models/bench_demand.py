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

from models.errors import DemandDataError
from models.features import assemble
from models.predict import DemandModel, InferenceConfig, statistical_tick
from tiles import TileStore, build_tiles
from tiles.fileio import real_data_dir

DEFAULT_OSM = str(real_data_dir() / "osm" / "nyc_manhattan_midtown.osm.pbf")
DEFAULT_TRIPS = str(real_data_dir() / "trips")


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
        tick = model.tick(edges, mow, hz)  # warm-up
        x = assemble(
            model.static, model.table, model.cell_rate, edges, tick.slot_minute_of_week[:1]
        )  # what tick() sends: one row per link
        onnx_t: list[float] = []
        run_t: list[float] = []
        stat_t: list[float] = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            model.tick(edges, mow, hz)
            onnx_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            model.session.run([model.output_name], {model.input_name: x})
            run_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            statistical_tick(model.table, edges, mow, hz)
            stat_t.append(time.perf_counter() - t)
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
                str(mow),
                str(hz),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        agent_rss = json.loads(probe.stdout)["peak_rss_mb"]
        doc = json.loads((model_dir / "model.json").read_text())
    o, s = _stats(onnx_t), _stats(stat_t)
    return {
        "model_version": model.version,
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
        "onnx_run_only": _stats(run_t),
        "statistical_tick": s,
        "ratio_p95_onnx_over_statistical": round(o["p95_ms"] / s["p95_ms"], 2),
        "goal_p95_ms": 5.0,
        "agent_peak_rss_mb": round(agent_rss, 1),
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
