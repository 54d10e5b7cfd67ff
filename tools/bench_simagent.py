"""The agent's own tick in every simulated cab (``nagashi-agent``) against ``nagashi-live``
(one shared value table a minute, the fast approximation the gate uses) and hotspot, on the
real passengers of held-out days (issue 16, "the policy as shipped": measure and state the
difference): revenue per cab-hour with 95 % intervals and paired differences, the share of
ticks that fell back and why, the share of first moves equal between the agent's tick and
``nagashi-live``'s read-out, and CPU seconds per cab-hour (:mod:`tools.sim.agent_compare`).

``--tiles`` and ``--demand`` default to building them from the real data as ``bench simulate``
does (Midtown tiles; demand from 2014-04-01..04-20 of the Uber month with the TLC 2015 trips'
fares, trip times and drop-offs); the replayed days must be held out from the demand.
``--model DIR`` (a ``demand train --train-days`` cell model on that demand's network and grid,
not trained on a replayed day) also runs ``nagashi-live+model`` and ``nagashi-agent+model``
(the agent's tick with the model in the cab's bundle, its first moves compared with
``nagashi-live+model``'s read-out; :mod:`tools.sim.sim_model`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tiles.fileio import real_data_dir

SHARED_DATA = real_data_dir()
OSM = SHARED_DATA / "osm" / "nyc_manhattan_midtown.osm.pbf"
UBER = SHARED_DATA / "trips" / "nyc_uber_2014-04_fivethirtyeight.csv.zip"
YELLOW = SHARED_DATA / "trips" / "nyc_tlc_yellow_2015-06_reuven.csv"
AGENT_MODEL = "nagashi-agent+model"
DEMAND_DAYS = frozenset(dt.date(2014, 4, 1) + dt.timedelta(days=k) for k in range(20))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiles", help="Manhattan tile database (default: built from the real data)")
    p.add_argument("--demand", help="demand directory (default: built from 2014-04-01..20)")
    p.add_argument("--days", default="2014-04-22", help="held-out days to replay")
    p.add_argument("--start", default="17:00", help="shift start (time of day, HH:MM)")
    p.add_argument("--hours", type=float, default=2.0, help="shift length")
    p.add_argument("--taxis", type=int, default=95, help="the whole fleet, all on each policy")
    p.add_argument("--seeds", type=int, default=2, help="seeds per day (intervals need 2 runs)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (same results)")
    p.add_argument("--matching", choices=("hail", "dispatch"), default="hail")
    p.add_argument(
        "--model",
        metavar="DIR",
        help="a recent-demand cell model: also run nagashi-live+model and nagashi-agent+model",
    )
    p.add_argument(
        "--policies",
        default="hotspot,nagashi-live,nagashi-agent",
        help="policies, comma-separated (hotspot first: the reference)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models import DemandTable
    from models.statistics import build_demand_table
    from models.trips import parse_days
    from tiles import TileStore, build_tiles
    from tools.errors import ToolsError
    from tools.sim.agent_compare import compare_agent
    from tools.sim.replay import in_sample_days, load_replay
    from tools.sim.world import SimConfig

    days = parse_days(args.days)
    hh, mm = (int(x) for x in args.start.split(":"))
    start_min = hh * 60 + mm
    if args.seeds < 1 or args.taxis < 1 or args.hours <= 0 or args.jobs < 1:
        raise ToolsError("--seeds, --taxis, --hours and --jobs must be positive")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-simagent-") as tmp:
        tiles = Path(args.tiles) if args.tiles else build_tiles(OSM, Path(tmp) / "tiles")[0]
        with TileStore(tiles) as store:
            if args.demand:
                table = DemandTable.load(args.demand)
            else:
                table, _ = build_demand_table(store, [UBER, YELLOW], days=DEMAND_DAYS)
            if table.network_sha256 != store.meta.get("source_sha256"):
                raise ToolsError("the demand table was built for another road network")
            g = store.all()
    leaked = in_sample_days(table, days)
    if leaked is None or leaked:
        raise ToolsError("the replayed days must be held out from the demand table's days")
    replay = load_replay(g, table, [UBER], days, start_min, args.hours)
    policies = [p for p in args.policies.split(",") if p]
    model = None
    if args.model:
        from tools.sim.sim_model import load_sim_model

        model = load_sim_model(args.model, table, days, False).with_replay(replay)
        policies += [p for p in ("nagashi-live+model", AGENT_MODEL) if p not in policies]
    config = SimConfig(
        taxis=args.taxis,
        test_taxis=args.taxis,
        hours=args.hours,
        start_minute_of_week=replay.days[0].start_minute_of_week,
        matching=args.matching,
    )
    doc = compare_agent(
        g,
        table,
        config,
        list(range(args.seeds)),
        replay=replay,
        policies=policies,
        jobs=args.jobs,
        model=model,
        progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
    )
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    return doc
