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
  ``nagashi-live+model`` and ``nagashi-offline+model`` are ``nagashi-live`` and
  ``nagashi-offline`` planning with the cell demand model of ``simulate --model``
  (:mod:`tools.sim.sim_model`); ``nagashi-agent+model`` and ``nagashi-agent-offline+model``
  the agent's tick with that model in the cab's bundle. ``nagashi-offline-spread`` is
  ``nagashi-offline`` whose read-out takes, at each junction, one of the successors within a
  margin of the best ``Q``, named by a per-cab hash (:class:`NagashiSpreadPolicy`;
  ``nagashi-offline-spread@EPS`` sets the margin, default :data:`SPREAD_EPS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tools.sim.baselines import (
    GreedyPolicy,
    HotspotPolicy,
    RandomDestinationPolicy,
    RandomPolicy,
)
from tools.sim.nagashi import NagashiLivePolicy, NagashiPolicy, NagashiRoutePolicy
from tools.sim.policy_base import HOTSPOT_SEARCH_S, Allowed, Fleet, Policy, path_to
from tools.sim.spread import SPREAD_EPS, NagashiSpreadPolicy
from tools.sim.world import World

__all__ = [
    "HOTSPOT_SEARCH_S",
    "POLICIES",
    "SPREAD",
    "SPREAD_EPS",
    "Allowed",
    "Fleet",
    "GreedyPolicy",
    "HotspotPolicy",
    "NagashiLivePolicy",
    "NagashiPolicy",
    "NagashiRoutePolicy",
    "NagashiSpreadPolicy",
    "Policy",
    "RandomDestinationPolicy",
    "RandomPolicy",
    "make_policy",
    "path_to",
    "spread_eps_of",
]

POLICIES = ("random", "hotspot", "greedy", "nagashi")
#: the spread offline fleet; ``SPREAD + "@" + EPS`` names its margin
SPREAD = "nagashi-offline-spread"


def spread_eps_of(name: str) -> float | None:
    """The margin a ``nagashi-offline-spread[@EPS]`` name gives (None: another policy);
    ValueError for a margin that is not a number >= 0."""
    if name == SPREAD:
        return SPREAD_EPS
    if not name.startswith(SPREAD + "@"):
        return None
    text = name[len(SPREAD) + 1 :]
    try:
        eps = float(text)
    except ValueError:
        eps = math.nan
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"policy {name!r}: the margin after @ must be a number >= 0")
    return eps


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
        # with the world's cell demand model (simulate --model; tools.sim.sim_model)
        "nagashi-live+model": lambda: NagashiLivePolicy(
            world, allowed, rng, multiplier, seed=seed, n_cabs=n_cabs, model=True
        ),
        "nagashi-offline+model": lambda: NagashiLivePolicy(
            world, allowed, rng, multiplier, seed=seed, live=False, n_cabs=n_cabs, model=True
        ),
        "nagashi-agent+model": lambda: _agent_policy(
            world, allowed, rng, multiplier, seed=seed, n_cabs=n_cabs, model=True
        ),
        "nagashi-agent-offline+model": lambda: _agent_policy(
            world, allowed, rng, multiplier, seed=seed, n_cabs=n_cabs, live=False, model=True
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
    eps = spread_eps_of(name)
    if eps is not None:
        factories[name] = lambda: NagashiSpreadPolicy(
            world, allowed, rng, multiplier, seed=seed, eps=eps, n_cabs=n_cabs
        )
    if name not in factories:
        raise ValueError(f"unknown policy {name!r}")
    rng = np.random.default_rng([seed, 0x9011C7, sum(map(ord, name))])
    return factories[name]()
