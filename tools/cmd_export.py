"""``nagashi export geojson|html --log FILE``: the drive, recommendations and fallbacks on a map."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export trip logs as GeoJSON or an offline HTML map")
    p.add_argument("format", choices=["geojson", "html"])
    p.add_argument("--log", required=True, nargs="+", help="trip-log file(s) or directory")
    p.add_argument("--out", default=None, help="output file (default: drive.geojson/.html)")
    p.add_argument("--title", default="nagashi trip log", help="HTML page title")
    p.add_argument(
        "--tiles",
        default=None,
        metavar="PATH",
        help="html: the bundle (or its tiles.sqlite) to draw the road network and street names "
        "under the drive",
    )
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from tools.field.export import export_geojson, export_html

    out = Path(args.out or f"drive.{args.format}")
    if args.format == "geojson":
        counts = export_geojson(args.log, out)
    else:
        counts = export_html(args.log, out, args.title, tiles=args.tiles)
    if args.json:
        print(json.dumps({"out": str(out), "features": counts}, sort_keys=True))
    else:
        print(f"{out}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0
