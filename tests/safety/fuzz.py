"""Generated ticks for the property and fuzz tests: real positions, legal and broken routes,
corrupted fixes, demand and bundle states."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models import DemandTable
from safety import BundleStatus, Fix, TickInput
from tiles import Graph
from tiles import tags as T

from .helpers import NOW_S, fake_table, fix_on, tick_demand

FIX_CORRUPTIONS = (
    "none",
    "none",
    "none",
    "nan_lon",
    "inf_lat",
    "out_of_range",
    "stale",
    "future",
    "swap",
    "missing",
    "no_heading",
    "poor_accuracy",
    "jump",
    "offset",
    "text",
    "anywhere",
)
ROUTE_KINDS = (
    "legal",
    "legal",
    "legal",
    "from_next",
    "forbidden",
    "closed",
    "swap",
    "drop",
    "reverse",
    "u_turn",
    "random_ids",
    "empty",
    "none",
    "garbage",
    "long",
    "banned",
)
OTHER = ("none", "none", "demand_nan", "demand_negative", "demand_ood", "bundle", "no_table")


@dataclass
class _Prep:
    succ: list[list[int]]
    allowed: np.ndarray
    forbidden: np.ndarray
    window_edges: np.ndarray
    table: DemandTable
    banned: list[tuple[int, int]]


_PREP: weakref.WeakKeyDictionary[Graph, _Prep] = weakref.WeakKeyDictionary()


def prep(g: Graph, banned: list[tuple[int, int]] | None = None) -> _Prep:
    p = _PREP.get(g)
    if p is None:
        succ = []
        for a in range(g.n):
            s = g.local(g.turn_to[g.turn_offsets[a] : g.turn_offsets[a + 1]])
            succ.append([int(x) for x in s if x >= 0])
        p = _Prep(
            succ=succ,
            allowed=g.cruise_allowed(),
            forbidden=np.flatnonzero(g.flags & T.CRUISE_FORBIDDEN),
            window_edges=np.unique(g.local(g.win_edge)),
            table=fake_table(g.n_edges_total),
            banned=list(banned or []),
        )
        _PREP[g] = p
    return p


def _walk(g: Graph, p: _Prep, start: int, n: int, rng: np.random.Generator) -> list[int]:
    out = [start]
    cur = start
    for _ in range(n):
        cands = [
            s
            for s in p.succ[cur]
            if p.allowed[s] and not (g.u_node[s] == g.v_node[cur] and g.v_node[s] == g.u_node[cur])
        ]
        if not cands:
            break
        cur = cands[int(rng.integers(len(cands)))]
        out.append(cur)
    return out


def make_route(g: Graph, p: _Prep, start: int, kind: str, rng: np.random.Generator) -> Any:
    walk = _walk(g, p, start, int(rng.integers(1, 40)), rng)
    ids = [int(g.edge_id[i]) for i in walk]
    if kind == "legal":
        return ids
    if kind == "from_next":
        return ids[1:] or ids
    if kind == "forbidden" and p.forbidden.size:
        k = int(rng.integers(1, len(ids) + 1))
        return [*ids[:k], int(g.edge_id[rng.choice(p.forbidden)]), *ids[k:]]
    if kind == "closed" and p.window_edges.size:
        k = int(rng.integers(1, len(ids) + 1))
        return [*ids[:k], int(g.edge_id[rng.choice(p.window_edges)]), *ids[k:]]
    if kind == "swap" and len(ids) >= 3:
        i, j = sorted(rng.choice(len(ids), 2, replace=False))
        ids[i], ids[j] = ids[j], ids[i]
        return ids
    if kind == "drop" and len(ids) >= 3:
        del ids[int(rng.integers(1, len(ids) - 1))]
        return ids
    if kind == "reverse":
        return ids[::-1]
    if kind == "u_turn":
        last = walk[-1]
        rev = [s for s in p.succ[last] if g.v_node[s] == g.u_node[last]]
        return [*ids, int(g.edge_id[rev[0]])] if rev else ids + ids[::-1]
    if kind == "random_ids":
        return [int(x) for x in rng.integers(-5, g.n_edges_total + 5, int(rng.integers(1, 30)))]
    if kind == "empty":
        return []
    if kind == "none":
        return None
    if kind == "garbage":
        return [["a"], None, 1.5, "x", {"e": 1}][int(rng.integers(5))]
    if kind == "long":
        return ids * 50
    if kind == "banned" and p.banned:
        here = int(g.edge_id[start])
        tos = [t for f, t in p.banned if f == here]
        if tos:
            t = tos[int(rng.integers(len(tos)))]
            after = _walk(g, p, int(g.local([t])[0]), int(rng.integers(0, 10)), rng)
            return [here, *(int(g.edge_id[i]) for i in after)]
    return ids


def corrupt_fix(fix: Fix, kind: str, rng: np.random.Generator) -> tuple[Fix | None, Fix | None]:
    """(fix, previous fix)."""
    prev = None
    if kind == "nan_lon":
        fix = replace(fix, lon=math.nan)
    elif kind == "inf_lat":
        fix = replace(fix, lat=-math.inf)
    elif kind == "out_of_range":
        fix = replace(fix, lon=fix.lon + 400.0)
    elif kind == "stale":
        fix = replace(fix, time_s=fix.time_s - float(rng.uniform(6, 1e5)))
    elif kind == "future":
        fix = replace(fix, time_s=fix.time_s + float(rng.uniform(3, 1e5)))
    elif kind == "swap":
        fix = replace(fix, lon=fix.lat, lat=fix.lon)
    elif kind == "missing":
        return None, None
    elif kind == "no_heading":
        fix = replace(fix, heading_deg=None if rng.random() < 0.5 else math.nan, speed_mps=0.0)
    elif kind == "poor_accuracy":
        fix = replace(fix, accuracy_m=float(rng.uniform(31, 1000)))
    elif kind == "jump":
        prev = replace(fix, lon=fix.lon + 0.02, time_s=fix.time_s - 1.0)
    elif kind == "offset":
        fix = replace(
            fix, lon=fix.lon + float(rng.normal(0, 3e-4)), lat=fix.lat + float(rng.normal(0, 3e-4))
        )
    elif kind == "text":
        fix = replace(fix, speed_mps="fast")  # type: ignore[arg-type]  # text on purpose
    return fix, prev


def make_tick(
    g: Graph,
    p: _Prep,
    rng: np.random.Generator,
    *,
    edge: int | None = None,
    fraction: float | None = None,
    heading_noise_deg: float | None = None,
    minute_of_week: float | None = None,
    fix_kind: str | None = None,
    route_kind: str | None = None,
    other: str | None = None,
) -> TickInput:
    a = int(rng.integers(g.n)) if edge is None else edge
    rk = ROUTE_KINDS[int(rng.integers(len(ROUTE_KINDS)))] if route_kind is None else route_kind
    if rk == "banned" and p.banned:  # the cab on the from-link of a real turn restriction
        a = int(g.local([p.banned[int(rng.integers(len(p.banned)))][0]])[0])
    frac = float(rng.random()) if fraction is None else fraction
    fix = fix_on(
        g, a, frac, speed_mps=float(rng.uniform(0, 20)), accuracy_m=float(rng.uniform(2, 40))
    )
    noise = float(rng.normal(0, 15)) if heading_noise_deg is None else heading_noise_deg
    assert fix.heading_deg is not None  # fix_on always gives the link's bearing
    fix = replace(fix, heading_deg=(fix.heading_deg + noise) % 360.0)
    fk = FIX_CORRUPTIONS[int(rng.integers(len(FIX_CORRUPTIONS)))] if fix_kind is None else fix_kind
    if fk == "anywhere":  # a uniform position over the extract: off-road, in blocks, rivers
        fix = replace(
            fix,
            lon=float(rng.uniform(g.u_lon.min() - 0.002, g.u_lon.max() + 0.002)),
            lat=float(rng.uniform(g.u_lat.min() - 0.002, g.u_lat.max() + 0.002)),
        )
    f, prev = corrupt_fix(fix, fk, rng)
    route = make_route(g, p, a, rk, rng)
    mow = float(rng.uniform(0, 7 * 1440)) if minute_of_week is None else minute_of_week
    ok = other if other is not None else OTHER[int(rng.integers(len(OTHER)))]
    table: DemandTable | None = p.table
    demand = None
    ids = (
        route
        if isinstance(route, list)
        and route
        and all(isinstance(x, int) and 0 <= x < g.n_edges_total for x in route)
        else [int(g.edge_id[a])]
    )
    demand = tick_demand(p.table, sorted(set(ids)), mow)
    if ok == "demand_nan":
        demand = replace(demand, pickups_per_h=demand.pickups_per_h * np.float32(np.nan))
    elif ok == "demand_negative":
        demand = replace(demand, fare_mean=-demand.fare_mean)
    elif ok == "demand_ood":
        demand = replace(demand, pickups_per_h=demand.pickups_per_h + np.float32(1e5))
    elif ok == "no_table":
        table = None
    bundle = BundleStatus(True)
    if ok == "bundle":
        bundle = [
            BundleStatus(False),
            BundleStatus(True, hash_ok=False),
            BundleStatus(True, expires_at_s=NOW_S - 10),
        ][int(rng.integers(3))]
    return TickInput(
        now_s=NOW_S,
        minute_of_week=mow,
        fix=f,
        graph=g,
        route=route,
        previous_fix=prev,
        bundle=bundle,
        demand=demand,
        demand_table=table,
    )
