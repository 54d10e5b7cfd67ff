"""Safety test helpers: real positions on real links, legal walks, an independent oracle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models import SLOT_MINUTES, CellGrid, DemandTable, TickDemand, tick_demand_from_table
from safety import BundleStatus, Fix, TickInput
from tiles import Graph
from tiles import tags as T

NOW_S = 1_790_000_000.0


def point_on(g: Graph, local: int, fraction: float = 0.5) -> tuple[float, float]:
    """A point at ``fraction`` of the link's geometry (by vertex interpolation)."""
    geom = g.geometry(local)
    seg = np.hypot(np.diff(geom[:, 0]) * np.cos(np.radians(geom[0, 1])), np.diff(geom[:, 1]))
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    target = fraction * cum[-1]
    k = int(min(np.searchsorted(cum, target, side="right") - 1, len(seg) - 1))
    t = 0.0 if seg[k] == 0 else (target - cum[k]) / seg[k]
    return (
        float(geom[k, 0] + t * (geom[k + 1, 0] - geom[k, 0])),
        float(geom[k, 1] + t * (geom[k + 1, 1] - geom[k, 1])),
    )


def fix_on(
    g: Graph,
    local: int,
    fraction: float = 0.5,
    *,
    time_s: float = NOW_S - 0.5,
    speed_mps: float = 8.0,
    accuracy_m: float = 5.0,
) -> Fix:
    lon, lat = point_on(g, local, fraction)
    geom = g.geometry(local)
    from tiles.geo import bearing_deg

    k = max(0, min(int(fraction * (len(geom) - 1)), len(geom) - 2))
    heading = float(bearing_deg(geom[k, 0], geom[k, 1], geom[k + 1, 0], geom[k + 1, 1]))
    return Fix(time_s, lon, lat, heading, speed_mps, accuracy_m)


def successors(g: Graph, local: int) -> np.ndarray:
    s = g.local(g.turn_to[g.turn_offsets[local] : g.turn_offsets[local + 1]]).astype(np.int64)
    return s[s >= 0]


def is_u_turn(g: Graph, a: int, b: int) -> bool:
    return bool(g.u_node[b] == g.v_node[a] and g.v_node[b] == g.u_node[a])


def legal_walk(
    g: Graph,
    start: int,
    n: int,
    rng: np.random.Generator,
    minute_of_week: int | None = None,
) -> list[int]:
    """A random walk of legal, cruise-allowed turns (no U-turns, no link thrice): global ids."""
    allowed = g.cruise_allowed(minute_of_week)
    out = [start]
    cur = start
    for _ in range(n):
        succ = [int(s) for s in successors(g, cur) if allowed[s] and not is_u_turn(g, cur, s)]
        succ = [s for s in succ if out.count(s) < 2]
        if not succ:
            break
        cur = int(rng.choice(succ))
        out.append(cur)
    return [int(g.edge_id[i]) for i in out]


def long_walk(g: Graph, rng: np.random.Generator, n: int, minute_of_week: int = 600) -> list[int]:
    """A legal walk of exactly ``n + 1`` links from a random cruise-allowed start."""
    starts = np.flatnonzero(g.cruise_allowed(minute_of_week))
    for _ in range(500):
        route = legal_walk(g, int(rng.choice(starts)), n, rng, minute_of_week)
        if len(route) == n + 1:
            return route
    raise AssertionError(f"no legal walk of {n} links found")


def ok_tick(
    g: Graph,
    local: int,
    route: Sequence[int] | None,
    *,
    fraction: float = 0.5,
    minute_of_week: float = 600.0,
    fix: Fix | None = None,
    demand: TickDemand | None = None,
    table: DemandTable | None = None,
    bundle: BundleStatus | None = None,
) -> TickInput:
    return TickInput(
        now_s=NOW_S,
        minute_of_week=minute_of_week,
        fix=fix if fix is not None else fix_on(g, local, fraction),
        graph=g,
        route=route,
        bundle=bundle if bundle is not None else BundleStatus(present=True),
        demand=demand,
        demand_table=table,
    )


@dataclass(frozen=True)
class Oracle:
    """An independent, slow re-implementation of "no forbidden link": python loops over tiles'
    own answers (flags, ``closed_at``, turn lists) and the store's turn restrictions."""

    g: Graph
    banned_pairs: frozenset[tuple[int, int]]  # no_* restrictions: (from, to) global ids
    only_turns: dict[int, frozenset[int]] = field(default_factory=dict)  # only_*: from -> to

    @staticmethod
    def from_restrictions(g: Graph, restrictions: list[dict[str, Any]]) -> Oracle:
        banned: set[tuple[int, int]] = set()
        only: dict[int, set[int]] = {}
        for r in restrictions:
            if not str(r["status"]).startswith("applied"):
                continue
            for f, t in r["pairs"]:
                if str(r["kind"]).startswith("only_"):
                    only.setdefault(int(f), set()).add(int(t))
                else:
                    banned.add((int(f), int(t)))
        return Oracle(g, frozenset(banned), {k: frozenset(v) for k, v in only.items()})

    def violations(
        self,
        route: Sequence[int],
        start_edge: int,
        minute_of_week: float,
        start_fraction: float = 0.0,
    ) -> list[str]:
        g = self.g
        loc = [int(x) for x in g.local(list(route))]
        if any(x < 0 for x in loc):
            return ["unknown"]
        start = int(g.local([start_edge])[0])
        path = loc if loc[0] == start else [start, *loc]
        out: list[str] = []
        t_s = (1.0 - start_fraction) * float(g.travel_time_s[start]) if path[0] == start else 0.0
        for k, e in enumerate(path):
            if k > 0:
                a = path[k - 1]
                if int(g.edge_id[e]) not in set(
                    g.turn_to[g.turn_offsets[a] : g.turn_offsets[a + 1]].tolist()
                ):
                    out.append(f"turn {a}->{e} not legal")
                if (int(g.edge_id[a]), int(g.edge_id[e])) in self.banned_pairs:
                    out.append(f"banned turn {a}->{e}")
                only = self.only_turns.get(int(g.edge_id[a]))
                if only is not None and int(g.edge_id[e]) not in only:
                    out.append(f"turn {a}->{e} against an only_* restriction")
                if int(g.flags[e]) & T.CRUISE_FORBIDDEN:
                    out.append(f"forbidden link {e}")
                minute = int((minute_of_week + t_s / 60.0) % (7 * 1440))
                if bool(g.closed_at(minute)[e]):
                    out.append(f"closed link {e} at {minute}")
            t_s += float(g.travel_time_s[e]) if k > 0 else 0.0
        return out


def fake_table(n_edges: int, *, seed: int = 0, network: str = "fake") -> DemandTable:
    """A small, valid DemandTable with gamma-distributed rates (a fake, not real demand)."""
    rng = np.random.default_rng(seed)
    grid = CellGrid(-74.02, 40.73, 0.01, 0.01, 5, 4)
    n_cells = grid.n_cells
    drop = rng.random((n_cells, n_cells + 1)).astype(np.float32)
    drop /= drop.sum(axis=1, keepdims=True)
    return DemandTable(
        network_sha256=network,
        n_edges=n_edges,
        pickups_per_h=rng.gamma(0.5, 2.0, (3, 48, n_edges)).astype(np.float32),
        fare_mean=rng.uniform(8, 30, n_edges).astype(np.float32),
        fare_quantiles=np.sort(rng.uniform(5, 40, (n_edges, 3)), axis=1).astype(np.float32),
        trip_duration_s=rng.uniform(300, 1500, n_edges).astype(np.float32),
        trip_distance_m=rng.uniform(1000, 6000, n_edges).astype(np.float32),
        grid=grid,
        edge_cell=rng.integers(0, n_cells, n_edges).astype(np.int32),
        dropoff=drop,
        scale_factor=1.0,
        version="fake-1",
    )


def tick_demand(table: DemandTable, edge_ids: Sequence[int], minute_of_week: float) -> TickDemand:
    return tick_demand_from_table(table, list(edge_ids), int(minute_of_week), 2 * SLOT_MINUTES)
