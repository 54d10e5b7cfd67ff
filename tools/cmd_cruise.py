"""``nagashi cruise``: the cruising recommendation for one position, heading and time."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from tools.cmd_tiles import parse_lonlat
from tools.errors import ToolsError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cruise", help="recommend a cruising route for an empty taxi")
    p.add_argument(
        "--bundle-or-tiles",
        required=True,
        metavar="PATH",
        help="a bundle directory (tiles.sqlite, demand/, params.yaml, area.geojson) or tiles",
    )
    p.add_argument("--demand", metavar="DIR", help="demand directory (default: the bundle's)")
    p.add_argument("--at", required=True, metavar="LON,LAT", help="the cab's GPS position")
    p.add_argument("--heading", type=float, default=None, metavar="DEG", help="GPS heading")
    p.add_argument(
        "--time",
        required=True,
        metavar="ISO",
        help="when: the area's local time (2015-06-02T18:30), or a time with an offset "
        "(2015-06-02T22:30:00Z, ...+09:00), converted to the area's local time; a local time "
        "that a daylight-saving change makes ambiguous or skips is refused",
    )
    p.add_argument(
        "--timezone",
        default=None,
        metavar="IANA",
        help="the area's time zone (default: the bundle's params.yaml; needed with tiles "
        "for a --time with an offset)",
    )
    p.add_argument("--horizon-min", type=float, default=None, help="planning horizon, minutes")
    p.add_argument("--radius-m", type=float, default=None, help="links considered around the cab")
    p.add_argument(
        "--speed-factor",
        type=float,
        default=None,
        help="cruising speed / free-flow speed (default: measured from the demand's trips)",
    )
    p.add_argument("--json", action="store_true", help="print the plan's canonical JSON")
    p.set_defaults(func=cmd_cruise)


def local_time(text: str, timezone: str | None) -> dt.datetime:
    """``--time`` as the area's naive local time (what the planner's minute of week reads).

    A time with an offset is converted to ``timezone``; a local time is checked against it: a
    time that a daylight-saving change repeats (ambiguous) or skips (nonexistent) is refused,
    as the planner cannot tell which hour was meant."""
    import zoneinfo

    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ToolsError(
            f"--time must be ISO 8601 (2015-06-02T18:30 local, or 2015-06-02T22:30Z), got {text!r}"
        ) from None
    if timezone is None:
        if when.tzinfo is not None:
            raise ToolsError(
                f"--time {text} has an offset but the area's time zone is unknown: "
                "pass --timezone (a bundle's params.yaml names it)"
            )
        return when
    try:
        tz = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ToolsError(
            f"unknown time zone {timezone!r} (an IANA name: America/New_York)"
        ) from None
    if when.tzinfo is not None:
        return when.astimezone(tz).replace(tzinfo=None)
    early, late = when.replace(tzinfo=tz, fold=0), when.replace(tzinfo=tz, fold=1)
    if early.utcoffset() != late.utcoffset():
        back = early.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None)
        if back != when:
            raise ToolsError(
                f"--time {text} does not exist in {timezone} (the clocks skip it for daylight "
                "saving): give a time with an offset"
            )
        raise ToolsError(
            f"--time {text} is ambiguous in {timezone} (it happens twice when daylight saving "
            f"ends): give it with an offset ({early.isoformat()} or {late.isoformat()})"
        )
    return when


def _bundle_timezone(path: Path) -> str | None:
    import yaml

    params_file = path / "params.yaml"
    if not (path.is_dir() and params_file.is_file()):
        return None
    doc = yaml.safe_load(params_file.read_text()) or {}
    tz = doc.get("timezone") if isinstance(doc, dict) else None
    return str(tz) if tz else None


def _bundle_parts(path: Path, demand: str | None) -> tuple[Path, Path, dict[str, Any], Any]:
    """(tiles, demand dir, planner parameter overrides, business-area polygon or None)."""
    import shapely
    import yaml

    overrides: dict[str, Any] = {}
    polygon = None
    if path.is_dir() and (path / "manifest.yaml").is_file():
        tiles = path / "tiles.sqlite"
        demand_dir = Path(demand) if demand else path / "demand"
        params_file = path / "params.yaml"
        if params_file.is_file():
            doc = yaml.safe_load(params_file.read_text()) or {}
            planner = doc.get("planner", {}) if isinstance(doc, dict) else {}
            if isinstance(planner, dict):
                overrides = dict(planner)
        area_file = path / "area.geojson"
        if area_file.is_file():
            gj = json.loads(area_file.read_text())
            feats = gj.get("features") if gj.get("type") == "FeatureCollection" else None
            geoms = [f["geometry"] for f in feats] if feats else [gj.get("geometry", gj)]
            polygon = shapely.union_all([shapely.from_geojson(json.dumps(g)) for g in geoms])
        return tiles, demand_dir, overrides, polygon
    if demand is None:
        raise ToolsError("--demand DIR is needed when --bundle-or-tiles names tiles")
    return path, Path(demand), overrides, polygon


def cmd_cruise(args: argparse.Namespace) -> int:
    from agent.planner import (
        PlannerParams,
        minute_of_week_of,
        plan_from_fix,
        speed_factor_from_demand,
    )
    from models import DemandTable
    from tiles import TileStore

    lon, lat = parse_lonlat(args.at)
    timezone = args.timezone or _bundle_timezone(Path(args.bundle_or_tiles))
    when = local_time(args.time, timezone)
    tiles, demand_dir, overrides, polygon = _bundle_parts(Path(args.bundle_or_tiles), args.demand)
    table = DemandTable.load(demand_dir)
    with TileStore(tiles) as store:
        if args.speed_factor is not None:
            overrides["speed_factor"] = args.speed_factor
        elif "speed_factor" not in overrides:
            overrides["speed_factor"] = speed_factor_from_demand(table, store.all())
        if args.horizon_min is not None:
            overrides["horizon_s"] = args.horizon_min * 60.0
        if args.radius_m is not None:
            overrides["radius_m"] = args.radius_m
        try:
            params = PlannerParams.from_mapping(overrides)
        except ValueError as e:
            raise ToolsError(str(e)) from None
        plan = plan_from_fix(
            store,
            table,
            lon,
            lat,
            args.heading,
            minute_of_week_of(when),
            params,
            area_polygon=polygon,
        )
    if args.json:
        sys.stdout.write(plan.to_json().decode() + "\n")
        return 0
    print(
        f"from link {plan.start_edge_id} at {when.isoformat()} local"
        f"{f' ({timezone})' if timezone else ''}: {len(plan.edges)} links, "
        f"{plan.length_m:.0f} m, {plan.duration_s / 60:.1f} min"
    )
    print(
        f"expected revenue over {params.horizon_s / 60:.0f} min: {plan.expected_revenue:.2f} "
        f"({plan.expected_revenue_per_h:.2f} per hour); demand {plan.demand_source}"
    )
    for d in plan.directions:
        street = d.street or "(unnamed)"
        print(f"  {d.action:<12} {street:<28} {d.distance_m:7.0f} m  turn {d.turn_deg:+6.1f}°")
    return 0
