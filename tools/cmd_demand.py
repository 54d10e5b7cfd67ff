"""``nagashi demand build|train|eval|gate|map``: statistical and predicted demand."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demand = sub.add_parser("demand", help="build, train, evaluate, gate and map demand")
    dsub = demand.add_subparsers(dest="demand_command", metavar="ACTION")
    dsub.required = True

    build = dsub.add_parser("build", help="statistical demand (DemandTable) from TLC trip files")
    build.add_argument("--tiles", required=True, help="tile database or its directory")
    build.add_argument("--trips", required=True, nargs="+", help="TLC trip CSV files")
    build.add_argument("--out", required=True, help="output demand directory")
    build.add_argument("--json", action="store_true", help="print the report as JSON")
    build.set_defaults(func=cmd_build)


def _print(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))
        return
    for k, v in doc.items():
        if isinstance(v, dict | list):
            v = json.dumps(v, sort_keys=True, ensure_ascii=False)
        print(f"{k}: {v}")


def cmd_build(args: argparse.Namespace) -> int:
    from models.statistics import build_demand_table
    from tiles import TileStore

    with TileStore(args.tiles) as store:
        table, report = build_demand_table(store, args.trips)
    out = table.save(args.out)
    doc = {
        "out": str(out),
        "version": table.version,
        "scale_factor": round(table.scale_factor, 3),
        "pickups_snapped": report["pickups_snapped"],
        "inputs": [
            {k: f[k] for k in ("path", "rows", "kept", "dropped", "mode")} for f in report["inputs"]
        ],
        "snapping": {k: v for k, v in report["snapping"].items() if isinstance(v, int)},
        "network_area_pickups_per_day": report["network_area_pickups_per_day"],
        "max_link_pickups_per_h": report["max_link_pickups_per_h"],
    }
    _print(doc, args.json)
    return 0
