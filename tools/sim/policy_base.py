"""The simulator's policy interface: the allowed successors of a link at a minute (`Allowed`),
what a policy may ask of the fleet (`Fleet`), the `Policy` base and `path_to`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from tiles.conditional import MINUTES_PER_WEEK
from tiles.routing import EdgeRouter
from tools.sim.live import LiveLayer
from tools.sim.world import World

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

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
