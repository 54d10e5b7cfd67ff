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

from models.supply import SupplyTable
from sync.live import (
    PICKUP,
    GridSpec,
    Heartbeat,
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
        g = world.graph
        self.gid = np.asarray(g.edge_id, dtype=np.int64)
        self.mid_lon = ((g.u_lon + g.v_lon) / 2).astype(np.float64)
        self.mid_lat = ((g.u_lat + g.v_lat) / 2).astype(np.float64)
        # the same as lists: the heartbeats read them one link at a time
        self._gid: list[int] = self.gid.tolist()
        self._length: list[float] = np.asarray(world.length_m, dtype=np.float64).tolist()
        self._mid_lon: list[float] = self.mid_lon.tolist()
        self._mid_lat: list[float] = self.mid_lat.tolist()
        self.latest: list[Heartbeat | None] = [None] * n_cabs
        self.pickups: list[MeterEvent] = []
        # (built_s, snapshot, what each cab had reported when it was built)
        self.snapshots: list[tuple[float, Snapshot, list[_Sent]]] = []
        self.version = 0
        self.next_heartbeat_s = 0.0
        self.next_snapshot_s = 0.0
        self.bytes_sent: list[int] = []

    def pickup(self, t_s: float, link: int) -> None:
        """A meter pickup of a test cab on local ``link`` at ``t_s`` (its place: the link's
        middle); counted per cell with ``counts="pickups"``."""
        if self.counts == "pickups":
            self._event(t_s, link)

    def request(self, t_s: float, link: int) -> None:
        """A passenger's request on local ``link`` at ``t_s`` (dispatch: the server receives
        every one); counted per cell with ``counts="requests"``."""
        if self.counts == "requests":
            self._event(t_s, link)

    def _event(self, t_s: float, link: int) -> None:
        self.pickups.append(
            MeterEvent(PICKUP, int(t_s), float(self.mid_lon[link]), float(self.mid_lat[link]))
        )

    def tick(
        self,
        t_s: float,
        links: Sequence[int],
        vacant: Sequence[bool],
        routes: Sequence[Sequence[int]],
    ) -> None:
        """At ``t_s``: the heartbeats of every cab (local ``links``, ``vacant``, local
        ``routes`` to follow), then the snapshot when one is due."""
        if t_s + 1e-9 >= self.next_heartbeat_s:
            length, gid = self._length, self._gid
            mid_lon, mid_lat = self._mid_lon, self._mid_lat
            for i in range(self.n_cabs):
                route: list[int] = []
                if vacant[i]:
                    run = 0.0
                    for f in routes[i]:
                        route.append(gid[f])
                        run += length[f]
                        if run >= HEARTBEAT_ROUTE_M:
                            break
                e = int(links[i])
                self.latest[i] = Heartbeat(
                    area=AREA,
                    t_s=int(t_s),
                    network=b"\0\0\0\0",
                    link=gid[e] if e >= 0 else -1,
                    lon=mid_lon[e] if e >= 0 else 0.0,
                    lat=mid_lat[e] if e >= 0 else 0.0,
                    vacant=bool(vacant[i]),
                    route=tuple(route),
                )
            self.next_heartbeat_s += self.heartbeat_s
        if t_s + 1e-9 >= self.next_snapshot_s:
            self._build(t_s)
            self.next_snapshot_s += self.snapshot_s

    def _build(self, t_s: float) -> None:
        self.version += 1
        cutoff = t_s - 3600.0
        self.pickups = [e for e in self.pickups if e.t_s >= cutoff]
        beats = [hb for hb in self.latest if hb is not None]
        snap = build_snapshot(
            beats,
            float(int(t_s)),
            area=AREA,
            pickups=self.pickups,
            grid=self.grid,
            version=self.version,
        )
        body = encode_body(snap)
        self.bytes_sent.append(len(body))
        received = decode_body(body, sha256=f"{self.version:064x}")
        sent = [
            _Sent(hb.link, hb.route) if hb is not None and hb.vacant else _Sent(-1, ())
            for hb in self.latest
        ]
        self.snapshots.append((t_s, received, sent))
        if len(self.snapshots) > 4:
            del self.snapshots[0]

    def seen_by(self, cab: int, t_s: float) -> tuple[Snapshot | None, int, tuple[int, ...]]:
        """The newest snapshot cab ``cab`` has fetched by ``t_s`` (built at least its delay
        before), with the link and route it had reported in it (None: none yet)."""
        d = float(self.delay_s[cab])
        for built, snap, sent in reversed(self.snapshots):
            if built + d <= t_s:
                own = sent[cab]
                return snap, own.link, own.route
        return None, -1, ()


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
