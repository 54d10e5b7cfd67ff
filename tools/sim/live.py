"""The fleet's live layer in the simulator's loop, at its real cadence and delay (issue 17).

Every ``heartbeat_s`` (15 s) each cab of the policy under test sends a heartbeat
(:class:`sync.live.Heartbeat`: its link, vacant or not, the next ~2 km of the route it follows,
its pickups since the last one); every ``snapshot_s`` (30 s) the server builds the area's
snapshot from the latest heartbeats with :func:`sync.live.build_snapshot`, encodes it to the
wire format and decodes it again (:func:`sync.live.encode_body` / :func:`sync.live.decode_body`:
what a cab receives), and each cab sees it after its own fetch delay, uniform in
``[0, snapshot_s)`` (fixed per cab and seed), so the snapshot a cab plans with is up to a minute
old. Signing and verification are left out (they cannot change a count; ``bench live`` measures
their cost). The same heartbeat is what the cab's own planner subtracts (it sees the others,
not itself).

Pickups per cell (the recent inputs of a cell demand model, :mod:`tools.sim.sim_model`): with a
``grid`` the snapshot counts, per cell, what the fleet server sees in the last 15, 30 and 60
minutes: ``counts="pickups"`` the meter pickups of the reporting cabs (street hails: the server
sees nothing else), ``counts="requests"`` every passenger request when it is made (dispatch:
the server receives them all; a dispatched request's meter pickup is not counted again).
Without a grid no cell is counted (as before the model).

Faults (``SimConfig.live_loss``, ``SimConfig.live_outage_min``: ``simulate --live-loss P
--live-outage START..END``). Each heartbeat, and each cab's fetch of each snapshot, is lost
independently with probability ``P`` (drawn from a generator of the run's seed, so a run gives
the same bytes whatever process runs it). A lost heartbeat is not taken: the server keeps the
cab's previous one, which counts as the agent's do by its age (on its link for 45 s, its route
for 120 s: :data:`agent.live.COUNTED_NOW_S`, :data:`agent.live.COUNTED_FOR_S`), and the meter
pickups it carried go with the next one taken (the agent's client keeps them until
acknowledged; older than an hour they are dropped, ``events_expired``). A lost fetch leaves the
cab with the snapshot it had. During the outage (minutes after the shift start, ``[START,
END)``) the server takes no heartbeat, builds no snapshot and hears of no request. A cab plans
with its snapshot only while the agent would (:meth:`sync.live.SnapshotClient.latest`: until
``expires_s`` plus the clock-skew allowance, 180 + 60 s after it was built); after that it has
none and plans offline (``seen_by`` gives None: the spread, the prior), as does the shared
table (:meth:`LiveLayer.fleet_snapshot`). :meth:`LiveLayer.stats` counts what was lost. Without
faults nothing is drawn and a run is what it was before them.

:func:`supply_prior` is the offline prior of the simulated fleet: the vacant passes per link and
30-minute slot of the reference fleet (``SimConfig.calibrate_with``, hotspot) on passengers
drawn from the demand table (the training days, never the replayed ones), what a fleet's own
logs would show before nagashi (``nagashi fleet supply`` builds the same from trip logs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.live import COUNTED_FOR_S, COUNTED_NOW_S
from models.supply import SupplyTable
from sync.live import (
    EVENT_MAX_AGE_S,
    PICKUP,
    GridSpec,
    Heartbeat,
    LiveClientConfig,
    MeterEvent,
    Snapshot,
    build_snapshot,
    decode_body,
    encode_body,
)
from tiles.conditional import MINUTES_PER_WEEK
from tools.sim.world import World

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
HEARTBEAT_S = 15.0
SNAPSHOT_S = 30.0
AREA = "sim"
#: the route a heartbeat carries: its first links up to this length (sync.live: ~2 km)
HEARTBEAT_ROUTE_M = 2000.0
SLOT_MINUTES = 30  # the supply prior's slots (models.supply)
#: what the fleet server counts per cell (module docs)
LIVE_COUNTS = ("pickups", "requests")
#: a cab's snapshot is usable until its ``expires_s`` plus this (the agent's client's allowance)
SKEW_S = LiveClientConfig().skew_s


#: what :meth:`LiveLayer.stats` counts
FAULT_COUNTS = (
    "heartbeats",
    "heartbeats_lost",
    "heartbeats_outage",
    "snapshots_outage",
    "fetches",
    "fetches_lost",
    "requests_outage",
    "events_expired",
    "cab_ticks",
    "cab_ticks_offline",
)


@dataclass
class _Sent:
    link: int  # global edge id, -1 none
    route: tuple[int, ...]  # global edge ids


class LiveLayer:
    """Heartbeats up, snapshots down, for the first ``n_cabs`` cabs of a run (module docs)."""

    def __init__(
        self,
        world: World,
        n_cabs: int,
        seed: int,
        heartbeat_s: float = HEARTBEAT_S,
        snapshot_s: float = SNAPSHOT_S,
        *,
        grid: GridSpec | None = None,
        counts: str = "pickups",
    ) -> None:
        if heartbeat_s <= 0 or snapshot_s <= 0:
            raise ValueError("heartbeat_s and snapshot_s must be positive")
        if counts not in LIVE_COUNTS:
            raise ValueError(f"counts must be one of {', '.join(LIVE_COUNTS)}")
        self.world = world
        self.grid = grid
        self.counts = counts
        self.n_cabs = n_cabs
        self.heartbeat_s = heartbeat_s
        self.snapshot_s = snapshot_s
        rng = np.random.default_rng([seed, 0x11FE])
        self.delay_s = rng.uniform(0.0, snapshot_s, n_cabs)
        cfg = world.config
        self.loss = float(cfg.live_loss)
        outage = cfg.live_outage_min
        self.outage_s = None if outage is None else (outage[0] * 60.0, outage[1] * 60.0)
        self.faults = self.loss > 0.0 or self.outage_s is not None
        self._loss_rng = np.random.default_rng([seed, 0x1055])
        self.counts_lost: dict[str, int] = dict.fromkeys(FAULT_COUNTS, 0)
        g = world.graph
        self.gid = np.asarray(g.edge_id, dtype=np.int64)
        self.mid_lon = ((g.u_lon + g.v_lon) / 2).astype(np.float64)
        self.mid_lat = ((g.u_lat + g.v_lat) / 2).astype(np.float64)
        # the same as lists: the heartbeats read them one link at a time
        self._gid: list[int] = self.gid.tolist()
        self._length: list[float] = np.asarray(world.length_m, dtype=np.float64).tolist()
        self._mid_lon: list[float] = self.mid_lon.tolist()
        self._mid_lat: list[float] = self.mid_lat.tolist()
        #: each cab's latest heartbeat taken, as the next snapshot reads it (one no snapshot
        #: can read is not made: :meth:`_read_before_replaced`)
        self.latest: list[Heartbeat | None] = [None] * n_cabs
        # per cab: the route links its last heartbeat's route was made from, whether they
        # reached HEARTBEAT_ROUTE_M, and that route (global ids)
        self._routes_sent: list[tuple[Sequence[int], bool, tuple[int, ...]] | None] = [
            None
        ] * n_cabs
        self.pickups: list[MeterEvent] = []  # what the server has taken
        self._pending: list[list[MeterEvent]] = [[] for _ in range(n_cabs)]  # not yet taken
        # (built_s, snapshot, what each cab had reported when it was built)
        self.snapshots: list[tuple[float, Snapshot, list[_Sent]]] = []
        # beside each, the cabs whose fetch of it was lost (None: none)
        self._lost: list[npt.NDArray[np.bool_] | None] = []
        self.version = 0
        self.next_heartbeat_s = 0.0
        self.next_snapshot_s = 0.0
        self.bytes_sent: list[int] = []

    def pickup(self, t_s: float, link: int, cab: int) -> None:
        """A meter pickup of test cab ``cab`` on local ``link`` at ``t_s`` (its place: the
        link's middle), sent with the cab's next heartbeats until one is taken; counted per
        cell with ``counts="pickups"``."""
        if self.counts == "pickups":
            self._pending[cab].append(self._event(t_s, link))

    def request(self, t_s: float, link: int) -> None:
        """A passenger's request on local ``link`` at ``t_s`` (dispatch: the server receives
        every one, unless it is down); counted per cell with ``counts="requests"``."""
        if self.counts == "requests":
            if self.down(t_s):
                self.counts_lost["requests_outage"] += 1
                return
            self.pickups.append(self._event(t_s, link))

    def _event(self, t_s: float, link: int) -> MeterEvent:
        return MeterEvent(PICKUP, int(t_s), float(self.mid_lon[link]), float(self.mid_lat[link]))

    def down(self, t_s: float) -> bool:
        """Whether the server is down at ``t_s`` (the outage, ``[START, END)``)."""
        o = self.outage_s
        return o is not None and o[0] <= t_s < o[1]

    def usable(self, snap: Snapshot, t_s: float) -> bool:
        """Whether a cab still plans with ``snap`` at ``t_s`` (not expired, as the agent's
        :meth:`sync.live.SnapshotClient.latest`)."""
        return t_s <= snap.expires_s + SKEW_S

    def tick(
        self,
        t_s: float,
        links: Sequence[int],
        vacant: Sequence[bool],
        routes: Sequence[Sequence[int]],
    ) -> None:
        """At ``t_s``: the heartbeats of every cab (local ``links``, ``vacant``, local
        ``routes`` to follow) the server takes, then the snapshot when one is due (none while
        the server is down)."""
        down = self.down(t_s)
        if t_s + 1e-9 >= self.next_heartbeat_s:
            self.next_heartbeat_s += self.heartbeat_s
            if not self._read_before_replaced(t_s):
                for i in range(self.n_cabs):  # (their events go now, as they would)
                    if self._pending[i]:
                        self._deliver(i, t_s)
            else:
                self._heartbeats(t_s, down, links, vacant, routes)
        if t_s + 1e-9 >= self.next_snapshot_s:
            if down:
                self.counts_lost["snapshots_outage"] += 1
            else:
                self._build(t_s)
            self.next_snapshot_s += self.snapshot_s

    def _read_before_replaced(self, t_s: float) -> bool:
        """Whether a snapshot can read the heartbeats sent at ``t_s`` (the next heartbeat time
        already set): one is built now, or before the next heartbeats, or some may be lost
        (faults). Otherwise every cab's next heartbeat replaces this one before any snapshot
        is built (at that tick the heartbeats come first), and none is made."""
        if self.faults or t_s + 1e-9 >= self.next_snapshot_s:
            return True
        return self.next_heartbeat_s > self.next_snapshot_s

    def _heartbeats(
        self,
        t_s: float,
        down: bool,
        links: Sequence[int],
        vacant: Sequence[bool],
        routes: Sequence[Sequence[int]],
    ) -> None:
        """Every cab's heartbeat at ``t_s`` the server takes (:meth:`tick`)."""
        length, gid = self._length, self._gid
        mid_lon, mid_lat = self._mid_lon, self._mid_lat
        taken = self._taken(t_s, down)
        for i in range(self.n_cabs):
            if taken is not None and not taken[i]:
                continue
            if self._pending[i]:
                self._deliver(i, t_s)
            route: tuple[int, ...] = ()
            if vacant[i]:
                route = self._heartbeat_route(i, routes[i], gid, length)
            e = int(links[i])
            self.latest[i] = Heartbeat(
                area=AREA,
                t_s=int(t_s),
                network=b"\0\0\0\0",
                link=gid[e] if e >= 0 else -1,
                lon=mid_lon[e] if e >= 0 else 0.0,
                lat=mid_lat[e] if e >= 0 else 0.0,
                vacant=bool(vacant[i]),
                route=route,
            )

    def _heartbeat_route(
        self, cab: int, links: Sequence[int], gid: list[int], length: list[float]
    ) -> tuple[int, ...]:
        """The global ids of ``links``' first links up to :data:`HEARTBEAT_ROUTE_M` (the one
        that reaches it included): the cab's previous ones where the route begins with the
        same links that made them (a cab drives about one link between heartbeats, and most
        read no new route)."""
        got = self._routes_sent[cab]
        if got is not None:
            prefix, reached, route = got
            if links[: len(prefix)] == prefix and (reached or len(links) == len(prefix)):
                return route
        out: list[int] = []
        run = 0.0
        reached = False
        for f in links:
            out.append(gid[f])
            run += length[f]
            if run >= HEARTBEAT_ROUTE_M:
                reached = True
                break
        route = tuple(out)
        self._routes_sent[cab] = (links[: len(out)], reached, route)
        return route

    def _taken(self, t_s: float, down: bool) -> list[bool] | None:
        """Which cabs' heartbeats at ``t_s`` the server takes (None: all; no faults, no
        draw), counted; with faults also the cabs without a usable snapshot now."""
        if not self.faults:
            return None
        n, c = self.n_cabs, self.counts_lost
        c["heartbeats"] += n
        c["cab_ticks"] += n
        c["cab_ticks_offline"] += sum(self.seen_by(i, t_s)[0] is None for i in range(n))
        if down:
            c["heartbeats_outage"] += n
            return [False] * n
        if self.loss <= 0.0:
            return None
        taken: list[bool] = (self._loss_rng.random(n) >= self.loss).tolist()
        c["heartbeats_lost"] += n - sum(taken)
        return taken

    def _deliver(self, cab: int, t_s: float) -> None:
        """The cab's pending meter events go with its heartbeat the server takes at ``t_s``
        (at most an hour old, as the agent's client keeps them)."""
        cutoff = t_s - EVENT_MAX_AGE_S
        for e in self._pending[cab]:
            if e.t_s >= cutoff:
                self.pickups.append(e)
            else:
                self.counts_lost["events_expired"] += 1
        self._pending[cab] = []

    def _build(self, t_s: float) -> None:
        self.version += 1
        cutoff = t_s - 3600.0
        self.pickups = [e for e in self.pickups if e.t_s >= cutoff]
        beats = [hb for hb in self.latest if hb is not None]
        now = float(int(t_s))
        snap = build_snapshot(
            beats,
            now,
            area=AREA,
            pickups=self.pickups,
            grid=self.grid,
            version=self.version,
            current_s=COUNTED_NOW_S,
            planned_s=COUNTED_FOR_S,
        )
        body = encode_body(snap)
        self.bytes_sent.append(len(body))
        received = decode_body(body, sha256=f"{self.version:064x}")
        # what the cab subtracts as its own: its last heartbeat taken, counted by its age as
        # the snapshot counted it (agent.live.LiveLink.tick_input)
        sent = [_Sent(-1, ())] * len(self.latest)
        for i, hb in enumerate(self.latest):
            if hb is not None and hb.vacant and now - hb.t_s <= COUNTED_FOR_S:
                sent[i] = _Sent(hb.link if now - hb.t_s <= COUNTED_NOW_S else -1, hb.route)
        lost = None
        if self.loss > 0.0:
            lost = self._loss_rng.random(self.n_cabs) < self.loss
            self.counts_lost["fetches"] += self.n_cabs
            self.counts_lost["fetches_lost"] += int(np.count_nonzero(lost))
        elif self.faults:
            self.counts_lost["fetches"] += self.n_cabs
        self.snapshots.append((t_s, received, sent))
        self._lost.append(lost)
        # kept while a cab may still plan with it (the newest four at least, as before)
        while len(self.snapshots) > 4 and not self.usable(self.snapshots[0][1], t_s):
            del self.snapshots[0], self._lost[0]

    def seen_by(self, cab: int, t_s: float) -> tuple[Snapshot | None, int, tuple[int, ...]]:
        """The newest snapshot cab ``cab`` has fetched by ``t_s`` (built at least its delay
        before, its fetch not lost), with the link and route it had reported in it (None:
        none yet, or the one it has expired: the cab plans offline)."""
        d = float(self.delay_s[cab])
        for (built, snap, sent), lost in zip(
            reversed(self.snapshots), reversed(self._lost), strict=True
        ):
            if built + d <= t_s and (lost is None or not lost[cab]):
                if t_s > snap.expires_s + SKEW_S:
                    return None, -1, ()
                own = sent[cab]
                return snap, own.link, own.route
        return None, -1, ()

    def fleet_snapshot(self, t_s: float) -> Snapshot | None:
        """The snapshot the shared table plans with at ``t_s``: the one before the newest (what
        the cabs have fetched by now: 30 to 60 s old), or the newest once every cab has
        fetched it (no newer built: the server is down); None when none yet or it has
        expired (the fleet plans offline)."""
        snaps = self.snapshots
        if not snaps:
            return None
        newest = len(snaps) == 1 or snaps[-1][0] + self.snapshot_s <= t_s
        snap = snaps[-1 if newest else -2][1]
        return snap if self.usable(snap, t_s) else None

    def stats(self) -> dict[str, int | float]:
        """What the faults took (module docs): heartbeats sent, lost and not taken in the
        outage, snapshot builds skipped in it, fetches and fetches lost, requests the server
        did not hear of, meter events dropped as over an hour old, and the cabs' heartbeat
        ticks without a usable snapshot (``cab_ticks_offline`` of ``cab_ticks``)."""
        return dict(self.counts_lost)


_PRIORS: dict[tuple[int, int, int, str], tuple[World, SupplyTable]] = {}


def supply_prior(
    world: World, seed: int = 0x5AFE, multiplier: float = 1.0, policy: str | None = None
) -> SupplyTable:
    """The vacant passes per link and slot of a whole fleet on ``policy`` (default: the
    reference fleet, ``SimConfig.calibrate_with``; ``nagashi-live``: the fleet's own logs once
    it runs nagashi) on passengers drawn from the demand table (module docs), as the
    :class:`models.supply.SupplyTable` a bundle ships; measured once per world (cached)."""
    from tools.sim.engine import run_shift
    from tools.sim.world import make_passengers

    cfg = world.config
    policy = policy or cfg.calibrate_with
    key = (id(world), seed, round(multiplier * 1e6), policy)
    hit = _PRIORS.get(key)
    if hit is not None and hit[0] is world:
        return hit[1]
    pax = make_passengers(world, seed, multiplier)
    passes: list[tuple[float, int]] = []
    run_shift(world, pax, policy, seed, multiplier, test_taxis=cfg.taxis, passes=passes)
    minute0 = cfg.start_minute_of_week
    t = np.asarray([p[0] for p in passes], dtype=np.float64)
    link = np.asarray([p[1] for p in passes], dtype=np.int64)
    # the share of a day each slot was observed (the shift may cut the first and last)
    days = np.zeros(MINUTES_PER_WEEK // SLOT_MINUTES)
    for m in range(math.ceil(world.shift_s / 60.0)):
        days[(math.floor(minute0 + m) % MINUTES_PER_WEEK) // SLOT_MINUTES] += 1.0 / SLOT_MINUTES
    table = SupplyTable.from_passes(
        np.asarray(world.graph.edge_id, dtype=np.int64)[link],
        minute0 + t / 60.0,
        days_per_slot=days,
        cabs=cfg.taxis,
        meta={"source": f"simulated fleet on {policy}", "seed": seed},
    )
    _PRIORS[key] = (world, table)
    return table
