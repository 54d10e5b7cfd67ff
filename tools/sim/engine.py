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
``dead_end_wait_s`` where it is, then, if still stuck, comes back on a link near the edge. Off
a trapped link (``tiles.trapped_links``) a cab is put on its ``World.escape`` link at once
(``trap_rescues``; one closed just then is waited out as a dead end); nothing starts in a trap.

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
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import dijkstra

from tools.sim.collector import few_collections
from tools.sim.policies import Allowed, Policy, make_policy, path_to
from tools.sim.result import RunResult as RunResult  # re-exported: older imports
from tools.sim.world import Passengers, World

END, DROP, PICK, ARRIVE, LIVE = 0, 1, 2, 3, 4
START, CRUISE, DROPOFF, RELOCATE, DISPATCHED = "start", "cruise", "dropoff", "relocate", "dispatch"
RESCUE = "rescue"
VACANT, ENROUTE, OCCUPIED = 0, 1, 2


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
    # a draw on a trapped link starts on its escape link (the same draws for every other cab)
    return [int(world.escape[x]) for x in cand[rng.integers(0, cand.size, world.config.taxis)]]


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
    (``policy.route_of``), and every pickup of a test cab as a meter event; with the world's
    live faults (``SimConfig.live_loss``, ``live_outage_min``) ``policy_stats["live_faults"]``
    counts what they took."""
    with few_collections():
        shift = _Shift(
            world, pax, policy_name, seed, multiplier, record, test_taxis, starts, passes
        )
        shift.run()
        return shift.result()


class _Shift:
    """The state of one shift and one method per event kind (:func:`run_shift`)."""

    def __init__(
        self,
        world: World,
        pax: Passengers,
        policy_name: str,
        seed: int,
        multiplier: float,
        record: bool,
        test_taxis: int | None,
        starts: list[int] | None,
        passes: list[tuple[float, int]] | None,
    ) -> None:
        cfg = world.config
        self.world, self.pax, self.cfg = world, pax, cfg
        self.policy_name, self.seed, self.record, self.passes = policy_name, seed, record, passes
        self.dispatch = cfg.matching == "dispatch"
        self.n_taxis = n_taxis = cfg.taxis
        self.n_test = min(cfg.test_taxis if test_taxis is None else test_taxis, n_taxis)
        self.shift = world.shift_s
        self.tau: list[float] = world.tau_s.tolist()
        self.length: list[float] = world.length_m.tolist()
        self.trapped: list[bool] = world.trapped.tolist()
        self.escape: list[int] = world.escape.tolist()
        self._policies(policy_name, seed, multiplier)
        self.rng = np.random.default_rng([seed, 0xDEAD])
        self.band = world.edge_band
        self._passengers(pax)
        links = list(starts) if starts is not None else start_links(world, seed)
        if len(links) != n_taxis:
            raise ValueError(f"{len(links)} starting links for {n_taxis} cabs")
        self._cabs(links)
        self._heap(links)
        self._measures(links)

    def _policies(self, policy_name: str, seed: int, multiplier: float) -> None:
        """The policy under test (the first ``n_test`` cabs) and the background policy."""
        world, cfg, n_test = self.world, self.cfg, self.n_test
        self.allowed = allowed = Allowed(world)
        self.policy = policy = make_policy(policy_name, world, allowed, seed, multiplier, n_test)
        background: Policy = (
            policy
            if policy_name == cfg.calibrate_with
            else make_policy(cfg.calibrate_with, world, allowed, seed + 7919, multiplier)
        )
        self.cab_policy = [policy if i < n_test else background for i in range(self.n_taxis)]
        self.live = getattr(policy, "live", None)
        self.cpu0 = time.process_time()  # the shift, not the policies' setup (a supply prior)

    def _passengers(self, pax: Passengers) -> None:
        """The passengers as lists (faster to index one at a time than numpy arrays)."""
        self.off: list[int] = pax.offsets.tolist()
        self.p_link: list[int] = pax.link.tolist()
        self.arrive: list[float] = pax.arrive_s.tolist()
        self.leave: list[float] = pax.leave_s.tolist()
        self.fare: list[float] = pax.fare.tolist()
        self.duration: list[float] = pax.duration_s.tolist()
        self.distance: list[float] = pax.distance_m.tolist()
        self.drop_link: list[int] = pax.dropoff_link.tolist()
        self.outside: list[bool] = pax.outside.tolist()
        self.taken = bytearray(pax.count)
        self.waiting: list[int] = []  # dispatch: passengers no cab could reach yet, in order

    def _cabs(self, links: list[int]) -> None:
        """Where each cab is, since when, and (dispatch) its state and current link's end."""
        n_taxis = self.n_taxis
        self.links = links
        self.t_in = [0.0] * n_taxis
        self.stuck_once = [False] * n_taxis
        self.fleet = _Fleet(self.world.n)
        # dispatch: who is vacant where, and when its current link ends (numpy, for the search)
        self.state = np.full(n_taxis, VACANT, dtype=np.int8)
        self.at_link = np.asarray(links, dtype=np.int64)
        self.link_end = np.asarray([self.tau[e] for e in links], dtype=np.float64)
        self.version = [0] * n_taxis
        self.enroute = [-1] * n_taxis

    def _heap(self, links: list[int]) -> None:
        """The first events: every cab's first link end, the passengers' appearances
        (dispatch) and the live layer's first heartbeat."""
        n_taxis, tau, arrive = self.n_taxis, self.tau, self.arrive
        heap: list[tuple[float, int, int, int]] = [
            (tau[links[i]], i, END, 0) for i in range(n_taxis)
        ]
        if self.dispatch:
            heap += [
                (arrive[j], n_taxis + j, ARRIVE, 0)
                for j in range(self.pax.count)
                if arrive[j] < self.shift
            ]
        if self.live is not None:
            heap.append((0.0, -1, LIVE, 0))
        heapq.heapify(heap)
        self.heap = heap

    def _measures(self, links: list[int]) -> None:
        n_taxis = self.n_taxis
        self.vacant_since = [0.0] * n_taxis
        self.cab_revenue = [0.0] * n_taxis
        self.cab_occupied_s = [0.0] * n_taxis
        self.pickups = 0
        self.served = 0
        self.occ_m = 0.0
        self.empty_m = 0.0
        self.stuck = 0
        self.trap_rescues = 0
        self.bg_passes = 0
        self.search_s = 0.0
        self.wait_s = 0.0
        self.tracks: list[list[tuple[int, str, float]]] = [
            [(links[i], START, 0.0)] for i in range(self.n_test)
        ]
        self.picked_links: list[int] = []

    def run(self) -> None:
        """Pop events in time order until the shift ends."""
        heap, shift, n_taxis, version = self.heap, self.shift, self.n_taxis, self.version
        while heap:
            t, i, kind, ver = heapq.heappop(heap)
            if t >= shift:
                continue
            if kind == LIVE:
                self.on_live(t)
            elif kind == ARRIVE:
                self.on_arrive(t, i - n_taxis)
            elif ver != version[i]:
                continue  # superseded (the cab was dispatched)
            elif kind == PICK:
                j = self.enroute[i]
                self.enroute[i] = -1
                self.pick_up(i, j, t)
            elif kind == DROP:
                self.on_drop(t, i)
            else:
                self.on_link_end(t, i)

    def on_live(self, t: float) -> None:
        """A heartbeat of the live layer: the test cabs' links, vacancy and routes."""
        live, n_test, state, stuck_once = self.live, self.n_test, self.state, self.stuck_once
        assert live is not None
        live.tick(
            t,
            self.links[:n_test],
            [bool(state[c] == VACANT) and not stuck_once[c] for c in range(n_test)],
            [self.policy.route_of(c) for c in range(n_test)],
        )
        heapq.heappush(self.heap, (t + live.heartbeat_s, -1, LIVE, 0))

    def on_arrive(self, t: float, j: int) -> None:
        """Dispatch: passenger ``j`` appears (the live layer hears of it); the vacant cab that
        reaches her soonest is sent if in time, else she waits."""
        p = self.p_link[j]
        if self.live is not None:  # the dispatcher's server sees every request
            self.live.request(t, p)
        vac = np.flatnonzero(self.state == VACANT)
        if vac.size:
            dist, pred = dijkstra(
                self.allowed.line_graph(t, reverse=True),
                directed=True,
                indices=p,
                return_predecessors=True,
                limit=self.cfg.max_wait_s,
            )
            reach = np.maximum(self.link_end[vac] - t, 0.0) + dist[self.at_link[vac]]
            k = int(np.argmin(reach))
            if reach[k] <= self.leave[j] - t:
                c = int(vac[k])
                path: list[int] = []
                x = self.links[c]
                while x != p:
                    x = int(pred[x])
                    path.append(x)
                self.send(c, j, t, float(reach[k]), path)
                return
        self.waiting.append(j)

    def on_drop(self, t: float, i: int) -> None:
        """Cab ``i`` drops its passenger off and is vacant at the start of the drop-off link
        (dispatch: it is sent to the waiting passenger it reaches soonest, if any in time)."""
        links, tau = self.links, self.tau
        self.t_in[i] = t
        self.vacant_since[i] = t
        self.state[i] = VACANT
        self.at_link[i] = links[i]
        self.cab_policy[i].reset_taxi(i)
        if self.dispatch and self.waiting and self._send_to_waiting(t, i):
            return
        self.link_end[i] = t + tau[links[i]]
        heapq.heappush(self.heap, (self.link_end[i], i, END, self.version[i]))

    def _send_to_waiting(self, t: float, i: int) -> bool:
        """Dispatch: send vacant cab ``i`` to the waiting passenger it reaches soonest in time
        (the expired ones are dropped from the queue); whether one was."""
        waiting, leave, links = self.waiting, self.leave, self.links
        waiting[:] = [j for j in waiting if leave[j] >= t]
        if not waiting:
            return False
        dist, pred = dijkstra(
            self.allowed.line_graph(t),
            directed=True,
            indices=links[i],
            return_predecessors=True,
            limit=self.cfg.max_wait_s,
        )
        best = -1
        best_reach = math.inf
        for j in waiting:
            r = self.tau[links[i]] + float(dist[self.p_link[j]])
            if r < best_reach and t + r <= leave[j]:
                best, best_reach = j, r
        if best < 0:
            return False
        path = path_to(pred, links[i], self.p_link[best])
        self.send(i, best, t, best_reach, path)
        return True

    def on_link_end(self, t: float, i: int) -> None:
        """Cab ``i`` (vacant) finishes its link: count the pass, take a hail on it if one is
        waiting, else drive on where its policy chooses."""
        e = self.links[i]
        if not self.stuck_once[i]:
            if i < self.n_test:
                self.empty_m += self.length[e]
                self.fleet.add(t, e)
            else:
                self.bg_passes += 1
            if self.passes is not None:
                self.passes.append((t, e))
        got = -1 if self.dispatch else self._hail(t, i, e)
        if got >= 0:
            self.pick_up(i, got, max(self.t_in[i], self.arrive[got]))
            return
        self.cruise(t, i, e)

    def _hail(self, t: float, i: int, e: int) -> int:
        """The passenger waiting on ``e`` whom cab ``i`` takes (the first to have arrived among
        those still waiting at some moment of its traversal), or -1."""
        arrive, taken, leave = self.arrive, self.taken, self.leave
        t0 = self.t_in[i]
        for j in range(self.off[e], self.off[e + 1]):
            if arrive[j] > t:
                break
            if not taken[j] and leave[j] >= t0:
                return j
        return -1

    def cruise(self, t: float, i: int, e: int) -> None:
        """Cab ``i`` leaves link ``e`` vacant onto the link its policy chooses; with none
        allowed it waits where it is, then (still stuck) comes back near the edge; off a
        trapped link it is put on the nearest free one (module docs)."""
        test = i < self.n_test
        stuck_once, link_end = self.stuck_once, self.link_end
        if self.trapped[e]:
            f, kind_in = self.escape[e], RESCUE
            if self.allowed.at(t)[f]:
                self.trap_rescues += int(test)
                stuck_once[i] = False
                self.cab_policy[i].reset_taxi(i)  # somewhere new: its route and fixes say nothing
            else:  # in a no-entry window now: a dead end, waited out (then the edge band)
                f = -1
        else:
            f, kind_in = self.cab_policy[i].choose(i, e, t, self.fleet), CRUISE
        if f < 0:
            self.stuck += int(test)
            if stuck_once[i]:
                f = int(self.band[int(self.rng.integers(self.band.size))])
                stuck_once[i] = False
                kind_in = RELOCATE
            else:
                stuck_once[i] = True
                self.t_in[i] = t
                link_end[i] = t + self.cfg.dead_end_wait_s
                heapq.heappush(self.heap, (link_end[i], i, END, self.version[i]))
                return
        else:
            stuck_once[i] = False
        self.links[i] = f
        self.at_link[i] = f
        self.t_in[i] = t
        link_end[i] = t + self.tau[f]
        heapq.heappush(self.heap, (link_end[i], i, END, self.version[i]))
        if self.record and test:
            self.tracks[i].append((f, kind_in, t))

    def pick_up(self, i: int, j: int, t_pick: float) -> None:
        """Cab ``i`` picks passenger ``j`` up at ``t_pick`` and is occupied until the drop-off
        (after an outside trip: as long again, empty)."""
        self.taken[j] = 1
        self.served += 1
        test = i < self.n_test
        if self.live is not None and test:
            self.live.pickup(t_pick, self.p_link[j], i)
        duration = self.duration[j]
        t_free = t_pick + duration
        self.cab_occupied_s[i] += max(min(t_free, self.shift) - t_pick, 0.0)
        self.cab_revenue[i] += self.fare[j]
        outside = self.outside[j]
        if outside:
            t_free += duration
        if test:
            self.pickups += 1
            self.occ_m += self.distance[j]
            self.search_s += t_pick - self.vacant_since[i]
            self.wait_s += t_pick - self.arrive[j]
            if outside:
                self.empty_m += self.distance[j]
            if self.record:
                self.picked_links.append(self.p_link[j])
                self.tracks[i].append((self.drop_link[j], DROPOFF, t_free))
        self.links[i] = self.drop_link[j]
        self.stuck_once[i] = False
        self.state[i] = OCCUPIED
        self.version[i] += 1
        heapq.heappush(self.heap, (t_free, i, DROP, self.version[i]))

    def send(self, i: int, j: int, t: float, reach: float, path: list[int]) -> None:
        """Dispatch: cab ``i`` (vacant, on ``links[i]``) to passenger ``j`` along ``path``."""
        if j in self.waiting:
            self.waiting.remove(j)
        self.taken[j] = 1  # reserved
        self.state[i] = ENROUTE
        self.enroute[i] = j
        self.version[i] += 1
        if i < self.n_test:
            length = self.length
            self.empty_m += length[self.links[i]] + sum(length[f] for f in path)
            if self.record:
                self.tracks[i].extend((f, DISPATCHED, t) for f in path)
        heapq.heappush(self.heap, (t + reach, i, PICK, self.version[i]))

    def _policy_stats(self) -> dict[str, Any]:
        """The policy's counts, and with the live layer's faults what they took
        (``live_faults``: :meth:`tools.sim.live.LiveLayer.stats`)."""
        stats = self.policy.stats()
        if self.live is not None and self.live.faults:
            stats = {**stats, "live_faults": self.live.stats()}
        return stats

    def result(self) -> RunResult:
        """The measures of the shift (:class:`RunResult`)."""
        world, pax, cfg = self.world, self.pax, self.cfg
        n_test, n_taxis, shift, pickups = self.n_test, self.n_taxis, self.shift, self.pickups
        occ_m, empty_m = self.occ_m, self.empty_m
        hours = cfg.hours
        arrived = int(np.count_nonzero(pax.arrive_s < shift))
        never = np.frombuffer(bytes(self.taken), dtype=np.uint8) == 0
        expired = int(np.count_nonzero(never & (pax.arrive_s < shift) & (pax.leave_s < shift)))
        n_bg_links = max(int(world.cruisable.sum()), 1)
        return RunResult(
            policy=self.policy_name,
            seed=self.seed,
            revenue_per_h=float(sum(self.cab_revenue[:n_test]) / (n_test * hours)),
            pickups_per_h=pickups / (n_test * hours),
            occupied_share=occ_m / (occ_m + empty_m) if occ_m + empty_m > 0 else 0.0,
            empty_km_per_pickup=(empty_m / 1000.0) / pickups if pickups else float("nan"),
            passengers=arrived,
            served=self.served,
            stuck=self.stuck,
            trap_rescues=self.trap_rescues,
            background_vacant_passes_per_link_h=self.bg_passes / (n_bg_links * hours),
            occupied_time_share=float(sum(self.cab_occupied_s[:n_test]) / (n_test * shift)),
            search_time_s=float(self.search_s / pickups) if pickups else math.nan,
            wait_time_s=float(self.wait_s / pickups) if pickups else math.nan,
            expired=expired,
            taxis=n_taxis,
            test_taxis=n_test,
            fleet_revenue_per_h=float(sum(self.cab_revenue) / (n_taxis * hours)),
            fleet_occupied_time_share=float(sum(self.cab_occupied_s) / (n_taxis * shift)),
            tracks=tuple(tuple(tr) for tr in self.tracks) if self.record else (),
            pickups=tuple(self.picked_links),
            policy_stats=self._policy_stats(),
            cpu_s=time.process_time() - self.cpu0,
        )
