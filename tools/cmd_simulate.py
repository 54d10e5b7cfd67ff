"""``nagashi simulate``: the demand/supply simulator comparing cruising policies."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from tools.errors import ToolsError

POLICY_CHOICES = ("random", "hotspot", "greedy", "nagashi", "nagashi-lone", "all")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="simulate cruising policies on real demand")
    p.add_argument("--tiles", required=True, help="tile database or its directory")
    p.add_argument("--demand", required=True, help="demand directory (DemandTable)")
    p.add_argument(
        "--policy",
        default="all",
        help="random, hotspot, greedy, nagashi (nagashi-lone: without the supply map), "
        "a comma-separated list, or all (the four)",
    )
    p.add_argument("--taxis", type=int, default=30, help="cabs in the simulated fleet")
    p.add_argument(
        "--test-taxis",
        type=int,
        default=5,
        help="cabs driving the policy under test; the others drive the reference (hotspot)",
    )
    p.add_argument("--hours", type=float, default=4.0, help="shift length")
    p.add_argument(
        "--start", default="2015-06-02T08:00", metavar="ISO", help="shift start, local time"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, default=30, help="number of seeds (CIs need >= 2)")
    p.add_argument("--replan-s", type=float, default=60.0, help="nagashi replanning interval")
    p.add_argument(
        "--patience-s",
        type=float,
        default=None,
        help="mean passenger patience, s (the world's and the planner's; default: the planner's)",
    )
    p.add_argument(
        "--params",
        metavar="YAML",
        help="a bundle's params.yaml: its planner section is what the simulated cabs run "
        "(as the pipeline's simulate step does); default: the planner's defaults",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 unless nagashi beats hotspot on revenue/h with non-overlapping 95%% CIs",
    )
    p.add_argument("--plot", metavar="PNG", help="plot one shift's routes (first seed)")
    p.set_defaults(func=cmd_simulate)


def _policies(text: str, gate: bool) -> list[str]:
    names = ["random", "hotspot", "greedy", "nagashi"] if text == "all" else text.split(",")
    for n in names:
        if n not in POLICY_CHOICES or n == "all":
            raise ToolsError(f"unknown policy {n!r} (choose from {', '.join(POLICY_CHOICES)})")
    if gate:
        for needed in ("hotspot", "nagashi"):
            if needed not in names:
                names.append(needed)
    return names


def _planner_section(path: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ToolsError(f"--params {path}: unreadable ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise ToolsError(f"--params {path}: not a mapping")
    planner = doc.get("planner") or {}
    if not isinstance(planner, dict):
        raise ToolsError(f"--params {path}: planner must be a mapping")
    from agent.planner import PlannerParams

    try:
        PlannerParams.from_mapping(planner, where=f"--params {path}")  # checked before the run
    except ValueError as e:
        raise ToolsError(str(e)) from None
    return dict(planner)


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def cmd_simulate(args: argparse.Namespace) -> int:
    from agent.planner import minute_of_week_of
    from models import DemandTable
    from tiles import TileStore
    from tools.sim.engine import run_shift
    from tools.sim.experiment import gate, json_finite, run_experiment
    from tools.sim.plot import plot_routes
    from tools.sim.world import SimConfig, make_passengers

    policies = _policies(args.policy, args.gate)
    if args.seeds < 1:
        raise ToolsError("--seeds must be at least 1")
    try:
        start = dt.datetime.fromisoformat(args.start)
        config = SimConfig(
            taxis=args.taxis,
            test_taxis=min(args.test_taxis, args.taxis),
            hours=args.hours,
            start_minute_of_week=minute_of_week_of(start),
            replan_s=args.replan_s,
            **({} if args.patience_s is None else {"patience_s": args.patience_s}),
        )
    except ValueError as e:
        raise ToolsError(str(e)) from None
    table = DemandTable.load(args.demand)
    planner = _planner_section(args.params) if args.params else {}
    t0 = time.monotonic()
    seeds = list(range(args.seed, args.seed + args.seeds))
    with TileStore(args.tiles) as store:
        if table.network_sha256 != store.meta.get("source_sha256"):
            raise ToolsError("the demand table was built for another road network")
        progress = None if args.json else _progress
        exp = run_experiment(store.all(), table, config, policies, seeds, planner, progress)
    world, cal, summary = exp.world, exp.calibration, exp.summary
    doc: dict[str, Any] = exp.to_json(table.version)
    doc["config"]["start"] = start.isoformat()
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    ok, verdict = gate(summary) if args.gate else (True, "")
    if args.gate:
        doc["gate"] = {"pass": ok, "verdict": verdict}
    if args.plot:
        runs = [
            run_shift(
                world,
                make_passengers(world, seeds[0], cal.multiplier),
                p,
                seeds[0],
                cal.multiplier,
                record=True,
            )
            for p in policies
        ]
        doc["plot"] = str(plot_routes(world, runs, args.plot))
    if args.json:
        print(json.dumps(json_finite(doc), indent=2, sort_keys=True))
    else:
        _print_table(doc)
        if args.gate:
            print(verdict)
    return 0 if ok else 1


def _print_table(doc: dict[str, Any]) -> None:
    cal = doc["calibration"]
    print(
        f"calibration: arrivals x{cal['multiplier']} of the observed rate share; served "
        f"{cal['served_trips_per_h']}/h vs target {cal['target_trips_per_h']}/h"
    )
    head = ("policy", "revenue/h", "95% CI", "pickups/h", "occupied", "empty km/pickup")
    print(f"{head[0]:<13}{head[1]:>10}  {head[2]:<17}{head[3]:>10}{head[4]:>10}{head[5]:>16}")
    for name, row in doc["policies"].items():
        r = row["revenue_per_h"]
        ci = f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
        print(
            f"{name:<13}{r['mean']:>10.2f}  {ci:<17}{row['pickups_per_h']['mean']:>10.2f}"
            f"{row['occupied_share']['mean']:>10.3f}{row['empty_km_per_pickup']['mean']:>16.2f}"
        )
    if "nagashi_vs_hotspot" in doc:
        g = doc["nagashi_vs_hotspot"]
        print(f"nagashi vs hotspot (paired): {100 * g['relative_gain']:+.1f}% revenue/h")
    if "plot" in doc:
        print(f"plot: {doc['plot']}")
