"""The event loop of one simulated shift: cabs traverse links, meet waiting passengers, drive
them, and choose where to cruise with their policy.

The fleet is ``taxis`` cabs: the first ``test_taxis`` drive the policy under test, the others
the background (reference) policy the demand was calibrated with, i.e. the drivers the trip
records came from. Metrics are those of the test cabs. (With ``test_taxis == taxis`` the whole
fleet drives the policy under test.)

A vacant cab that finishes link ``e`` (entered at ``t_in``, left at ``t``) takes the passenger
of ``e`` who arrived first among those still waiting at some moment of its traversal
(``arrive <= t`` and ``arrive + patience >= t_in``, not taken): first come, first served among
passengers, and the first cab to finish the link wins. The cab is occupied until the drop-off,
where it is vacant again at the start of the drop-off link (after an outside trip: empty for as
long again, then on a link near the area's edge). A cab with no allowed successor waits
``dead_end_wait_s`` where it is, then, if still stuck, comes back on a link near the edge.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tools.sim.policies import Allowed, Policy, make_policy
from tools.sim.world import Passengers, World

END, DROP = 0, 1
START, CRUISE, DROPOFF, RELOCATE = "start", "cruise", "dropoff", "relocate"


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
    #: per test cab: (link, kind, time entered) with kind one of CRUISE (chosen by the policy),
    #: DROPOFF (driven occupied to that link), RELOCATE (back from a dead end), START
    tracks: tuple[tuple[tuple[int, str, float], ...], ...] = field(default=(), repr=False)
    pickups: tuple[int, ...] = field(default=(), repr=False)  # links of test cabs' pickups

    def metrics(self) -> dict[str, float]:
        return {
            "revenue_per_h": self.revenue_per_h,
            "pickups_per_h": self.pickups_per_h,
            "occupied_share": self.occupied_share,
            "empty_km_per_pickup": self.empty_km_per_pickup,
            "served_share": self.served / self.passengers if self.passengers else 0.0,
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
) -> RunResult:
    cfg = world.config
    n_taxis = cfg.taxis
    n_test = min(cfg.test_taxis if test_taxis is None else test_taxis, n_taxis)
    shift = world.shift_s
    tau = world.tau_s.tolist()
    length = world.length_m.tolist()
    allowed = Allowed(world)
    policy = make_policy(policy_name, world, allowed, seed, multiplier)
    background: Policy = (
        policy
        if policy_name == cfg.calibrate_with
        else make_policy(cfg.calibrate_with, world, allowed, seed + 7919, multiplier)
    )
    cab_policy = [policy if i < n_test else background for i in range(n_taxis)]
    rng = np.random.default_rng([seed, 0xDEAD])
    band = world.edge_band
    off = pax.offsets.tolist()
    arrive = pax.arrive_s.tolist()
    leave = pax.leave_s.tolist()
    fare = pax.fare.tolist()
    duration = pax.duration_s.tolist()
    distance = pax.distance_m.tolist()
    drop_link = pax.dropoff_link.tolist()
    outside = pax.outside.tolist()
    taken = bytearray(pax.count)

    links = start_links(world, seed)
    t_in = [0.0] * n_taxis
    stuck_once = [False] * n_taxis
    fleet = _Fleet(world.n)
    heap = [(tau[links[i]], i, END) for i in range(n_taxis)]
    heapq.heapify(heap)
    revenue = 0.0
    pickups = 0
    served = 0
    occ_m = 0.0
    empty_m = 0.0
    stuck = 0
    bg_passes = 0
    tracks: list[list[tuple[int, str, float]]] = [[(links[i], START, 0.0)] for i in range(n_test)]
    picked_links: list[int] = []
    while heap:
        t, i, kind = heapq.heappop(heap)
        if t >= shift:
            continue
        test = i < n_test
        if kind == DROP:
            t_in[i] = t
            cab_policy[i].reset_taxi(i)
            heapq.heappush(heap, (t + tau[links[i]], i, END))
            continue
        e = links[i]
        if not stuck_once[i]:
            if test:
                empty_m += length[e]
                fleet.add(t, e)
            else:
                bg_passes += 1
        # a passenger on e?
        got = -1
        t0 = t_in[i]
        for j in range(off[e], off[e + 1]):
            if arrive[j] > t:
                break
            if not taken[j] and leave[j] >= t0:
                got = j
                break
        if got >= 0:
            taken[got] = 1
            t_pick = max(t0, arrive[got])
            served += 1
            t_free = t_pick + duration[got]
            if outside[got]:
                t_free += duration[got]
            if test:
                revenue += fare[got]
                pickups += 1
                occ_m += distance[got]
                if outside[got]:
                    empty_m += distance[got]
                if record:
                    picked_links.append(e)
                    tracks[i].append((drop_link[got], DROPOFF, t_free))
            links[i] = drop_link[got]
            stuck_once[i] = False
            heapq.heappush(heap, (t_free, i, DROP))
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
                heapq.heappush(heap, (t + cfg.dead_end_wait_s, i, END))
                continue
        else:
            stuck_once[i] = False
        links[i] = f
        t_in[i] = t
        heapq.heappush(heap, (t + tau[f], i, END))
        if record and test:
            tracks[i].append((f, kind_in, t))
    hours = cfg.hours
    arrived = int(np.count_nonzero(pax.arrive_s < shift))
    n_bg_links = max(int(world.cruisable.sum()), 1)
    return RunResult(
        policy=policy_name,
        seed=seed,
        revenue_per_h=revenue / (n_test * hours),
        pickups_per_h=pickups / (n_test * hours),
        occupied_share=occ_m / (occ_m + empty_m) if occ_m + empty_m > 0 else 0.0,
        empty_km_per_pickup=(empty_m / 1000.0) / pickups if pickups else float("nan"),
        passengers=arrived,
        served=served,
        stuck=stuck,
        background_vacant_passes_per_link_h=bg_passes / (n_bg_links * hours),
        tracks=tuple(tuple(tr) for tr in tracks) if record else (),
        pickups=tuple(picked_links),
    )
