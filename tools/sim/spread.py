"""``nagashi-offline-spread[@EPS]`` (issue 17): the offline fleet (``nagashi-offline``: no
snapshot, the reference fleet's supply prior) with the route read-out's spread margin set to
``EPS`` whatever the world's parameters say: the agent's own spread
(``PlannerParams.route_spread_eps``, :class:`agent.planner.readout.Spread`; docs/planner.md,
"Offline cabs that spread"), for measuring the margin."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.planner import ROUTE_SPREAD_EPS, Spread
from tools.sim.nagashi import NagashiLivePolicy
from tools.sim.policy_base import Allowed
from tools.sim.world import World

#: the margin of ``nagashi-offline-spread`` when its name gives none: the one bundles ship
#: (docs/planner.md, "Offline cabs that spread")
SPREAD_EPS = ROUTE_SPREAD_EPS


class NagashiSpreadPolicy(NagashiLivePolicy):
    """``nagashi-offline-spread``: ``nagashi-offline`` whose read-out spreads with margin
    ``eps`` (``eps = 0`` is ``nagashi-offline`` with the spread off, exactly). :meth:`stats`
    counts the read-outs that spread."""

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
        if not (0.0 <= eps <= 1.0 and math.isfinite(eps)):
            raise ValueError(f"the spread margin must be a number within [0, 1], not {eps!r}")
        super().__init__(world, allowed, rng, m, seed=seed, live=False, n_cabs=n_cabs)
        self.spread_eps = eps
        self.readouts = 0

    def _spread_for(self, taxi: int, t_s: float) -> Spread | None:
        got = super()._spread_for(taxi, t_s)
        self.readouts += got is not None
        return got

    def stats(self) -> dict[str, Any]:
        return {"spread_eps": self.spread_eps, "spread_readouts": self.readouts}
