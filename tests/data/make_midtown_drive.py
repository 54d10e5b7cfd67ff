"""Regenerate the demo's Midtown drive (``midtown_drive.csv`` / ``.gpx``): generated, not recorded.

The drive follows real streets of the OSM extract in data/osm: a chain of fastest legal
routes (``tiles.shortest_path``, one-ways and turn restrictions honoured) from Times Square past
Grand Central and Madison Square Park to Penn Station. A simple kinematic model drives it at
1 Hz: cruise at 75-100 % of 80 % of each link's free-flow speed (capped at the 25 mph city
limit), accelerate at 1.5 m/s^2, brake at 2 m/s^2, slow to 4.5 m/s for turns sharper than 45
degrees, and stop for 10-35 s at a quarter of the intersections (red lights). The reported fixes
carry urban-canyon GPS error (an AR(1) position error of about 3 m, heading noise of 3 degrees,
no heading below 1 m/s, speed noise of 0.2 m/s) and an accuracy figure, all from a fixed seed.

    python tests/data/make_midtown_drive.py [--seed 7]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from agent.gps import Fix, write_csv_trace, write_gpx_trace  # noqa: E402
from tiles import TileStore, build_tiles, shortest_path  # noqa: E402
from tiles.geo import LocalProjection, bearing_deg, signed_turn_deg  # noqa: E402

OSM = REPO / "data" / "osm" / "nyc_manhattan_midtown.osm.pbf"
#: Tuesday 2 June 2015, 18:30 in New York (EDT, UTC-4): an evening weekday of the TLC data.
START_S = 1433284200.0
WAYPOINTS = (
    (-73.98550, 40.75800),  # Times Square, 7th Ave at W 45th St
    (-73.97960, 40.75290),  # Madison Ave at E 42nd St (by Grand Central)
    (-73.98988, 40.74118),  # 5th Ave at E 23rd St (Madison Square Park)
    (-73.99050, 40.75009),  # 7th Ave at W 33rd St (Penn Station)
)
CITY_LIMIT_MPS = 25 * 0.44704
ACCEL_MPS2 = 1.5
BRAKE_MPS2 = 2.0
TURN_SPEED_MPS = 4.5
RED_LIGHT_P = 0.25
DT_S = 0.1


def route_edges(store: TileStore) -> list[int]:
    edges: list[int] = []
    heading: float | None = None
    origin = WAYPOINTS[0]
    g = store.all()
    for dest in WAYPOINTS[1:]:
        r = shortest_path(store, origin, dest, heading_deg=heading)
        new = list(r.edges)
        if edges and new and new[0] == edges[-1]:
            new = new[1:]
        edges.extend(new)
        last = int(g.local([edges[-1]])[0])
        origin = (float(g.v_lon[last]), float(g.v_lat[last]))
        heading = float(g.bearing_end[last])
    return edges


def drive(store: TileStore, edges: list[int], rng: np.random.Generator) -> list[Fix]:
    g = store.all()
    loc = g.local(edges)
    proj = LocalProjection(-73.985, 40.75)
    xs: list[float] = []
    ys: list[float] = []
    seg_cruise: list[float] = []  # cruise speed of each polyline segment
    constraints: list[tuple[float, float, float]] = []  # (distance along, speed, wait_s)
    along = 0.0
    for k, e in enumerate(loc):
        geom = g.geometry(int(e))
        gx, gy = proj.to_xy(geom[:, 0], geom[:, 1])
        start = 0 if not xs else 1
        if not xs:
            xs.append(float(gx[0]))
            ys.append(float(gy[0]))
        cruise = min(float(g.speed_kph[e]) / 3.6 * 0.8, CITY_LIMIT_MPS) * rng.uniform(0.75, 1.0)
        for i in range(start, len(gx)):
            along += math.hypot(gx[i] - xs[-1], gy[i] - ys[-1])
            xs.append(float(gx[i]))
            ys.append(float(gy[i]))
            seg_cruise.append(cruise)
        if k + 1 < len(loc):
            turn = abs(float(signed_turn_deg(g.bearing_end[e], g.bearing_start[loc[k + 1]])))
            if rng.random() < RED_LIGHT_P:
                constraints.append((along, 0.0, float(rng.uniform(10.0, 35.0))))
            elif turn > 45.0:
                constraints.append((along, TURN_SPEED_MPS, 0.0))
    px, py = np.array(xs), np.array(ys)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(px), np.diff(py)))])
    total = float(cum[-1])

    def at(s: float) -> tuple[float, float, float, int]:
        i = min(int(np.searchsorted(cum, s, side="right")) - 1, len(cum) - 2)
        f = (s - cum[i]) / max(cum[i + 1] - cum[i], 1e-9)
        hx, hy = px[i + 1] - px[i], py[i + 1] - py[i]
        return px[i] + f * hx, py[i] + f * hy, math.degrees(math.atan2(hx, hy)) % 360.0, i

    fixes: list[Fix] = []
    s, v, t, wait, ci = 0.0, 0.0, 0.0, 0.0, 0
    next_out = 0.0
    err = np.zeros(2)
    while s < total - 0.5:
        if t >= next_out - 1e-9:
            x, y, heading, _ = at(s)
            err = 0.9 * err + rng.normal(0.0, 3.0 * math.sqrt(1 - 0.9**2), 2)
            lon, lat = proj.to_lonlat(x + err[0], y + err[1])
            reported_v = max(v + rng.normal(0.0, 0.2), 0.0) if v > 0 else 0.0
            fixes.append(
                Fix(
                    time_s=START_S + round(t),
                    lon=round(float(lon), 7),
                    lat=round(float(lat), 7),
                    heading_deg=round((heading + rng.normal(0.0, 3.0)) % 360.0, 1)
                    if v >= 1.0
                    else None,
                    speed_mps=round(reported_v, 2),
                    accuracy_m=round(5.0 * rng.uniform(0.8, 1.6), 1),
                )
            )
            next_out += 1.0
        t += DT_S
        if wait > 0:
            wait -= DT_S
            continue
        _, _, _, seg = at(s)
        allow = seg_cruise[seg]
        while ci < len(constraints) and constraints[ci][0] < s - 0.01:
            ci += 1
        if ci < len(constraints):
            pos, vc, w = constraints[ci]
            d = pos - s
            if vc == 0.0 and d < 0.5:
                s, v, wait = pos + 0.02, 0.0, w
                ci += 1
                continue
            allow = min(allow, math.sqrt(vc * vc + 2 * BRAKE_MPS2 * max(d, 0.0)))
        allow = min(allow, math.sqrt(2 * BRAKE_MPS2 * max(total - s, 0.0)) + 0.3)
        v = max(min(v + ACCEL_MPS2 * DT_S, allow), 0.0)
        s += v * DT_S
    return fixes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = build_tiles(OSM, Path(tmp))
        with TileStore(path) as store:
            edges = route_edges(store)
            fixes = drive(store, edges, np.random.default_rng(args.seed))
    write_csv_trace(fixes, args.out / "midtown_drive.csv")
    write_gpx_trace(fixes, args.out / "midtown_drive.gpx", name="Midtown Manhattan drive")
    dist = sum(
        math.dist(*(LocalProjection(-73.985, 40.75).to_xy(f.lon, f.lat) for f in (a, b)))
        for a, b in itertools.pairwise(fixes)
    )
    print(
        f"{len(fixes)} fixes over {len(edges)} links, {fixes[-1].time_s - fixes[0].time_s:.0f} s,"
        f" ~{dist / 1000:.1f} km (with GPS noise)"
    )
    _ = bearing_deg  # imported for readers comparing headings


if __name__ == "__main__":
    main()
