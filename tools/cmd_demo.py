"""``nagashi demo``: build the Manhattan bundle from the real data if missing, then replay the
generated Midtown drive (``tests/data/make_midtown_drive.py``: fastest legal routes, a kinematic
model, simulated GPS error) through the agent, accelerated, with the tablet page served."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tiles.fileio import real_data_dir
from tools.cmd_agent import add_runtime_arguments, run_agent
from tools.errors import ToolsError

REPO = Path(__file__).resolve().parent.parent


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="one command: build the Manhattan bundle, replay a generated Midtown drive, show it",
        description="Build the Manhattan bundle from the real data (once), then replay a "
        "25-minute drive through Midtown through the real agent. The drive is generated, not "
        "recorded: fastest legal routes on the OSM extract, a kinematic model with red-light "
        "stops and simulated GPS error (tests/data/make_midtown_drive.py).",
    )
    p.add_argument(
        "--data",
        "--shared-data",
        dest="shared_data",
        default=str(real_data_dir()),
        help="the real data folder (default: the repository's data/, or $NAGASHI_DATA)",
    )
    p.add_argument("--work-dir", default=None, help="where the bundle and logs go")
    p.add_argument(
        "--gps", default=None, help="a trace to replay instead (CSV/GPX/NMEA), e.g. a real one"
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the bundle")
    add_runtime_arguments(p)
    p.set_defaults(func=cmd_demo, speed=10.0)


def cmd_demo(args: argparse.Namespace) -> int:
    from tools.field.demo import DRIVE_FIXTURE, ensure_manhattan_bundle

    shared = Path(args.shared_data).resolve()
    if not shared.is_dir():
        raise ToolsError(
            f"real data not found at {shared} (pass --data; python data/fetch.py fetches it)"
        )
    work = Path(args.work_dir) if args.work_dir else Path.home() / ".cache" / "nagashi" / "demo"
    print(f"bundle: building from {shared} if missing (in {work}) ...", file=sys.stderr)
    bundle = ensure_manhattan_bundle(shared, work, rebuild=args.rebuild)
    print(f"bundle: {bundle}", file=sys.stderr)
    if args.data_dir is None:
        args.data_dir = str(work / "agent")
    gps = args.gps or str(DRIVE_FIXTURE)
    if not Path(gps).is_file():
        raise ToolsError(f"trace not found: {gps}")
    pace = f"at {args.speed:g}x" if args.speed > 0 else "as fast as the agent plans"
    page = "" if args.no_api else "; open the page printed below"
    print(f"replaying {Path(gps).name} {pace}{page}", file=sys.stderr)
    return run_agent(args, bundle, gps)
