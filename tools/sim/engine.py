"""The event loop of one simulated shift: cabs traverse links, meet waiting passengers, drive
them, and choose where to cruise with their policy.

Two matching rules (``SimConfig.matching``). ``hail`` (street hail):

The fleet is ``taxis`` cabs: the first ``test_taxis`` drive the policy under test, the others
the background (reference) policy the demand was calibrated with, i.e. the drivers the trip
records came from. Metrics are those of the test cabs. (With ``test_taxis == taxis`` the whole
fleet drives the policy under test.)

a vacant cab that finishes link ``e`` (entered at ``t_in``, left at ``t``) takes the passenger
of ``e`` who arrived first among those still waiting at some moment of its traversal
(``arrive <= t`` and ``arrive + patience >= t_in``, not taken): first come, first served among
passengers, and the first cab to finish the link wins. The cab is occupied until the drop-off,
where it is vacant again at the start of the drop-off link (after an outside trip: empty for as
long again, then on a link near the area's edge). A cab with no allowed successor waits
``dead_end_wait_s`` where it is, then, if still stuck, comes back on a link near the edge.

``dispatch`` (app dispatch, the rule of COMSET, the ACM SIGSPATIAL GIS Cup 2019): when a
passenger appears, the vacant cab that can reach her link soonest (the rest of its current link,
then the fastest legal path; ties to the lower cab index) is sent if it arrives within
``max_wait_s``; otherwise she waits (``max_wait_s`` after her appearance she expires), and a cab
that becomes vacant after a drop-off is sent to the waiting passenger it reaches soonest in
time. Dispatched cabs do not take street hails, and a cruising cab is not re-matched on the way
(COMSET assigns at those two moments only).

Measures (``RunResult``): revenue, pickups and occupancy of the test cabs (and revenue and time
occupancy of the whole fleet); COMSET's search time (from becoming vacant to the pickup, per
pickup of a test cab), wait time (from appearing to the pickup, same pickups) and expiration
share (passengers of the shift never picked up, whose patience ran out within it, over those
who appeared).
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import dijkstra

from tools.sim.policies import Allowed, Policy, make_policy, path_to
from tools.sim.world import Passengers, World

END, DROP, PICK, ARRIVE, LIVE = 0, 1, 2, 3, 4
START, CRUISE, DROPOFF, RELOCATE, DISPATCHED = "start", "cruise", "dropoff", "relocate", "dispatch"
VACANT, ENROUTE, OCCUPIED = 0, 1, 2


@dataclass(frozen=True)
class RunResult:
    policy: str
    seed: int
    revenue_per_h: float  # per test cab
    pickups_per_h: float  # per test cab
    occupied_share: float  # occupied distance / distance driven (実車率)
    empty_km_per_pickup: float
    passengers: int
    served: int  # by the whole fleet
    stuck: int  # dead-end waits of the test cabs
    background_vacant_passes_per_link_h: float  # supply of the background fleet
    occupied_time_share: float  # test cabs: occupied time / shift time
    search_time_s: float  # test cabs: mean time from becoming vacant to a pickup
    wait_time_s: float  # passengers of the test cabs: mean time from appearing to the pickup
    expired: int  # passengers of the shift never picked up whose patience ran out in it
    taxis: int
    test_taxis: int
    fleet_revenue_per_h: float  # per cab of the whole fleet
    fleet_occupied_time_share: float  # the whole fleet
    #: per test cab: (link, kind, time entered) with kind one of CRUISE (chosen by the policy),
    #: DROPOFF (driven occupied to that link), RELOCATE (back from a dead end), START
    tracks: tuple[tuple[tuple[int, str, float], ...], ...] = field(default=(), repr=False)
    pickups: tuple[int, ...] = field(default=(), repr=False)  # links of test cabs' pickups
    #: what the policy under test counted (its ``stats()``, e.g. nagashi-agent's ticks and
    #: fallbacks; empty when it counts nothing) and the CPU seconds of the shift (this
    #: process's, after the policies were made)
    policy_stats: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    cpu_s: float = field(default=0.0, repr=False, compare=False)

    def metrics(self) -> dict[str, float]:
        return {
            "revenue_per_h": self.revenue_per_h,
            "pickups_per_h": self.pickups_per_h,
            "occupied_share": self.occupied_share,
            "empty_km_per_pickup": self.empty_km_per_pickup,
            "served_share": self.served / self.passengers if self.passengers else 0.0,
            "occupied_time_share": self.occupied_time_share,
            "search_time_s": self.search_time_s,
            "wait_time_s": self.wait_time_s,
            "expired_share": self.expired / self.passengers if self.passengers else 0.0,
            "fleet_revenue_per_h": self.fleet_revenue_per_h,
            "fleet_occupied_time_share": self.fleet_occupied_time_share,
        }


class _Fleet:
    """Vacant passes of the test cabs (the own fleet, what its server knows), in time order."""

    def __init__(self, n_links: int) -> None:
        self.times: list[float] = []
        self.links: list[int] = []
        self.last_pass_s = np.full(n_links, -np.inf)

    def add(self, t: float, link: int) -> None:
        self.times.append(t)
        self.links.append(link)
        self.last_pass_s[link] = t

    def vacant_passes(self, since_s: float) -> npt.NDArray[np.int64]:
        i = bisect.bisect_left(self.times, since_s)
        return np.asarray(self.links[i:], dtype=np.int64)


def start_links(world: World, seed: int) -> list[int]:
    """Where the cabs start (the same for every policy of a seed)."""
    rng = np.random.default_rng([seed, 0x57A27])
    cand = np.flatnonzero(world.cruisable)
    return [int(x) for x in cand[rng.integers(0, cand.size, world.config.taxis)]]


def run_shift(
    world: World,
    pax: Passengers,
    policy_name: str,
    seed: int,
    multiplier: float,
    record: bool = False,
    test_taxis: int | None = None,
    starts: list[int] | None = None,
    passes: list[tuple[float, int]] | None = None,
) -> RunResult:
    """One shift of ``world.config.taxis`` cabs, the first ``test_taxis`` on ``policy_name``;
    ``starts``: their starting links (default: :func:`start_links` of the seed); ``passes``:
    if given, every vacant pass of every cab is appended to it as ``(t_s, local link)``.

    A policy with a live layer (``policy.live``, :class:`tools.sim.live.LiveLayer`) gets it
    driven at its cadence: at every heartbeat time the test cabs' links, vacancy and routes
    (``policy.route_of``), and every pickup of a test cab as a meter event."""
    cfg = world.config
    dispatch = cfg.matching == "dispatch"
    n_taxis = cfg.taxis
    n_test = min(cfg.test_taxis if test_taxis is None else test_taxis, n_taxis)
    shift = world.shift_s
    tau = world.tau_s.tolist()
    length = world.length_m.tolist()
    allowed = Allowed(world)
    policy = make_policy(policy_name, world, allowed, seed, multiplier, n_test)
    background: Policy = (
        policy
        if policy_name == cfg.calibrate_with
        else make_policy(cfg.calibrate_with, world, allowed, seed + 7919, multiplier)
    )
    cab_policy = [policy if i < n_test else background for i in range(n_taxis)]
    cpu0 = time.process_time()  # the shift, not the policies' setup (a supply prior)
    rng = np.random.default_rng([seed, 0xDEAD])
    band = world.edge_band
    off = pax.offsets.tolist()
    p_link = pax.link.tolist()
    arrive = pax.arrive_s.tolist()
    leave = pax.leave_s.tolist()
    fare = pax.fare.tolist()
    duration = pax.duration_s.tolist()
    distance = pax.distance_m.tolist()
    drop_link = pax.dropoff_link.tolist()
    outside = pax.outside.tolist()
    taken = bytearray(pax.count)

    links = list(starts) if starts is not None else start_links(world, seed)
    if len(links) != n_taxis:
        raise ValueError(f"{len(links)} starting links for {n_taxis} cabs")
    t_in = [0.0] * n_taxis
    stuck_once = [False] * n_taxis
    fleet = _Fleet(world.n)
    # dispatch: who is vacant where, and when its current link ends (numpy, for the search)
    state = np.full(n_taxis, VACANT, dtype=np.int8)
    at_link = np.asarray(links, dtype=np.int64)
    link_end = np.asarray([tau[e] for e in links], dtype=np.float64)
    version = [0] * n_taxis
    enroute = [-1] * n_taxis
    waiting: list[int] = []  # dispatch: passengers no cab could reach yet, in arrival order
    heap: list[tuple[float, int, int, int]] = [(tau[links[i]], i, END, 0) for i in range(n_taxis)]
    if dispatch:
        heap += [(arrive[j], n_taxis + j, ARRIVE, 0) for j in range(pax.count) if arrive[j] < shift]
    live = getattr(policy, "live", None)
    if live is not None:
        heap.append((0.0, -1, LIVE, 0))
    heapq.heapify(heap)
    vacant_since = [0.0] * n_taxis
    cab_revenue = [0.0] * n_taxis
    cab_occupied_s = [0.0] * n_taxis
    pickups = 0
    served = 0
    occ_m = 0.0
    empty_m = 0.0
    stuck = 0
    bg_passes = 0
    search_s = 0.0
    wait_s = 0.0
    tracks: list[list[tuple[int, str, float]]] = [[(links[i], START, 0.0)] for i in range(n_test)]
    picked_links: list[int] = []

    def pick_up(i: int, j: int, t_pick: float) -> None:
        nonlocal served, pickups, occ_m, empty_m, search_s, wait_s
        taken[j] = 1
        served += 1
        if live is not None and i < n_test:
            live.pickup(t_pick, p_link[j])
        t_free = t_pick + duration[j]
        cab_occupied_s[i] += max(min(t_free, shift) - t_pick, 0.0)
        cab_revenue[i] += fare[j]
        if outside[j]:
            t_free += duration[j]
        if i < n_test:
            pickups += 1
            occ_m += distance[j]
            search_s += t_pick - vacant_since[i]
            wait_s += t_pick - arrive[j]
            if outside[j]:
                empty_m += distance[j]
            if record:
                picked_links.append(p_link[j])
                tracks[i].append((drop_link[j], DROPOFF, t_free))
        links[i] = drop_link[j]
        stuck_once[i] = False
        state[i] = OCCUPIED
        version[i] += 1
        heapq.heappush(heap, (t_free, i, DROP, version[i]))

    def send(i: int, j: int, t: float, reach: float, path: list[int]) -> None:
        """Dispatch: cab ``i`` (vacant, on ``links[i]``) to passenger ``j`` along ``path``."""
        nonlocal empty_m
        if j in waiting:
            waiting.remove(j)
        taken[j] = 1  # reserved
        state[i] = ENROUTE
        enroute[i] = j
        version[i] += 1
        if i < n_test:
            empty_m += length[links[i]] + sum(length[f] for f in path)
            if record:
                tracks[i].extend((f, DISPATCHED, t) for f in path)
        heapq.heappush(heap, (t + reach, i, PICK, version[i]))

    while heap:
        t, i, kind, ver = heapq.heappop(heap)
        if t >= shift:
            continue
        if kind == LIVE:
            assert live is not None
            live.tick(
                t,
                links[:n_test],
                [bool(state[c] == VACANT) and not stuck_once[c] for c in range(n_test)],
                [policy.route_of(c) for c in range(n_test)],
            )
            heapq.heappush(heap, (t + live.heartbeat_s, -1, LIVE, 0))
            continue
        if kind == ARRIVE:
            j = i - n_taxis
            p = p_link[j]
            vac = np.flatnonzero(state == VACANT)
            if vac.size:
                dist, pred = dijkstra(
                    allowed.line_graph(t, reverse=True),
                    directed=True,
                    indices=p,
                    return_predecessors=True,
                    limit=cfg.max_wait_s,
                )
                reach = np.maximum(link_end[vac] - t, 0.0) + dist[at_link[vac]]
                k = int(np.argmin(reach))
                if reach[k] <= leave[j] - t:
                    c = int(vac[k])
                    path: list[int] = []
                    x = links[c]
                    while x != p:
                        x = int(pred[x])
                        path.append(x)
                    send(c, j, t, float(reach[k]), path)
                    continue
            waiting.append(j)
            continue
        if ver != version[i]:
            continue  # superseded (the cab was dispatched)
        test = i < n_test
        if kind == PICK:
            j = enroute[i]
            enroute[i] = -1
            pick_up(i, j, t)
            continue
        if kind == DROP:
            t_in[i] = t
            vacant_since[i] = t
            state[i] = VACANT
            at_link[i] = links[i]
            cab_policy[i].reset_taxi(i)
            if dispatch and waiting:
                waiting[:] = [j for j in waiting if leave[j] >= t]
                if waiting:
                    dist, pred = dijkstra(
                        allowed.line_graph(t),
                        directed=True,
                        indices=links[i],
                        return_predecessors=True,
                        limit=cfg.max_wait_s,
                    )
                    best = -1
                    best_reach = math.inf
                    for j in waiting:
                        r = tau[links[i]] + float(dist[p_link[j]])
                        if r < best_reach and t + r <= leave[j]:
                            best, best_reach = j, r
                    if best >= 0:
                        path = path_to(pred, links[i], p_link[best])
                        send(i, best, t, best_reach, path)
                        continue
            link_end[i] = t + tau[links[i]]
            heapq.heappush(heap, (link_end[i], i, END, version[i]))
            continue
        e = links[i]
        if not stuck_once[i]:
            if test:
                empty_m += length[e]
                fleet.add(t, e)
            else:
                bg_passes += 1
            if passes is not None:
                passes.append((t, e))
        got = -1
        if not dispatch:  # a passenger waiting on e?
            t0 = t_in[i]
            for j in range(off[e], off[e + 1]):
                if arrive[j] > t:
                    break
                if not taken[j] and leave[j] >= t0:
                    got = j
                    break
        if got >= 0:
            pick_up(i, got, max(t_in[i], arrive[got]))
            continue
        f = cab_policy[i].choose(i, e, t, fleet)
        kind_in = CRUISE
        if f < 0:
            stuck += int(test)
            if stuck_once[i]:
                f = int(band[int(rng.integers(band.size))])
                stuck_once[i] = False
                kind_in = RELOCATE
            else:
                stuck_once[i] = True
                t_in[i] = t
                link_end[i] = t + cfg.dead_end_wait_s
                heapq.heappush(heap, (link_end[i], i, END, version[i]))
                continue
        else:
            stuck_once[i] = False
        links[i] = f
        at_link[i] = f
        t_in[i] = t
        link_end[i] = t + tau[f]
        heapq.heappush(heap, (link_end[i], i, END, version[i]))
        if record and test:
            tracks[i].append((f, kind_in, t))
    hours = cfg.hours
    arrived = int(np.count_nonzero(pax.arrive_s < shift))
    never = np.frombuffer(bytes(taken), dtype=np.uint8) == 0
    expired = int(np.count_nonzero(never & (pax.arrive_s < shift) & (pax.leave_s < shift)))
    n_bg_links = max(int(world.cruisable.sum()), 1)
    return RunResult(
        policy=policy_name,
        seed=seed,
        revenue_per_h=float(sum(cab_revenue[:n_test]) / (n_test * hours)),
        pickups_per_h=pickups / (n_test * hours),
        occupied_share=occ_m / (occ_m + empty_m) if occ_m + empty_m > 0 else 0.0,
        empty_km_per_pickup=(empty_m / 1000.0) / pickups if pickups else float("nan"),
        passengers=arrived,
        served=served,
        stuck=stuck,
        background_vacant_passes_per_link_h=bg_passes / (n_bg_links * hours),
        occupied_time_share=float(sum(cab_occupied_s[:n_test]) / (n_test * shift)),
        search_time_s=float(search_s / pickups) if pickups else math.nan,
        wait_time_s=float(wait_s / pickups) if pickups else math.nan,
        expired=expired,
        taxis=n_taxis,
        test_taxis=n_test,
        fleet_revenue_per_h=float(sum(cab_revenue) / (n_taxis * hours)),
        fleet_occupied_time_share=float(sum(cab_occupied_s) / (n_taxis * shift)),
        tracks=tuple(tuple(tr) for tr in tracks) if record else (),
        pickups=tuple(picked_links),
        policy_stats=policy.stats(),
        cpu_s=time.process_time() - cpu0,
    )
