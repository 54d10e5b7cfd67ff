"""``nagashi-offline-spread`` (issue 17, an experiment in the simulator: nothing in agent/ does
this): the offline fleet whose route read-out spreads its cabs over the near-best successors by
a per-cab hash (docs/planner.md, "Offline cabs that spread")."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import numpy as np

from agent.planner import ValueTable, action_values, choose_route
from agent.planner.deadends import live_links
from agent.planner.readout import best_next, link_facts
from tools.sim.nagashi import NagashiLivePolicy
from tools.sim.policy_base import Allowed
from tools.sim.world import World

#: the margin of ``nagashi-offline-spread`` when its name gives none (docs/planner.md, "Offline
#: cabs that spread")
SPREAD_EPS = 0.05


def spread_hash(seed: int, cab: int, link: int, minute: int) -> int:
    """A deterministic 64-bit hash of (run seed, cab, link, minute): which of the near-best
    successors a cab takes there and then (reproducible, independent of any RNG's state)."""
    data = struct.pack("<4q", seed, cab, link, minute)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class NagashiSpreadPolicy(NagashiLivePolicy):
    """``nagashi-offline-spread``: the offline fleet (``nagashi-offline``: no snapshot, the
    reference fleet's supply prior) whose route read-out does not take ``argmax Q`` at every
    junction but, among the allowed successors whose ``Q`` is within ``eps * |Q_best|`` of the
    best, the one a per-cab hash of (seed, cab, link, minute) names (:func:`spread_hash`): cabs
    planning with the same values no longer drive the same corridors, and where one successor
    is clearly better every cab still takes it. ``eps = 0`` is ``nagashi-offline`` exactly.

    The read-out is :func:`agent.planner.readout.follow`'s (no U-turn, at most
    ``route_max_visits`` visits, no dead end, a link not on the route yet first; the same calls
    of ``best_next``, whose choice is the best here), and the kept route the agent's hysteresis
    (:func:`agent.planner.choose_route`) with the same read-out as its extension."""

    name = "nagashi-offline-spread"

    def __init__(
        self,
        world: World,
        allowed: Allowed,
        rng: np.random.Generator,
        m: float,
        *,
        seed: int,
        eps: float = SPREAD_EPS,
        n_cabs: int = 0,
    ):
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"the spread margin must be a finite number >= 0, not {eps!r}")
        super().__init__(world, allowed, rng, m, seed=seed, live=False, n_cabs=n_cabs)
        self.eps = eps
        self.seed = seed
        self.steps = 0  # read-out steps with a successor to take
        self.decisions = 0  # of those, with more than one near-best successor
        self.deviations = 0  # of those, where the hash named another than the best

    def stats(self) -> dict[str, Any]:
        return {
            "spread_eps": self.eps,
            "spread_steps": self.steps,
            "spread_decisions": self.decisions,
            "spread_deviations": self.deviations,
        }

    def _pick(
        self, table: ValueTable, cab: int, e: int, t: float, own: dict[int, float], skip: set[int]
    ) -> int:
        """The successor of ``e`` left at ``t`` (seconds after the table's start): the best
        (``best_next``), or a near-best one named by the cab's hash."""
        f = best_next(table, e, t, None, own, skip)
        self.steps += f >= 0
        if f < 0 or self.eps <= 0.0:
            return f
        allowed = table.allowed_at(table.start_minute_of_week + t / 60.0)
        cands = [x for x in link_facts(table.prep, e)[0] if allowed[x] and x not in skip]
        if len(cands) < 2:
            return f
        # Q of each candidate with the ages best_next uses (the table's passes, the route's own)
        pass_age = table.pass_age_s
        ages = []
        for x in cands:
            last = -float(pass_age[x]) if pass_age is not None else -math.inf
            if x in own:
                last = max(last, own[x])
            ages.append(max(t - last, 0.0))
        layer = math.floor(t / table.prep.step_s + 0.5)
        q = action_values(table, layer, np.asarray(cands, dtype=np.int64), np.asarray(ages))
        qb = float(q[cands.index(f)])
        floor = qb - self.eps * abs(qb)
        near = [f] + [x for x, qx in zip(cands, q.tolist(), strict=True) if x != f and qx > floor]
        if len(near) < 2:
            return f
        self.decisions += 1
        pick = near[spread_hash(self.seed, cab, e, int((self.t0 + t) // 60.0)) % len(near)]
        self.deviations += pick != f
        return pick

    def _follow(
        self, table: ValueTable, cab: int, start: int, t0_rel_s: float, prefix: tuple[int, ...]
    ) -> list[int]:
        """:func:`agent.planner.readout.follow` with the agent's parameters, each step chosen
        by :meth:`_pick`."""
        p = self.world.params
        max_visits = p.route_max_visits
        horizon_s = table.n_layers * table.prep.step_s
        route: list[int] = []
        length = 0.0
        t = t0_rel_s
        e = start
        minute = table.start_minute_of_week + t0_rel_s / 60.0
        live = live_links(table, minute) if max_visits else None
        own: dict[int, float] = {start: t0_rel_s}
        visits: dict[int, int] = {start: 1}

        def enter(f: int) -> None:
            nonlocal length, t, e
            route.append(f)
            _, _, _, f_m, f_s = link_facts(table.prep, f)
            length += f_m
            t += f_s
            own[f] = t
            visits[f] = visits.get(f, 0) + 1
            e = f

        for f in prefix:
            enter(f)
        while len(route) < p.max_route_edges and t < horizon_s:
            if length >= p.route_min_m and t - t0_rel_s >= p.route_min_s:
                break
            skip: set[int] = set()
            succ: list[int] = []
            if max_visits > 0:
                succ, back = link_facts(table.prep, e)[:2]
                skip = {
                    x
                    for x in succ
                    if visits.get(x, 0) >= max_visits or link_facts(table.prep, x)[2] == back
                }
            f = -1
            if max_visits > 0 and live is not None and live[e]:
                ends = {x for x in succ if not live[x]}
                f = self._pick(
                    table, cab, e, t, own, skip | ends | {x for x in succ if x in visits}
                )
                if f < 0:
                    f = self._pick(table, cab, e, t, own, skip | ends)
                if f < 0:
                    break  # only a dead end is left: the route ends before it
            elif max_visits > 0:
                f = self._pick(table, cab, e, t, own, skip | {x for x in succ if x in visits})
            if f < 0:
                f = self._pick(table, cab, e, t, own, skip)
            if f < 0:
                break
            enter(f)
        return route

    def _read_route(
        self, taxi: int, link: int, t_s: float, previous: list[int] | None
    ) -> list[int]:
        """:func:`agent.planner.route_from_table`'s read-out and hysteresis, spread."""
        table = self._table_for(taxi, t_s)
        rest_s = (1.0 - 1.0) * float(table.prep.tau_s[link])  # decided at the end of the link
        t0_rel = (self.world.minute_at(t_s) - table.start_minute_of_week) * 60.0 + rest_s
        route = self._follow(table, taxi, link, t0_rel, ())
        if previous is None:
            return route
        prev = table.prep.graph.local(list(previous))
        if not bool(np.all(prev >= 0)):
            return route
        choice = choose_route(
            table,
            link,
            t0_rel,
            route,
            [int(f) for f in prev],
            self.world.params.route_switch_margin,
            1,
            lambda prefix: self._follow(table, taxi, link, t0_rel, prefix),
        )
        return list(choice.route)
