"""The nagashi policies: the planner solved once a minute for the area (`NagashiPolicy`), its
route read-out as the driver is shown it (`NagashiRoutePolicy`), and with the fleet's live layer
and the supply prior (`NagashiLivePolicy`); see :mod:`tools.sim.policies`. With ``model`` the
live policy plans with the world's cell demand model (``nagashi-live+model``,
``nagashi-offline+model``; :mod:`tools.sim.sim_model`). A cab of the live policy without a
snapshot spreads its read-out over the near-best successors by a hash of its own salt, as the
agent does (``PlannerParams.route_spread_eps``, agent.planner.readout.Spread);
``nagashi-offline-spread[@EPS]`` (:mod:`tools.sim.spread`) is the offline fleet with that margin
set."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.planner import (
    FleetView,
    Spread,
    ValueTable,
    policy_step,
    solve,
    with_fleet,
)
from agent.planner.fleet import CLAIM_HORIZON_S, SnapshotReadout
from agent.planner.plan import route_only_from_table
from agent.planner.readout import spread_salt_of
from agent.tick_recent import RECENT_NO_SNAPSHOT
from models import RecentCounts
from sync.live import Snapshot
from tools.sim.live import LiveLayer, supply_prior
from tools.sim.policy_base import Allowed, Fleet, Policy
from tools.sim.sim_model import RECENT_USED
from tools.sim.world import World

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


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
            # the route shown so far, if the cab can still drive it: the agent's hysteresis
            # (agent.planner.stability) keeps it unless the new read-out is clearly better,
            # and the cab at the end of its link is committed to the next one
            previous = None
            if got is not None and got[1] and got[1][0] in self.world.succ[link]:
                previous = got[1]
            got = (key, self._read_route(taxi, link, t_s, previous))
            self.routes[taxi] = got
        route = got[1]
        if route and route[0] in self.world.succ[link] and ok[route[0]]:
            return route.pop(0)
        self.routes.pop(taxi, None)
        return policy_step(self._base_table(taxi), link, t_s - self.t0, None)

    def _read_route(
        self, taxi: int, link: int, t_s: float, previous: Sequence[int] | None
    ) -> list[int]:
        """The route of agent.planner.plan_from_table (the driver's plan), without the
        coordinates and directions it shows or the hysteresis' figures
        (agent.planner.plan.route_only_from_table), read from the end of ``link`` at ``t_s``;
        ``previous``: the route shown before (local links of the world's graph) for the
        hysteresis."""
        table = self._table_for(taxi, t_s)
        g = self.world.graph
        same = table.prep.graph is g  # (the shared table's links are the world's)
        return route_only_from_table(
            table,
            int(g.edge_id[link]),
            1.0,  # decided at the end of the link
            self.world.minute_at(t_s),
            self.world.params,
            previous_route=None if same or not previous else [int(x) for x in g.edge_id[previous]],
            committed_links=1 if previous else 0,
            spread=self._spread_for(taxi, t_s),
            previous_links=(previous or ()) if same else None,
        )

    def _spread_for(self, taxi: int, t_s: float) -> Spread | None:
        """The read-out's spread of this cab at ``t_s`` (None here: ``argmax Q``)."""
        return None

    def _base_table(self, taxi: int, count: bool = False) -> ValueTable:
        """The table solved for this cab at the tick (the shared one; with a demand model
        and recent inputs: the one of the snapshot the cab had; ``count``: a read-out, counted
        in :meth:`stats`)."""
        assert self.table is not None
        return self.table

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
    ``live=False`` is the fleet offline (no snapshot ever, the prior only).

    ``model``: the demand is the world's cell model's (:mod:`tools.sim.sim_model`): the shared
    table is solved with the model asked offline (statistics, by its design), and a cab whose
    snapshot (the one it had fetched at the tick, ``t0``) gives recent inputs
    (:func:`agent.tick_recent.tick_recent`) reads its route from the table solved with them,
    one per (snapshot version, tick) shared by the cabs that had that snapshot. The live
    layer then counts per cell what the fleet server sees (meter pickups; under dispatch every
    request). :meth:`stats` counts the read-outs by the recent inputs they had (``used``) or
    why not (a ``RECENT_*`` reason)."""

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
        model: bool = False,
    ):
        super().__init__(world, allowed, rng, m)
        self.every_link = every_link
        self.use_model = model
        self.live: LiveLayer | None = None
        if model:
            sim = world.model
            if sim is None:
                raise ValueError("a +model policy needs the world's demand model (--model)")
            counts = "requests" if world.config.matching == "dispatch" else "pickups"
            if live:
                self.live = LiveLayer(world, n_cabs, seed, grid=sim.grid, counts=counts)
            self.live_pickups_per_hail = sim.live_pickups_per_hail(world, counts, n_cabs)
            self._lb = sim.bundle(world, self.live_pickups_per_hail)
        elif live:
            self.live = LiveLayer(world, n_cabs, seed)
        # with the model: the recent inputs per snapshot version, the tables solved with them
        # at the current tick (by version), the tick's supply, and the counts of :meth:`stats`
        self._recent: dict[int, tuple[RecentCounts | None, dict[str, Any]]] = {}
        self._tables: dict[int, ValueTable] = {}
        self._supply_t0: F64 | None = None
        self.recent_reasons: Counter[str] = Counter()
        self.expected_60m: list[float] = []  # per snapshot asked: tick_recent's expectation
        self.solves = 0
        self.recent_solves = 0
        self.prior = supply_prior(world, multiplier=m, policy=prior_policy) if prior else None
        self._counts: dict[int, _Counts] = {}  # by snapshot version
        self._readouts: dict[tuple[int, int], SnapshotReadout] = {}  # by (table, version)
        self.edge_ids = world.graph.edge_id
        self.own_passes: dict[int, dict[int, float]] = {}
        self._oldest_pass: dict[int, float] = {}  # per cab: see _note_own_pass
        self.seed = seed
        #: the read-out's spread without a snapshot: the world's, as the bundle gives it
        self.spread_eps = world.params.route_spread_eps
        self._salts: dict[int, int] = {}

    def _read_key(self, taxi: int, t_s: float) -> object:
        # every_link: the route is read again at every junction (the agent's tick, every few
        # seconds, with its hysteresis), not only at each new table
        return t_s if self.every_link else self.t0

    def _note_own_pass(self, taxi: int, link: int, t_s: float) -> None:
        """The cab's own vacant pass (the agent's ``last_pass_age_s``): a curb it drained holds
        fewer hails when its read-out comes back to it; passes older than the patience go."""
        mine = self.own_passes.setdefault(taxi, {})
        mine[link] = t_s
        if len(mine) > 64:
            cut = t_s - self.world.params.patience_s
            # (the oldest pass kept at the last pruning: none older came since, the clock
            # only goes on; nothing to drop while it is within the patience)
            if self._oldest_pass.get(taxi, -math.inf) < cut:
                for k in [k for k, v in mine.items() if v < cut]:
                    del mine[k]
                self._oldest_pass[taxi] = min(mine.values())

    def choose(self, taxi: int, link: int, t_s: float, fleet: Fleet) -> int:
        self._note_own_pass(taxi, link, t_s)
        return super().choose(taxi, link, t_s, fleet)

    def _spread_for(self, taxi: int, t_s: float) -> Spread | None:
        """As the agent does it (:func:`agent.planner.spread_of`): with the world's
        ``route_spread_eps`` > 0 and no snapshot fetched by this cab, its read-out spreads,
        with a salt of its own (the run's seed and the cab: :func:`sim_salt`)."""
        eps = self.spread_eps
        if eps <= 0.0 or (self.live is not None and self.live.seen_by(taxi, t_s)[0] is not None):
            return None
        return Spread(eps, self.salt_of(taxi))

    def salt_of(self, taxi: int) -> int:
        """This cab's spread salt (:func:`sim_salt` of the run's seed and the cab), kept."""
        salt = self._salts.get(taxi)
        if salt is None:
            salt = self._salts[taxi] = sim_salt(self.seed, taxi)
        return salt

    def reset_taxi(self, taxi: int) -> None:
        super().reset_taxi(taxi)
        self.own_passes.pop(taxi, None)
        self._oldest_pass.pop(taxi, None)

    def _planned_per_h(self, t_s: float) -> F64 | None:
        """The others' planned passes as supply per hour on each link, from the snapshot
        before the newest (what the cabs have fetched by now: 30 to 60 s old; none once it
        has expired: :meth:`LiveLayer.fleet_snapshot`)."""
        snap = None if self.live is None else self.live.fleet_snapshot(t_s)
        if snap is None:
            return None
        _, planned = snap.link_counts(self.edge_ids)
        return np.asarray(planned, dtype=np.float64) * (3600.0 / CLAIM_HORIZON_S)

    def _solve(self, t_s: float, fleet: Fleet) -> ValueTable:
        """The shared table: background supply = the prior plus, live, every cab's planned
        passes (the agent's own solve leaves its own route out; one table for the whole fleet
        cannot, so here a cab's own route weighs on it too)."""
        w = self.world
        minute = w.minute_at(t_s)
        # with the model, offline: no recent inputs (statistics, by the model's design)
        demand = w.tick_demand(minute, self.multiplier, model=self.use_model)
        supply = self.prior.rates(w.graph.edge_id, minute) if self.prior is not None else None
        planned = self._planned_per_h(t_s)
        if planned is not None:
            supply = planned if supply is None else supply + planned
        if self.use_model:
            self._supply_t0 = supply
            self._tables.clear()
        self.solves += 1
        return solve(w.graph, demand, minute, w.params, supply_per_h=supply)

    def _base_table(self, taxi: int, count: bool = False) -> ValueTable:
        """With the model: the table of the snapshot this cab had fetched at the tick (``t0``)
        when it gives recent inputs, else the shared one (class docs)."""
        assert self.table is not None
        if not self.use_model:
            return self.table
        snap = None if self.live is None else self.live.seen_by(taxi, self.t0)[0]
        if snap is None:
            self.recent_reasons[RECENT_NO_SNAPSHOT] += count
            return self.table
        got = self._recent.get(snap.version)
        if got is None:
            sim = self.world.model
            assert sim is not None  # checked in __init__
            got = self._recent[snap.version] = sim.recent(self._lb, self.world, snap)
            expected = got[1].get("expected_fleet_pickups_60m")
            if expected is not None:
                self.expected_60m.append(float(expected))
            for v in [v for v in self._recent if v < snap.version - 3]:
                del self._recent[v]
        recent, rec = got
        if recent is None:
            self.recent_reasons[str(rec.get("reason", ""))] += count
            return self.table
        self.recent_reasons[RECENT_USED] += count
        table = self._tables.get(snap.version)
        if table is None:
            w = self.world
            minute = w.minute_at(self.t0)
            demand = w.tick_demand(minute, self.multiplier, model=True, recent=recent)
            table = solve(w.graph, demand, minute, w.params, supply_per_h=self._supply_t0)
            self._tables[snap.version] = table
            self.recent_solves += 1
        return table

    def stats(self) -> dict[str, Any]:
        if not self.use_model:
            return {}
        return {
            "readouts_by_recent": {k: v for k, v in sorted(self.recent_reasons.items()) if v},
            "solves_offline": self.solves,
            "solves_with_recent": self.recent_solves,
            "live_pickups_per_hail": self.live_pickups_per_hail,
            "expected_fleet_pickups_60m": [min(self.expected_60m), max(self.expected_60m)]
            if self.expected_60m
            else None,
            "live_counts": None if self.live is None else self.live.counts,
        }

    def _table_for(self, taxi: int, t_s: float) -> ValueTable:
        base = self._base_table(taxi, count=True)
        mine = self.own_passes.get(taxi)
        if self.live is None:
            snap = None
        else:
            snap, own_link, own_route = self.live.seen_by(taxi, t_s)
        if snap is None:
            if not mine:
                return base
            view = FleetView("none", seen_age_s=self._own_ages(mine, t_s, None))
            return with_fleet(base, view, seen_offset_s=t_s - self.t0)
        # the cabs' fetch delays differ, so two snapshots are in use at once: keep both; and
        # per (table, snapshot) the claims of the whole snapshot, computed once for its cabs
        # (with_fleet of fleet_view, the same bits: agent.planner.fleet.SnapshotReadout)
        counts = self._counts.get(snap.version)
        if counts is None:
            counts = self._counts[snap.version] = _Counts(snap, self.edge_ids)
            for v in [v for v in self._counts if v < snap.version - 3]:
                del self._counts[v]
        readout = self._readouts.get((id(base), snap.version))
        if readout is None or readout.table is not base:
            readout = SnapshotReadout(base, counts)
            self._readouts[(id(base), snap.version)] = readout
            while len(self._readouts) > 8:
                del self._readouts[next(iter(self._readouts))]
        return readout.table_for(t_s, own_link, own_route, mine, seen_offset_s=t_s - self.t0)

    def _own_ages(self, mine: dict[int, float], t_s: float, seen: F64 | None) -> F64:
        ages = np.full(self.world.n, np.inf) if seen is None else seen.copy()
        for f, t in mine.items():
            ages[f] = min(ages[f], t_s - t)
        return ages


def sim_salt(seed: int, cab: int) -> int:
    """A simulated cab's spread salt (the agent's is its ``vehicle_id``'s): one per run seed
    and cab, the same on every run."""
    return spread_salt_of(f"sim/{seed}/{cab}")
