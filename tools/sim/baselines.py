"""The baseline policies: random (COMSET's random walk), random destination, greedy, hotspot
(see :mod:`tools.sim.policies`)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import dijkstra

from tiles.routing import routing_backend
from tools.sim.policy_base import HOTSPOT_SEARCH_S, Allowed, Fleet, Policy, path_to
from tools.sim.world import World

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


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
