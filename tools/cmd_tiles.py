"""``nagashi tiles build`` and ``nagashi route``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from tools.errors import ToolsError


def parse_lonlat(text: str) -> tuple[float, float]:
    """``"LON,LAT"`` -> (lon, lat), with a clear error for anything else."""
    try:
        lon_s, lat_s = text.split(",")
        lon, lat = float(lon_s), float(lat_s)
    except ValueError:
        raise ToolsError(f"expected LON,LAT (e.g. -73.9855,40.7580), got {text!r}") from None
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise ToolsError(f"coordinates out of range (LON,LAT order?): {text!r}")
    return lon, lat


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tiles = sub.add_parser("tiles", help="build and inspect road tiles")
    tsub = tiles.add_subparsers(dest="tiles_command", metavar="ACTION")
    tsub.required = True
    build = tsub.add_parser("build", help="import an OSM extract into area tiles (SQLite)")
    build.add_argument("--osm", required=True, help="OSM extract (.osm.pbf)")
    build.add_argument("--out", required=True, help="output directory or .sqlite file")
    build.add_argument("--tile-deg", type=float, default=0.01, help="tile size in degrees")
    build.add_argument(
        "--country",
        default=None,
        help="ISO country code of the public holidays (PH) in conditional restrictions "
        "(default: the country at the centre of the extract)",
    )
    build.add_argument("--json", action="store_true", help="print the summary as JSON")
    build.set_defaults(func=cmd_tiles_build)

    info = tsub.add_parser("info", help="print a tile database's summary")
    info.add_argument("tiles", help="tile database or its directory")
    info.set_defaults(func=cmd_tiles_info)

    route = sub.add_parser("route", help="fastest legal route between two points")
    route.add_argument("--tiles", required=True, help="tile database or its directory")
    route.add_argument("--from", dest="origin", required=True, metavar="LON,LAT")
    route.add_argument("--to", dest="dest", required=True, metavar="LON,LAT")
    route.add_argument("--weight", choices=["time", "distance"], default="time")
    route.add_argument("--json", action="store_true")
    route.set_defaults(func=cmd_route)


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def cmd_tiles_build(args: argparse.Namespace) -> int:
    from tiles import build_tiles

    t0 = time.monotonic()
    path, summary = build_tiles(
        args.osm,
        args.out,
        args.tile_deg,
        progress=None if args.json else _progress,
        country=args.country,
    )
    summary = {"path": str(path), "build_s": round(time.monotonic() - t0, 3), **summary}
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        _print_summary(summary)
    return 0


def _print_summary(s: dict[str, Any]) -> None:
    print(f"tiles: {s['path']}  ({s['build_s']} s)")
    print(
        f"  nodes {s['nodes']}, directed edges {s['directed_edges']}, tiles {s['tiles']} "
        f"({s['tile_deg']} deg)"
    )
    print(
        f"  drivable ways {s['drivable_ways']}; excluded ways by reason: "
        + ", ".join(f"{k} {v}" for k, v in s["excluded_ways"].items())
    )
    print("  edges flagged: " + ", ".join(f"{k} {v}" for k, v in s["edges_by_flag"].items()))
    print(
        "  turn restrictions: "
        + ", ".join(f"{k} {v}" for k, v in s["restrictions"].items())
        + (
            "; skipped: " + ", ".join(f"{k} {v}" for k, v in s["restrictions_skipped"].items())
            if s["restrictions_skipped"]
            else ""
        )
    )
    _print_conditional(s.get("conditional"))


def _print_conditional(c: dict[str, Any] | None) -> None:
    """The conditional restrictions: how each was read, and every road closed for doubt."""
    if not c:
        return
    print(
        f"  conditional restrictions: {c['values']} values: "
        + ", ".join(f"{k} {v}" for k, v in c["by_status"].items())
    )
    for r in c["closed_for_doubt"]:
        print(f"    closed at all times for doubt: way {r['way_id']} {r['key']}={r['value']!r}:")
        print(f"      {r['reason']}")


def cmd_tiles_info(args: argparse.Namespace) -> int:
    from tiles import TileStore

    with TileStore(args.tiles) as store:
        out = {
            "path": str(store.path),
            "attribution": store.meta["attribution"],
            "source": store.meta.get("source_name"),
            "source_sha256": store.meta.get("source_sha256"),
            **store.summary,
            "conditionals": store.conditionals(),
        }
    print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from tiles import TileStore, shortest_path

    origin = parse_lonlat(args.origin)
    dest = parse_lonlat(args.dest)
    with TileStore(args.tiles) as store:
        route = shortest_path(store, origin, dest, args.weight)
        if args.json:
            print(json.dumps(route.to_json()))
            return 0
        names = store.way_names(store.all().way_id[store.all().local(list(route.edges))])
        g = store.all()
        print(
            f"length_m {route.length_m:.1f}  duration_s {route.duration_s:.1f}  "
            f"edges {len(route.edges)}"
        )
        last = None
        for e in route.edges:
            w = int(g.way_id[g.local([e])[0]])
            name = names.get(w) or f"way {w}"
            if name != last:
                print(f"  {name}")
                last = name
        print(f"  edges: {' '.join(str(e) for e in route.edges)}")
    return 0
