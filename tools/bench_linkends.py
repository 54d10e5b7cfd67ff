"""Fallbacks of the agent's tick on fixes at link ends: the share and reasons on the real bundle.

The simulator's ``nagashi-agent`` cab is seen only at the ends of its links, so its ticks run
on fixes made there (:mod:`tools.sim.agent_tick`). This samples the same kind of tick outside
the simulator, on a real bundle (default: the demo's Manhattan bundle): a link drawn at random
among those a cruising cab may enter (inside the business area, not forbidden), a fix at its
end with Gaussian error of ``--gps-sigma-m`` per axis and ``--heading-sigma-deg`` on the
link's heading, at its cruising speed, the previous fix ``--interval-s`` earlier on the same
link; then :func:`agent.decide.decide` (first tick: no route shown). Reported: the share of
ticks that fell back and the share of ticks with each reason (a tick may have several), with
the seed; the measure for issue "why ticks fall back with ROUTE_MISSING / MATCH_AMBIGUOUS".
Only the sampled links differ from the simulator's, which are where its cabs drive.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tiles.fileio import real_data_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle-dir", help="bundle directory (default: the demo's, built if missing)")
    p.add_argument("--samples", type=int, default=400, help="ticks (links sampled)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gps-sigma-m", type=float, default=5.0, help="position error per axis")
    p.add_argument("--heading-sigma-deg", type=float, default=5.0)
    p.add_argument("--interval-s", type=float, default=5.0, help="previous fix this earlier")
    p.add_argument(
        "--at", default="2014-04-22T17:30", help="local time of the ticks (the bundle's zone)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from agent.bundle import load_bundle
    from agent.decide import TickInputs, decide
    from safety import Fix, SafetyGate
    from tiles import tags as T
    from tools.errors import ToolsError
    from tools.field.demo import ensure_manhattan_bundle
    from tools.sim.agent_tick import M_PER_DEG_LAT, R68_PER_SIGMA, _point_along

    if args.samples < 1 or args.gps_sigma_m < 0 or args.heading_sigma_deg < 0:
        raise ToolsError("--samples must be positive and the GPS errors not negative")
    if not args.interval_s > 0:
        raise ToolsError("--interval-s must be positive")
    try:
        local = dt.datetime.fromisoformat(args.at)
    except ValueError as e:
        raise ToolsError(f"--at: {e}") from e
    bundle_dir = (
        Path(args.bundle_dir)
        if args.bundle_dir
        else ensure_manhattan_bundle(real_data_dir(), Path.home() / ".cache" / "nagashi" / "demo")
    )
    lb = load_bundle(bundle_dir)
    now_s = local.replace(tzinfo=lb.timezone).timestamp()
    g = lb.store.all()
    mow = lb.minute_of_week(now_s)
    ok = (g.flags & T.CRUISE_FORBIDDEN) == 0
    if lb.area is not None:
        ok &= lb.area.edge_mask(g)
    links = np.flatnonzero(ok)
    if links.size == 0:
        raise ToolsError("the bundle has no link a cruising cab may enter")
    rng = np.random.default_rng(args.seed)
    gate = SafetyGate(lb.safety, area=lb.area, locale="en")
    speed = np.asarray(g.speed_kph, dtype=np.float64) / 3.6 * lb.planner.speed_factor

    def fix_at(link: int, fraction: float, t: float) -> Fix:
        lon, lat, bearing = _point_along(np.asarray(g.geometry(link), np.float64), fraction)
        de, dn = rng.normal(0.0, args.gps_sigma_m, 2)
        dh = rng.normal(0.0, args.heading_sigma_deg)
        return Fix(
            time_s=t,
            lon=lon + float(de) / (M_PER_DEG_LAT * math.cos(math.radians(lat))),
            lat=lat + float(dn) / M_PER_DEG_LAT,
            heading_deg=float((bearing + dh) % 360.0),
            speed_mps=float(speed[link]),
            accuracy_m=max(R68_PER_SIGMA * args.gps_sigma_m, 1.0),
        )

    reasons: Counter[str] = Counter()
    fallbacks = 0
    t0 = time.process_time()
    for _ in range(args.samples):
        link = int(rng.choice(links))
        tau = float(g.length_m[link]) / max(float(speed[link]), 0.1)
        prev = fix_at(link, max(0.0, 1.0 - args.interval_s / tau), now_s - args.interval_s)
        fix = fix_at(link, 1.0, now_s)
        inputs = TickInputs(
            now_s=now_s,
            fix=fix,
            previous_fix=prev,
            locale="en",
            trigger="first",
            last_moving_fix=prev,
        )
        ins = decide(lb, inputs, gate).instruction
        if ins.kind != "route":
            fallbacks += 1
            reasons.update(str(c) for c in ins.reason_codes)
    n = args.samples
    return {
        "bundle": str(bundle_dir),
        "minute_of_week": round(mow, 2),
        "samples": n,
        "seed": args.seed,
        "gps_sigma_m": args.gps_sigma_m,
        "heading_sigma_deg": args.heading_sigma_deg,
        "fallback_share": round(fallbacks / n, 4),
        "reason_share": {k: round(v / n, 4) for k, v in sorted(reasons.items())},
        "tick_cpu_ms": round(1000.0 * (time.process_time() - t0) / n, 2),
    }
