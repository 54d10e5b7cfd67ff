"""What the planner knows of the rest of the fleet at one tick, and how it uses it.

A cab plans on its own device, so the fleet reaches its plan only through its inputs. Three
sources, best first (:attr:`FleetView.source`):

``live``
    a fresh live snapshot of the area (:mod:`sync.live`): per link, the other vacant cabs on it
    now and the passes the other vacant cabs' routes plan over their next ~2 km. The snapshot's
    counts include this cab's own last heartbeat; :func:`fleet_view` subtracts the link and route
    it reported, so a cab sees the others' plans but not its own (it does not flee its own
    route).
``prior``
    no fresh snapshot (offline, or a refused one): the bundle's supply prior, what the fleet's
    vacant passes per link usually are in this slot (:class:`models.supply.SupplyTable`). A cab
    offline then plans against the usual traffic of empty cabs, not an empty road, so it does
    not herd onto the corridors the whole fleet usually drives.
``none``
    neither: the planner's ``competing_vacant_per_h`` alone (the lone cab of issue 4).

How each enters the plan (docs/planner.md, "The fleet"):

* ``supply_per_h``, the *background* supply: the prior's rate in this slot plus, live, the
  others' planned passes (each counts as ``3600 / claim_horizon_s`` passes per hour on its
  link). It is the solve's ``ν`` (with ``competing_vacant_per_h``): a hail on a link that many
  empty cabs pass or will pass stays available for a shorter ``W``, so a corridor the fleet
  crowds, or is heading for, is worth less over the whole horizon, and the cabs spread.
* ``claims_per_h``, the same planned passes once more in the route read-out
  (:func:`with_fleet`): a link on another vacant cab's route will be passed within minutes, so
  in the next ~2 km the driver is shown it holds fewer hails still. Two cabs at one junction no
  longer read the same street: the second takes the parallel one.

  Measured in the simulator (docs/planner.md, "The fleet"): with the claims in the read-out
  alone the whole fleet earned what hotspot earns; with the planned passes in the values as
  well it earned about twice as much (a thin street-hail market, where covering more curbs is
  what pays). Re-reading the route at every new snapshot instead of at each new table earned
  less (14.4 against 15.6 USD/h): the herd moves less when fewer cabs react at once.
* ``seen_age_s``: a link where another vacant cab is now has just been drained (the curb
  rule of the planner's "Recent passes", the same input as the cab's own passes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agent.planner import cab_c
from agent.planner.cab_view import CabOverlay, CabTable
from agent.planner.core import ValueTable
from tiles.graph import Graph

F64 = npt.NDArray[np.float64]

LIVE = "live"
PRIOR = "prior"
NONE = "none"
#: a pass planned by another cab's route counts as supply over this many seconds: the ~2 km a
#: heartbeat carries take about 5 minutes at Midtown's cruising speed, and a plan is revised
#: at every tick, so a claim is worth about one pass in 10 minutes
CLAIM_HORIZON_S = 600.0


class SnapshotCounts(Protocol):
    """What :func:`fleet_view` reads of a :class:`sync.live.Snapshot` (duck-typed, so that
    importing the planner does not import the sync client). Read-only, as the frozen
    Snapshot's fields are."""

    @property
    def version(self) -> int: ...
    @property
    def built_s(self) -> float: ...
    @property
    def sha256(self) -> str: ...

    def link_counts(self, edge_ids: npt.ArrayLike) -> tuple[Any, Any]: ...


@dataclass(frozen=True, eq=False)
class FleetView:
    """The fleet as the planner sees it at one tick, per local link of the tick's graph (see
    the module docstring). ``None``: nothing known of that kind."""

    source: str
    supply_per_h: F64 | None = None
    claims_per_h: F64 | None = None
    seen_age_s: F64 | None = None
    snapshot_version: int = 0
    snapshot_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        """What the tick log keeps of it (the arrays are inputs recomputed by replay)."""

        def total(a: F64 | None) -> float | None:
            return None if a is None else round(float(np.sum(a)), 3)

        seen = 0 if self.seen_age_s is None else int(np.count_nonzero(np.isfinite(self.seen_age_s)))
        return {
            "source": self.source,
            "snapshot_version": self.snapshot_version,
            "snapshot_sha256": self.snapshot_sha256,
            "supply_per_h_total": total(self.supply_per_h),
            "claims_per_h_total": total(self.claims_per_h),
            "links_seen": seen,
        }


NO_FLEET = FleetView(NONE)


def fleet_view(
    graph: Graph,
    *,
    now_s: float,
    snapshot: SnapshotCounts | None = None,
    own_link: int = -1,
    own_route: Sequence[int] = (),
    prior_per_h: npt.ArrayLike | None = None,
    claim_horizon_s: float = CLAIM_HORIZON_S,
) -> FleetView:
    """The :class:`FleetView` of a tick at ``now_s`` (the clock the snapshot's ``built_s`` is
    on) on ``graph``.

    ``snapshot``: a verified, unexpired live snapshot (None: none fresh); ``own_link`` /
    ``own_route``: the global edge ids this cab reported in its last heartbeat before the
    snapshot was built (subtracted: the snapshot counts every vacant cab, this one too);
    ``prior_per_h``: the supply prior's vacant passes per hour on each local link of ``graph``
    in this slot (None: no prior). Pure."""
    if claim_horizon_s <= 0 or not math.isfinite(claim_horizon_s):
        raise ValueError("claim_horizon_s must be positive")
    prior = None
    if prior_per_h is not None:
        prior = np.asarray(prior_per_h, dtype=np.float64)
        if prior.shape != (graph.n,):
            raise ValueError(f"supply prior has {prior.shape} values for {graph.n} links")
        prior = np.where(np.isfinite(prior), np.maximum(prior, 0.0), 0.0)
    if snapshot is None:
        return FleetView(PRIOR, supply_per_h=prior) if prior is not None else NO_FLEET
    now_raw, planned_raw = snapshot.link_counts(graph.edge_id)
    now = np.asarray(now_raw, dtype=np.float64).copy()
    planned = np.asarray(planned_raw, dtype=np.float64).copy()
    own = int(graph.local([own_link])[0]) if own_link >= 0 else -1
    if own >= 0:
        now[own] = max(now[own] - 1.0, 0.0)
    if len(own_route):
        ids = np.unique(np.asarray(own_route, dtype=np.int64))
        ids = ids[ids != own_link]
        loc = graph.local(ids)
        loc = loc[loc >= 0]
        planned[loc] = np.maximum(planned[loc] - 1.0, 0.0)
    age = max(float(now_s) - float(snapshot.built_s), 0.0)
    seen = np.where(now > 0, age, np.inf)
    claims = planned * (3600.0 / claim_horizon_s)
    has_claims = bool(np.any(claims > 0))
    background = prior
    if has_claims:
        background = claims if prior is None else prior + claims
    return FleetView(
        LIVE,
        supply_per_h=background,
        claims_per_h=claims if has_claims else None,
        seen_age_s=seen if np.any(np.isfinite(seen)) else None,
        snapshot_version=int(snapshot.version),
        snapshot_sha256=str(snapshot.sha256),
    )


def demand_aligned(graph: Graph, per_link: F64 | None, edge_id: npt.ArrayLike) -> F64 | None:
    """A per-local-link array of ``graph`` re-aligned to ``edge_id`` (a demand's links; 0 where
    a link is not in ``graph``), as :func:`agent.planner.solve`'s ``supply_per_h`` wants it."""
    if per_link is None:
        return None
    loc = graph.local(np.asarray(edge_id, dtype=np.int64))
    return np.where(loc >= 0, per_link[np.maximum(loc, 0)], 0.0)


def with_fleet(table: ValueTable, view: FleetView, seen_offset_s: float = 0.0) -> ValueTable:
    """``table`` as the route read-out of this cab sees it (module docstring): the others'
    claimed links hold their hails for a shorter ``W`` (``P`` lower), and the links where another
    vacant cab was seen count as passed ``seen_age_s + seen_offset_s`` seconds before the
    table's start (``seen_offset_s``: the time from the table's start to now, when the table
    was solved earlier; the values themselves are not solved again). The table is unchanged
    where the view has nothing."""
    claims = view.claims_per_h
    seen = view.seen_age_s
    if claims is None and seen is None:
        return table
    changes: dict[str, Any] = {}
    if claims is not None:
        extra = np.asarray(claims, dtype=np.float64)
        # (a link without a curb wait, W = 0 under dispatch, holds no hail to claim: its
        # competitors are in the solve's supply already, agent.planner.dispatch)
        hit = np.flatnonzero((extra > 0) & (table.window_s > 0))
        if hit.size:
            window = table.window_s.copy()
            prob = table.pickup_prob.copy()
            window[hit], prob[:, hit] = _claimed(table, hit, extra[hit])
            changes["window_s"] = window
            changes["pickup_prob"] = prob
    if seen is not None:
        # ages at the table's start: seen now, i.e. seen_age_s before now, now being
        # seen_offset_s after the start (a negative age at the start: passed after it began)
        at_start = np.asarray(seen, dtype=np.float64) - seen_offset_s
        base = table.pass_age_s
        ages = at_start if base is None else np.minimum(base, at_start)
        changes["pass_age_s"] = ages
    return dataclasses.replace(table, **changes) if changes else table


def _claimed(table: ValueTable, hit: npt.NDArray[np.int64], extra: F64) -> tuple[F64, F64]:
    """``W`` and ``P`` (every slot) of the links ``hit`` under ``extra`` claims per hour each:
    the hails a claimed curb holds wait for a shorter ``W`` (:func:`with_fleet`)."""
    window = 1.0 / (1.0 / table.window_s[hit] + extra / 3600.0)
    tau = table.prep.tau_s[hit]
    prob = -np.expm1(-table.rate_h[:, hit] * ((tau + window) / 3600.0))
    return window, prob


class SnapshotReadout:
    """:func:`with_fleet` of :func:`fleet_view` for the many cabs that read their routes from
    one ``table`` with one live ``snapshot`` (the simulator's fleet: thousands a tick).

    The snapshot's claims change ``W`` and ``P`` on most links, the same for every cab but
    where a cab's own route is subtracted: they are computed once here for the whole snapshot,
    and :meth:`table_for` copies them and computes again only the links of the cab's own
    route. The same operations per link as ``with_fleet(table, fleet_view(...))``, so the same
    bits (tests/tools/test_sim_speed_fleet.py compares both). The view's ``supply_per_h``
    (the solve's input, not the read-out's) is not made; no prior."""

    def __init__(
        self,
        table: ValueTable,
        snapshot: SnapshotCounts,
        claim_horizon_s: float = CLAIM_HORIZON_S,
    ) -> None:
        if claim_horizon_s <= 0 or not math.isfinite(claim_horizon_s):
            raise ValueError("claim_horizon_s must be positive")
        self.table = table
        self.snapshot = snapshot
        self._graph = graph = table.prep.graph
        now_raw, planned_raw = snapshot.link_counts(graph.edge_id)
        self._now = np.asarray(now_raw, dtype=np.float64)
        self._planned = np.asarray(planned_raw, dtype=np.float64)
        self._scale = 3600.0 / claim_horizon_s
        self._vacant = self._now > 0
        self._vacant_u8 = self._vacant.view(np.uint8)
        self._n_vacant = int(np.count_nonzero(self._vacant))
        self._built_s = float(snapshot.built_s)
        claims = self._planned * self._scale
        self._window: F64 | None = None
        self._prob: F64 | None = None
        # the whole snapshot's claims (cabs whose own route claims nothing read them as they are)
        if bool(np.any(claims > 0)):
            hit = np.flatnonzero((claims > 0) & (table.window_s > 0))
            if hit.size:
                window = table.window_s.copy()
                prob = table.pickup_prob.copy()
                window[hit], prob[:, hit] = _claimed(table, hit, claims[hit])
                # shared by the tables of every cab whose own route claims nothing: read-only
                window.flags.writeable = False
                prob.flags.writeable = False
                self._window, self._prob = window, prob
        # one cab's overlay in C where the walk runs (the same bits as _overlay's numpy)
        self._cab = cab_c.cab_inputs(
            graph.global_to_local, self._planned, self._vacant_u8, self._scale,
            self._window is not None, table,
            self._window if self._window is not None else table.window_s,
            self._prob if self._prob is not None else table.pickup_prob,
        )  # fmt: skip

    def table_for(
        self,
        now_s: float,
        own_link: int = -1,
        own_route: Sequence[int] = (),
        own_passes: dict[int, float] | None = None,
        seen_offset_s: float = 0.0,
    ) -> ValueTable:
        """``with_fleet(table, view, seen_offset_s)`` of the :func:`fleet_view` at ``now_s``
        with this cab's ``own_link`` and ``own_route`` (global ids, as there), its seen ages
        lowered to ``now_s - t`` where ``own_passes`` (local link -> the time ``t`` this cab
        last passed it, on ``now_s``'s clock) makes them lower (a cab's own recent passes,
        the curbs it drained itself).

        A :class:`CabTable`: the cab's ``W``, ``P`` and pass ages differ from the snapshot's
        shared ones on a few links only (its own route and passes), so they are kept as those
        links' values (:class:`CabOverlay`) and made whole only when read; the C read-out
        (:mod:`agent.planner.walk_c`) reads the overlay itself."""
        table = self.table
        graph = self._graph
        own_local = graph.local_index(int(own_link)) if own_link >= 0 else -1
        alone = (
            own_local >= 0
            and bool(self._vacant[own_local])
            and max(float(self._now[own_local]) - 1.0, 0.0) <= 0
        )
        age = max(float(now_s) - self._built_s, 0.0)
        # (fleet_view keeps the ages if one is finite: a non-finite age is none)
        n_vacant = self._n_vacant - (1 if alone else 0) if math.isfinite(age) else 0
        seen = n_vacant > 0 or bool(own_passes)
        got: tuple[F64, int, int, int, int | None] | None = None
        if self._cab is not None:
            got = cab_c.cab_overlay(
                self._cab, own_route, int(own_link), own_passes, own_local if alone else -1,
                seen, float(now_s), age,
            )  # fmt: skip
        if got is None:
            got = self._overlay(
                own_route, int(own_link), own_passes, own_local, alone, seen, now_s, age
            )
        buf, n_links, k, m, at = got
        ov = CabOverlay(
            self._window if self._window is not None else table.window_s,
            self._prob if self._prob is not None else table.pickup_prob,
            self._vacant_u8 if seen else None,
            age,
            float(seen_offset_s),
            table.pass_age_s,
            buf,
            n_links,
            k,
            m,
            None if self._cab is None else self._cab.shared,
            at,
            base=table,
        )
        return CabTable.of(table, ov)

    def _overlay(
        self,
        own_route: Sequence[int],
        own_link: int,
        own_passes: dict[int, float] | None,
        own_local: int,
        alone: bool,
        seen: bool,
        now_s: float,
        age: float,
    ) -> tuple[F64, int, int, int, int | None]:
        """:func:`agent.planner.cab_c.cab_overlay` in numpy (where the C walk does not run):
        the links and values of this cab's :class:`CabOverlay`."""
        table = self.table
        claim_links, claim_w, claim_p = _NO_LINKS, _NO_VALUES, np.zeros((table.rate_h.shape[0], 0))
        # the claims: the snapshot's, but the cab's own route's links (its own heartbeat)
        if self._window is not None and len(own_route):
            ids = np.asarray(own_route, dtype=np.int64)
            idx = self._graph.local(ids[ids != own_link]).astype(np.int64)
            idx = idx[idx >= 0]
            idx = idx[self._planned[idx] > 0]  # a link the snapshot does not claim is left
            if idx.size:
                idx = np.unique(idx)  # (a link twice on the route has one value)
                extra = np.maximum(self._planned[idx] - 1.0, 0.0) * self._scale
                claim_w = table.window_s[idx]  # only this cab claimed it: the table's own
                claim_p = table.pickup_prob[:, idx]
                claimed = (extra > 0) & (claim_w > 0)
                if bool(claimed.any()):
                    claim_w[claimed], claim_p[:, claimed] = _claimed(
                        table, idx[claimed], extra[claimed]
                    )
                claim_links = idx
        # the seen ages of the cab's own link (none: it is the cab) and of its own passes (the
        # lower of the two), as fleet_view and the simulator's passes give them
        pass_links, pass_seen = _NO_LINKS, _NO_VALUES
        if seen and (alone or own_passes):
            count = len(own_passes) if own_passes else 0
            links, ages = _NO_LINKS, _NO_VALUES
            if own_passes:
                links = np.fromiter(own_passes.keys(), dtype=np.int64, count=count)
                ages = float(now_s) - np.fromiter(own_passes.values(), np.float64, count=count)
            if alone and not (own_passes and own_local in own_passes):
                links = np.append(links, own_local)  # (its age against inf: none)
                ages = np.append(ages, np.inf)
            order = np.argsort(links, kind="stable")
            links, ages = links[order], ages[order]
            at = np.where(self._vacant[links], age, np.inf)
            if alone:
                at[links == own_local] = np.inf
            pass_links, pass_seen = links, np.minimum(at, ages)
        k, m = claim_links.shape[0], pass_links.shape[0]
        links = np.concatenate([claim_links, pass_links]).astype(np.int64)
        vals = np.concatenate([claim_w, claim_p.ravel(), pass_seen]).astype(np.float64)
        return np.concatenate([links.view(np.float64), vals]), k + m, k, m, None


_NO_LINKS = np.zeros(0, dtype=np.int64)
_NO_VALUES = np.zeros(0, dtype=np.float64)
