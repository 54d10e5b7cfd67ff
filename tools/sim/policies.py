"""What a vacant cab does at the end of a link: the four policies compared.

Every policy chooses only among legal successors (turns) that a cruising taxi may enter at that
minute (``World.allowed``), so no policy is ever given an illegal edge.

* ``random`` (= ``random-walk``, COMSET's baseline): a uniformly random allowed successor.
* ``random-destination`` (COMSET's other baseline): the fastest path to a uniformly random
  cruisable link, then another.
* ``greedy``: the successor with the highest one-step expected revenue ``P_f F_f`` (the
  planner's pickup model and the simulated rates), ties broken at random.
* ``hotspot``: the usual drivers' heuristic: head for the nearest (by travel time) of the
  links with the highest expected demand now (the top ``hotspot_top_share`` of cruisable
  links), along the fastest legal path; on arrival, the next nearest other hotspot.
* ``nagashi``: the planner. Every ``replan_s`` the MDP is solved once for the whole area (what
  each cab's own plan would compute over its 3 km radius, which covers Midtown) with the
  fleet's supply map (vacant passes per link and hour over the last ``supply_window_s``, what a
  fleet server knows from its cabs' logs) and each cab follows ``argmax Q`` from where it is.
  ``nagashi-lone`` is the ablation without the supply map (every cab plans as if alone);
  ``nagashi-route`` is the agent as shipped: alone, and following the route read-out the
  driver is shown (:class:`NagashiRoutePolicy`); ``nagashi-live`` adds the fleet's live layer
  and the supply prior (:class:`NagashiLivePolicy`: one value table a minute shared by the
  cabs, a fast approximation of the agent); ``nagashi-agent`` runs the agent's own tick
  (``agent.decide``: the GPS fix, matching, the cab's own plan, safety and its instruction)
  in every cab (:mod:`tools.sim.agent_tick`), ``nagashi-agent-offline`` the same offline.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from agent.planner import (
    FleetView,
    ValueTable,
    fleet_view,
    plan_from_table,
    policy_step,
    solve,
    with_fleet,
)
from agent.planner.fleet import CLAIM_HORIZON_S
from sync.live import Snapshot
from tiles.conditional import MINUTES_PER_WEEK
from tiles.routing import EdgeRouter, routing_backend
from tools.sim.live import LiveLayer, supply_prior
from tools.sim.world import World

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]
POLICIES = ("random", "hotspot", "greedy", "nagashi")
#: first search radius (travel time) of the hotspot policy's nearest-hotspot search
HOTSPOT_SEARCH_S = 300.0


class Allowed:
    """Cruise-allowed mask per minute of week (cached: windows change per minute)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._cache: dict[int, Bool] = {}
        self._csr_key = b""
        self._csr = sp.csr_matrix((world.n, world.n))
        self._csr_rev = self._csr
        self._router_key = b""
        self._router: EdgeRouter | None = None

    def at(self, t_s: float) -> Bool:
        m = math.floor(self.world.minute_at(t_s)) % MINUTES_PER_WEEK
        hit = self._cache.get(m)
        if hit is None:
            hit = self.world.cruisable & ~self.world.graph.closed_at(m)
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[m] = hit
        return hit

    def successors(self, link: int, t_s: float) -> list[int]:
        ok = self.at(t_s)
        return [f for f in self.world.succ[link] if ok[f]]

    def line_graph(self, t_s: float, reverse: bool = False) -> sp.csr_matrix:
        """The links a cruising cab may enter now as a graph: ``e -> f`` costs ``tau_f`` (the
        time to drive ``f``), so a distance from ``e`` is the time from the end of ``e`` to the
        end of the target; ``reverse``: its transpose (distances *to* a link)."""
        ok = self.at(t_s)
        key = ok.tobytes()
        if self._csr_key != key:
            src, dst = self.world.graph.turn_pairs
            keep = ok[dst]
            n = self.world.n
            w = np.maximum(self.world.tau_s[dst[keep]], 1e-9)
            self._csr = sp.csr_matrix((w, (src[keep], dst[keep])), shape=(n, n))
            self._csr_rev = self._csr.T.tocsr()
            self._csr_key = key
        return self._csr_rev if reverse else self._csr

    def router(self, t_s: float) -> EdgeRouter:
        """The same rules and costs as :meth:`line_graph` as a ``tiles.EdgeRouter`` (RoutingKit's
        CCH when it is installed): one customisation per change of the mask."""
        ok = self.at(t_s)
        key = ok.tobytes()
        if self._router is None or self._router_key != key:
            self._router = EdgeRouter(self.world.graph, self.world.tau_s, ok)
            self._router_key = key
        return self._router


class Fleet(Protocol):
    """What a policy may know about the fleet (the nagashi supply map)."""

    last_pass_s: npt.NDArray[np.float64]  # per link: end of its last vacant pass (-inf)

    def vacant_passes(self, since_s: float) -> npt.NDArray[np.int64]:
        """Links traversed vacant by the fleet's cabs since ``since_s`` (one entry a pass)."""
        ...


class Policy:
    name = "base"

    def __init__(self, world: World, allowed: Allowed, rng: np.random.Generator, m: float):
        self.world = world
        self.allowed = allowed
        self.rng = rng
        self.multiplier = m

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        raise NotImplementedError

    def reset_taxi(self, taxi: int) -> None:
        """The cab became vacant somewhere new (after a drop-off)."""

    #: the live layer this policy's cabs report to and read (tools.sim.live), if any
    live: LiveLayer | None = None

    def route_of(self, taxi: int) -> Sequence[int]:
        """The local links the cab means to drive next (what its heartbeat carries)."""
        return ()

    def stats(self) -> dict[str, Any]:
        """What the policy counted over the shift (``RunResult.policy_stats``); none here."""
        return {}


class RandomPolicy(Policy):
    name = "random"

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        succ = self.allowed.successors(link, t_s)
        if not succ:
            return -1
        return succ[int(self.rng.integers(len(succ)))]


class _RatesBySlot:
    def __init__(self, world: World, m: float) -> None:
        self.world = world
        self.m = m
        self._slot = -1
        self.rate: F64 = np.zeros(world.n)

    def at(self, t_s: float) -> F64:
        slot = math.floor(self.world.minute_at(t_s) // 30)
        if slot != self._slot:
            self.rate = self.world.rates(self.world.minute_at(t_s), self.m)
            self._slot = slot
        return self.rate


class GreedyPolicy(Policy):
    name = "greedy"

    def __init__(self, world: World, allowed: Allowed, rng: np.random.Generator, m: float):
        super().__init__(world, allowed, rng, m)
        self.rates = _RatesBySlot(world, m)
        fare = world.table.fare_mean[world.graph.edge_id].astype(np.float64)
        self.fare = fare
        self.window_s = world.params.hail_window_s
        self._slot = -2
        self.gain: F64 = np.zeros(world.n)

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        succ = self.allowed.successors(link, t_s)
        if not succ:
            return -1
        rate = self.rates.at(t_s)
        if self._slot != self.rates._slot:
            p = -np.expm1(-rate * (self.world.tau_s + self.window_s) / 3600.0)
            self.gain = p * self.fare
            self._slot = self.rates._slot
        g = [self.gain[f] for f in succ]
        best = max(g)
        ties = [f for f, v in zip(succ, g, strict=True) if v == best]
        return ties[int(self.rng.integers(len(ties)))] if len(ties) > 1 else ties[0]


class HotspotPolicy(Policy):
    name = "hotspot"

    def __init__(self, world: World, allowed: Allowed, rng: np.random.Generator, m: float):
        super().__init__(world, allowed, rng, m)
        self.rates = _RatesBySlot(world, m)
        self.paths: dict[int, list[int]] = {}
        self._slot = -2
        self.hot: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)

    def _hotspots(self, t_s: float) -> npt.NDArray[np.int64]:
        rate = self.rates.at(t_s)
        if self._slot != self.rates._slot:
            cand = np.flatnonzero(self.world.cruisable)
            k = max(1, round(self.world.config.hotspot_top_share * cand.size))
            order = np.lexsort((cand, -rate[cand]))
            self.hot = cand[order[:k]]
            self._slot = self.rates._slot
        return self.hot

    def _retarget(self, link: int, t_s: float) -> list[int]:
        all_hot = self._hotspots(t_s)
        if routing_backend() == "cch":  # microseconds a search: no radius first
            r = self.allowed.router(t_s)
            d = r.costs_from(link, all_hot)
            d[all_hot == link] = np.inf
            if not np.isfinite(d).any():
                return []
            return r.path(link, int(all_hot[int(np.argmin(d))]))[0][1:]
        m = self.allowed.line_graph(t_s)
        # the nearest hotspot is usually close: search a few minutes first, then everything
        for limit in (HOTSPOT_SEARCH_S, np.inf):
            dist, pred = dijkstra(
                m, directed=True, indices=link, return_predecessors=True, limit=limit
            )
            hot = all_hot[(all_hot != link) & np.isfinite(dist[all_hot])]
            if hot.size:
                break
        if hot.size == 0:
            return []
        target = int(hot[int(np.argmin(dist[hot]))])
        return path_to(pred, link, target)

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        path = self.paths.get(taxi)
        ok = self.allowed.at(t_s)
        if not path or path[0] not in self.world.succ[link] or not ok[path[0]]:
            path = self._retarget(link, t_s)
            self.paths[taxi] = path
        if not path:
            succ = self.allowed.successors(link, t_s)
            return succ[int(self.rng.integers(len(succ)))] if succ else -1
        return path.pop(0)

    def reset_taxi(self, taxi: int) -> None:
        self.paths.pop(taxi, None)


class RandomDestinationPolicy(HotspotPolicy):
    """COMSET's ``random-destination`` baseline: drive the fastest legal path to a uniformly
    random cruisable link, then draw the next."""

    name = "random-destination"

    def _retarget(self, link: int, t_s: float) -> list[int]:
        m = self.allowed.line_graph(t_s)
        dist, pred = dijkstra(m, directed=True, indices=link, return_predecessors=True)
        ok = self.allowed.at(t_s)
        cand = np.flatnonzero(ok & np.isfinite(dist))
        cand = cand[cand != link]
        if cand.size == 0:
            return []
        return path_to(pred, link, int(cand[int(self.rng.integers(cand.size))]))


def path_to(pred: npt.NDArray[np.int32], link: int, target: int) -> list[int]:
    """The links after ``link`` up to ``target`` along a Dijkstra predecessor tree."""
    path = [target]
    while path[-1] != link:
        p = int(pred[path[-1]])
        if p < 0:
            return []
        path.append(p)
    path.reverse()
    return path[1:]


class NagashiPolicy(Policy):
    name = "nagashi"

    def __init__(
        self,
        world: World,
        allowed: Allowed,
        rng: np.random.Generator,
        m: float,
        supply: bool = True,
    ):
        super().__init__(world, allowed, rng, m)
        self.table: ValueTable | None = None
        self.t0 = -math.inf
        self.use_supply = supply

    def _supply(self, t_s: float, fleet: Fleet) -> F64:
        """Vacant passes per hour on each link over the last ``supply_window_s`` (the fleet
        server's view of its own cabs, which includes this cab's own recent passes)."""
        window = min(self.world.config.supply_window_s, max(t_s, 1.0))
        passes = fleet.vacant_passes(t_s - window)
        counts = np.bincount(passes, minlength=self.world.n).astype(np.float64)
        return counts * (3600.0 / window)

    def _solve(self, t_s: float, fleet: Fleet) -> ValueTable:
        w = self.world
        minute = w.minute_at(t_s)
        demand = w.tick_demand(minute, self.multiplier)
        supply = self._supply(t_s, fleet) if self.use_supply else None
        return solve(w.graph, demand, minute, w.params, supply_per_h=supply)

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        if self.table is None or t_s - self.t0 >= self.world.config.replan_s:
            self.table = self._solve(t_s, fleet)
            self.t0 = t_s
        last = fleet.last_pass_s - self.t0 if self.use_supply else None
        return policy_step(self.table, link, t_s - self.t0, last)


class NagashiRoutePolicy(NagashiPolicy):
    """The agent as shipped: it plans alone (no fleet supply map) and the driver follows the
    route it shows, the read-out of ``agent.planner.plan_from_table`` (at least
    ``route_min_m`` / ``route_min_s``, no U-turn, at most ``route_max_visits`` passes of a
    link), read again from the cab's link whenever a new table is solved (every ``replan_s``,
    the agent's tick) or the route runs out -- instead of ``argmax Q`` at every junction. The
    table is solved once per tick for the whole area and shared by the cabs (the agent solves
    its 3 km radius, which covers Midtown). The route-stability rules are the agent's own:
    at each new table the route shown is kept unless the new read-out is better by
    ``route_switch_margin``, and the next link is committed. Not modelled: the runtime's
    matching of a GPS fix."""

    name = "nagashi-route"

    def __init__(self, world: World, allowed: Allowed, rng: np.random.Generator, m: float):
        super().__init__(world, allowed, rng, m, supply=False)
        self.routes: dict[int, tuple[object, list[int]]] = {}

    def _read_key(self, taxi: int, t_s: float) -> object:
        """A route read out under another key is read again (here: at each new table)."""
        return self.t0

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        if self.table is None or t_s - self.t0 >= self.world.config.replan_s:
            self.table = self._solve(t_s, fleet)
            self.t0 = t_s
        ok = self.allowed.at(t_s)
        got = self.routes.get(taxi)
        key = self._read_key(taxi, t_s)
        if got is None or got[0] != key or not got[1] or got[1][0] not in self.world.succ[link]:
            g = self.world.graph
            # the route shown so far, if the cab can still drive it: the agent's hysteresis
            # (agent.planner.stability) keeps it unless the new read-out is clearly better,
            # and the cab at the end of its link is committed to the next one
            previous = None
            if got is not None and got[1] and got[1][0] in self.world.succ[link]:
                previous = [int(x) for x in g.edge_id[got[1]]]
            plan = plan_from_table(
                self._table_for(taxi, t_s),
                int(g.edge_id[link]),
                1.0,  # decided at the end of the link
                self.world.minute_at(t_s),
                self.world.params,
                "statistics",
                previous_route=previous,
                committed_links=1 if previous else 0,
            )
            route = [int(x) for x in g.local(list(plan.edges))]
            got = (key, route)
            self.routes[taxi] = got
        route = got[1]
        if route and route[0] in self.world.succ[link] and ok[route[0]]:
            return route.pop(0)
        self.routes.pop(taxi, None)
        return policy_step(self.table, link, t_s - self.t0, None)

    def _table_for(self, taxi: int, t_s: float) -> ValueTable:
        """The table this cab's read-out uses (the shared one; with the fleet: per cab)."""
        assert self.table is not None
        return self.table

    def reset_taxi(self, taxi: int) -> None:
        self.routes.pop(taxi, None)

    def route_of(self, taxi: int) -> Sequence[int]:
        got = self.routes.get(taxi)
        return got[1] if got is not None else ()


class _Counts:
    """A snapshot's link counts on the world's graph, computed once per snapshot."""

    def __init__(self, snap: Snapshot, edge_ids: npt.NDArray[np.integer[Any]]) -> None:
        self.version = snap.version
        self.built_s = snap.built_s
        self.sha256 = snap.sha256
        self._ids = edge_ids
        self._snap = snap
        self._counts = snap.link_counts(edge_ids)

    def link_counts(self, edge_ids: npt.ArrayLike) -> tuple[Any, Any]:
        if edge_ids is not self._ids:  # another graph: count again
            return self._snap.link_counts(edge_ids)
        return self._counts


class NagashiLivePolicy(NagashiRoutePolicy):
    """The agent as shipped with the fleet's live layer (issue 17): each cab follows the route
    read-out (as :class:`NagashiRoutePolicy`) and sends heartbeats; the shared table is solved
    with the supply prior as background supply (``prior``), and each cab's read-out sees the
    latest snapshot it has fetched (up to a minute old) without its own heartbeat
    (:func:`agent.planner.fleet.fleet_view`, :func:`agent.planner.fleet.with_fleet`): the
    others' planned passes as claims, the links where other vacant cabs are as drained.
    ``live=False`` is the fleet offline (no snapshot ever, the prior only)."""

    name = "nagashi-live"

    def __init__(
        self,
        world: World,
        allowed: Allowed,
        rng: np.random.Generator,
        m: float,
        *,
        seed: int,
        live: bool = True,
        prior: bool = True,
        prior_policy: str | None = None,
        n_cabs: int = 0,
        every_link: bool = False,
    ):
        super().__init__(world, allowed, rng, m)
        self.every_link = every_link
        self.live = LiveLayer(world, n_cabs, seed) if live else None
        self.prior = supply_prior(world, multiplier=m, policy=prior_policy) if prior else None
        self._counts: _Counts | None = None
        self.edge_ids = world.graph.edge_id
        self.own_passes: dict[int, dict[int, float]] = {}

    def _read_key(self, taxi: int, t_s: float) -> object:
        # every_link: the route is read again at every junction (the agent's tick, every few
        # seconds, with its hysteresis), not only at each new table
        return t_s if self.every_link else self.t0

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        # the cab's own vacant passes (the agent's ``last_pass_age_s``): a curb it drained
        # holds fewer hails when its read-out comes back to it
        mine = self.own_passes.setdefault(taxi, {})
        mine[link] = t_s
        if len(mine) > 64:
            cut = t_s - self.world.params.patience_s
            for k in [k for k, v in mine.items() if v < cut]:
                del mine[k]
        return super().choose(taxi, link, t_s, fleet)

    def reset_taxi(self, taxi: int) -> None:
        super().reset_taxi(taxi)
        self.own_passes.pop(taxi, None)

    def _planned_per_h(self) -> F64 | None:
        """The others' planned passes as supply per hour on each link, from the snapshot
        before the newest (what the cabs have fetched by now: 30 to 60 s old)."""
        if self.live is None or not self.live.snapshots:
            return None
        snap = self.live.snapshots[-2 if len(self.live.snapshots) > 1 else -1][1]
        _, planned = snap.link_counts(self.edge_ids)
        return np.asarray(planned, dtype=np.float64) * (3600.0 / CLAIM_HORIZON_S)

    def _solve(self, t_s: float, fleet: Fleet) -> ValueTable:
        """The shared table: background supply = the prior plus, live, every cab's planned
        passes (the agent's own solve leaves its own route out; one table for the whole fleet
        cannot, so here a cab's own route weighs on it too)."""
        w = self.world
        minute = w.minute_at(t_s)
        demand = w.tick_demand(minute, self.multiplier)
        supply = self.prior.rates(w.graph.edge_id, minute) if self.prior is not None else None
        planned = self._planned_per_h()
        if planned is not None:
            supply = planned if supply is None else supply + planned
        return solve(w.graph, demand, minute, w.params, supply_per_h=supply)

    def _table_for(self, taxi: int, t_s: float) -> ValueTable:
        assert self.table is not None
        mine = self.own_passes.get(taxi)
        if self.live is None:
            snap = None
        else:
            snap, own_link, own_route = self.live.seen_by(taxi, t_s)
        if snap is None:
            if not mine:
                return self.table
            view = FleetView("none", seen_age_s=self._own_ages(mine, t_s, None))
            return with_fleet(self.table, view, seen_offset_s=t_s - self.t0)
        if self._counts is None or self._counts.version != snap.version:
            self._counts = _Counts(snap, self.edge_ids)
        view = fleet_view(
            self.world.graph,
            now_s=t_s,
            snapshot=self._counts,
            own_link=own_link,
            own_route=own_route,
        )
        if mine:
            view = dataclasses.replace(view, seen_age_s=self._own_ages(mine, t_s, view.seen_age_s))
        return with_fleet(self.table, view, seen_offset_s=t_s - self.t0)

    def _own_ages(self, mine: dict[int, float], t_s: float, seen: F64 | None) -> F64:
        ages = np.full(self.world.n, np.inf) if seen is None else seen.copy()
        for f, t in mine.items():
            ages[f] = min(ages[f], t_s - t)
        return ages


def _agent_policy(
    world: World, allowed: Allowed, rng: np.random.Generator, m: float, **kw: Any
) -> Policy:
    """``nagashi-agent``: every cab runs the agent's own tick (tools.sim.agent_tick, which
    builds on this module: imported when asked for)."""
    from tools.sim.agent_tick import NagashiAgentPolicy

    return NagashiAgentPolicy(world, allowed, rng, m, **kw)


def _planning_for(world: World, matching: str) -> World:
    """``world`` whose nagashi cabs plan for the matching rule ``matching``."""
    from dataclasses import replace  # (self-contained: this module is being split on main)

    return replace(world, params=replace(world.params, matching=matching))


def make_policy(
    name: str, world: World, allowed: Allowed, seed: int, multiplier: float, n_cabs: int = 0
) -> Policy:
    factories: dict[str, Callable[[], Policy]] = {
        "random": lambda: RandomPolicy(world, allowed, rng, multiplier),
        "random-walk": lambda: RandomPolicy(world, allowed, rng, multiplier),
        "random-destination": lambda: RandomDestinationPolicy(world, allowed, rng, multiplier),
        "greedy": lambda: GreedyPolicy(world, allowed, rng, multiplier),
        "hotspot": lambda: HotspotPolicy(world, allowed, rng, multiplier),
        "nagashi": lambda: NagashiPolicy(world, allowed, rng, multiplier),
        "nagashi-lone": lambda: NagashiPolicy(world, allowed, rng, multiplier, supply=False),
        "nagashi-route": lambda: NagashiRoutePolicy(world, allowed, rng, multiplier),
        "nagashi-live": lambda: NagashiLivePolicy(
            world, allowed, rng, multiplier, seed=seed, n_cabs=n_cabs
        ),
        "nagashi-offline": lambda: NagashiLivePolicy(
            world, allowed, rng, multiplier, seed=seed, live=False, n_cabs=n_cabs
        ),
        "nagashi-live-tick": lambda: NagashiLivePolicy(
            world, allowed, rng, multiplier, seed=seed, n_cabs=n_cabs, every_link=True
        ),
        # the street-hail values whatever the market's matching rule (under dispatch, the
        # measure of the dispatch-aware values: docs/planner.md, "Under dispatch")
        "nagashi-live-hail": lambda: NagashiLivePolicy(
            _planning_for(world, "hail"), allowed, rng, multiplier, seed=seed, n_cabs=n_cabs
        ),
        "nagashi-agent": lambda: _agent_policy(
            world, allowed, rng, multiplier, seed=seed, n_cabs=n_cabs
        ),
        "nagashi-agent-offline": lambda: _agent_policy(
            world, allowed, rng, multiplier, seed=seed, n_cabs=n_cabs, live=False
        ),
        "nagashi-offline-own": lambda: NagashiLivePolicy(
            world,
            allowed,
            rng,
            multiplier,
            seed=seed,
            live=False,
            prior_policy="nagashi-live",
            n_cabs=n_cabs,
        ),
    }
    if name not in factories:
        raise ValueError(f"unknown policy {name!r}")
    rng = np.random.default_rng([seed, 0x9011C7, sum(map(ord, name))])
    return factories[name]()
