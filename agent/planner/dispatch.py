r"""The pickup term under app dispatch (``PlannerParams.matching == "dispatch"``).

Under street hail a vacant cab is paid for *passing* a waiting passenger (the MDP of
:mod:`agent.planner`: ``P_f = 1 − exp(−λ_f (τ_f + W_f)/3600)``). Under dispatch (COMSET's rule,
the simulator's ``--matching dispatch``) a request is sent, when it appears, to the vacant cab
that reaches it soonest; nobody waits at the curb for a cab that happens by. A cab is then paid
for being the *nearest* vacant cab to where requests appear, so the term of link ``l`` is built
from the requests around ``l``, not on it.

Catchment
---------
``R(l)``: the links ``j`` a cab at the end of ``l`` reaches within ``dispatch_reach_s`` seconds
of cruising (``d(l, j) ≤ R``, ``d`` the fastest path over cruisable links at the planner's
cruising speed; ``l ∈ R(l)``, ``d(l, l) = 0``). It is a sparse 0/1 matrix ``M`` (with ``d`` on
the same pattern), built once per prepared graph (:func:`catchment`, scipy's Dijkstra with a
limit, a block of sources at a time).

Assignment
----------
Requests appear in ``R(l)`` at ``Λ_l(t) = Σ_{j ∈ R(l)} λ_j(t)`` per hour. The other vacant cabs
competing for them are those in the same catchment: a link with ``ν_j`` vacant passes per hour
(``competing_vacant_per_h`` plus the solve's ``supply_per_h``: the supply prior, the live
snapshot's planned passes) holds ``ν_j τ_j / 3600`` vacant cabs on average, so
``N_l = Σ_{j ∈ R(l)} ν_j τ_j / 3600``. Each request goes to one of the cabs there; with this cab
and a Poisson number of others of mean ``N_l``, equally likely to be nearest, this cab's share is
``E[1/(1 + N)] = (1 − e^{−N_l}) / N_l`` (1 when ``N_l = 0``). So a cab driving ``f`` for ``τ_f``
is assigned with probability

    P_f(t) = 1 − exp( −Λ_f(t) · (1 − e^{−N_f}) / N_f · τ_f / 3600 )

with no curb window (``W = 0``: a request does not wait for a passing cab, so a recent pass does
not deplete it either). The trip it is sent to is a request of the catchment, weighted by its
rate: fare ``F'_l = Σ_j λ̄_j F_j / Σ_j λ̄_j``, the cab busy ``D'_l = Σ_j λ̄_j (d(l, j) + D_j) /
Σ_j λ̄_j`` (the drive to the passenger, then her trip), and the drop-off distribution of the
cell that holds the catchment's busiest link (``λ̄``: the mean over the tick's slots). The rest
of the MDP (the continuation after the drop-off, the layers, the read-out) is unchanged: the
term enters it as a :class:`AssignedDemand`, a ``TickDemand`` with these rates, fares, times and
cells on every link with requests in its catchment, whose ``curb_wait`` is off
(:func:`agent.planner.terms._pickup_probability`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from models.demand import TickDemand

if TYPE_CHECKING:
    import scipy.sparse as sp

    from agent.planner.core import Prepared

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: sources per Dijkstra block (a dense block of ``BLOCK × n`` distances at a time)
BLOCK = 256


@dataclass(frozen=True, eq=False)
class AssignedDemand(TickDemand):
    """A ``TickDemand`` as a dispatched cab meets it (module docstring): ``pickups_per_h`` is the
    rate at which a cab on the link is *assigned* a request, ``fare_mean`` / ``trip_duration_s``
    / ``cell`` those of the requests it is sent to; ``curb_wait`` False: ``W = 0``."""

    curb_wait: bool = False


@dataclass(frozen=True, eq=False)
class Catchment:
    """``R(l)`` for every local link ``l`` of a prepared graph: ``within`` (CSR, ``n × n``, 1 where
    ``j ∈ R(l)``) and ``time_s`` (same pattern: ``d(l, j)`` in seconds, 0 on the diagonal)."""

    prep: Prepared
    reach_s: float
    within: sp.csr_matrix
    time_s: sp.csr_matrix

    @property
    def sizes(self) -> I64:
        """``|R(l)|`` per link."""
        return np.asarray(np.diff(self.within.indptr), dtype=np.int64)


#: a few recent catchments (strong references, bounded like core's prepared graphs)
_CATCHMENTS: OrderedDict[tuple[int, float], Catchment] = OrderedDict()
_CATCHMENTS_MAX = 4


def catchment(prep: Prepared, reach_s: float) -> Catchment:
    """The catchments of ``prep``'s links within ``reach_s`` seconds (cached per prepared graph
    and reach). The cab at the end of ``l`` enters cruisable links only (``prep.cruisable``,
    the static flags and the business area; the no-entry windows are left out: the catchment
    is built once per graph)."""
    key = (id(prep), float(reach_s))
    hit = _CATCHMENTS.get(key)
    if hit is not None and hit.prep is prep:
        _CATCHMENTS.move_to_end(key)
        return hit
    import scipy.sparse as sp
    from scipy.sparse.csgraph import dijkstra

    n = prep.n
    lg = prep.graph.line_graph(prep.tau_s, prep.cruisable)
    indptr = np.zeros(n + 1, dtype=np.int64)
    cols: list[I64] = []
    times: list[F64] = []
    for lo in range(0, n, BLOCK):
        src = np.arange(lo, min(lo + BLOCK, n), dtype=np.int64)
        dist = np.asarray(dijkstra(lg, directed=True, indices=src, limit=reach_s))
        dist[np.arange(src.shape[0]), src] = 0.0  # the cab's own link
        rows, js = np.nonzero(dist <= reach_s)
        indptr[src + 1] = np.bincount(rows, minlength=src.shape[0])
        cols.append(js.astype(np.int64))
        times.append(dist[rows, js].astype(np.float64))
    np.cumsum(indptr, out=indptr)
    idx = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    data = np.concatenate(times) if times else np.zeros(0, dtype=np.float64)
    within = sp.csr_matrix((np.ones(idx.shape[0]), idx, indptr), shape=(n, n))
    time_s = sp.csr_matrix((data, idx, indptr), shape=(n, n))
    out = Catchment(prep, float(reach_s), within, time_s)
    _CATCHMENTS[key] = out
    while len(_CATCHMENTS) > _CATCHMENTS_MAX:
        _CATCHMENTS.popitem(last=False)
    return out


def competitor_share(cabs: F64) -> F64:
    """``E[1/(1 + N)]`` for a Poisson ``N`` of mean ``cabs``: ``(1 − e^{−N})/N``, 1 at 0."""
    n = np.asarray(cabs, dtype=np.float64)
    safe = np.where(n > 1e-12, n, 1.0)
    return np.where(n > 1e-12, -np.expm1(-safe) / safe, 1.0)


def assigned_demand(
    prep: Prepared,
    demand: TickDemand,
    reach_s: float,
    competing_vacant_per_h: float,
    supply_per_h: npt.NDArray[np.floating[Any]] | None = None,
) -> AssignedDemand:
    """``demand`` (on any links) as a dispatched cab on each local link of ``prep`` meets it
    (module docstring). ``supply_per_h``: as :func:`agent.planner.solve`'s, aligned with
    ``demand.edge_id``: the other vacant cabs' passes per hour, on top of
    ``competing_vacant_per_h`` on every link. Pure (the catchment is cached)."""
    catch = catchment(prep, reach_s)
    g, n = prep.graph, prep.n
    loc = g.local(demand.edge_id)
    has = loc >= 0
    li = loc[has].astype(np.int64)
    n_slots = int(demand.pickups_per_h.shape[0])
    n_cells = int(demand.dropoff.shape[0])
    rate = np.zeros((n_slots, n), dtype=np.float64)
    rate[:, li] = np.asarray(demand.pickups_per_h, dtype=np.float64)[:, has]
    fare = np.zeros(n, dtype=np.float64)
    fare[li] = np.asarray(demand.fare_mean, dtype=np.float64)[has]
    trip = np.zeros(n, dtype=np.float64)
    trip[li] = np.asarray(demand.trip_duration_s, dtype=np.float64)[has]
    cell = np.full(n, n_cells, dtype=np.int64)
    cell[li] = np.asarray(demand.cell, dtype=np.int64)[has]
    # Λ_l(t) = Σ_{j ∈ R(l)} λ_j(t)
    requests = np.asarray((catch.within @ rate.T).T, dtype=np.float64)
    # N_l = Σ_{j ∈ R(l)} ν_j τ_j / 3600
    nu = np.full(n, competing_vacant_per_h, dtype=np.float64)
    if supply_per_h is not None:
        nu[li] += np.asarray(supply_per_h, dtype=np.float64)[has]
    cabs = np.asarray(catch.within @ (nu * prep.tau_s / 3600.0), dtype=np.float64)
    assigned = requests * competitor_share(cabs)[None, :]
    # the requests it is sent to, weighted by their mean rate λ̄ (matrix-vector products)
    mean_rate = rate.mean(axis=0) if n_slots else np.zeros(n)
    total = np.asarray(catch.within @ mean_rate, dtype=np.float64)
    keep = np.flatnonzero(total > 0)
    tot = total[keep]
    fare_out = np.asarray(catch.within @ (mean_rate * fare))[keep] / tot
    drive = np.asarray(catch.time_s @ mean_rate)[keep]
    trip_out = (np.asarray(catch.within @ (mean_rate * trip))[keep] + drive) / tot
    busiest = _busiest(catch, mean_rate)[keep]
    return AssignedDemand(
        edge_id=np.asarray(g.edge_id[keep], dtype=np.int32),
        slot_minute_of_week=demand.slot_minute_of_week,
        pickups_per_h=np.ascontiguousarray(assigned[:, keep], dtype=np.float32),
        fare_mean=fare_out.astype(np.float32),
        trip_duration_s=trip_out.astype(np.float32),
        cell=cell[busiest].astype(np.int32),
        dropoff=demand.dropoff,
        source=demand.source,
    )


def _busiest(catch: Catchment, rate: F64) -> I64:
    """Per link ``l``, the link of ``R(l)`` with the highest ``rate`` (ties: the lowest index;
    every catchment holds its own link)."""
    m = catch.within
    sizes = np.diff(m.indptr)
    vals = rate[m.indices]
    top = np.maximum.reduceat(vals, m.indptr[:-1])
    rows = np.repeat(np.arange(sizes.shape[0]), sizes)
    pos = np.flatnonzero(vals == top[rows])
    _, first = np.unique(rows[pos], return_index=True)
    return np.asarray(m.indices[pos[first]], dtype=np.int64)
