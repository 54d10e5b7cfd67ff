"""The cab's side of the fleet's live layer: heartbeats up, signed live snapshots down.

:class:`LiveLink` runs two background threads for :class:`agent.runtime.Agent` when a fleet
server is configured (``--sync-server``):

* ``agent-heartbeat``: every ``heartbeat_every_s`` (15 s) one heartbeat
  (:class:`sync.live.HeartbeatClient`): the cab's matched link and position of the last tick,
  vacant or occupied from the taximeter (``POST /v1/meter``), the pickups and drop-offs since
  the last acknowledged heartbeat, and the next ~2 km (:data:`ROUTE_AHEAD_M`) of the route the
  driver is shown (global edge ids). Its time is the fix's, on the cab's clock: a heartbeat
  about a position older than two minutes is not sent (the HeartbeatClient's rule), never
  queued, never retried.
* ``agent-live-snapshot``: every ``snapshot_every_s`` (30 s, +-5 s of jitter) one
  ``GET /v1/live/snapshot`` with ``If-None-Match`` (:class:`sync.live.SnapshotClient`),
  verified through the fleet's TUF metadata the bundle client keeps (the live key is a role
  delegated by targets), archived once per version under ``<data dir>/live/`` for replay.

Both survive any error (logged, counted in ``GET /v1/status`` under ``sync.live``) and never
hold a tick: :meth:`LiveLink.tick_input` takes what the snapshot thread last accepted (a lock,
no I/O) and says why there is none (:class:`agent.decide.LiveInput`). ``sync.live`` is
imported only when a LiveLink is made (``import agent.runtime`` stays light), and a LiveLink
made loads neither httpx nor tuf: each thread's first request does (after the first
instruction, issue 20), so a restart's archived snapshot reaches the first tick without them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.decide import LIVE_NO_SNAPSHOT, LiveInput, TickResult

if TYPE_CHECKING:
    from sync.live import FetchOutcome, HeartbeatClient, SnapshotArchive, SnapshotClient
    from tiles import Graph

log = logging.getLogger(__name__)

#: how much of the shown route a heartbeat carries (the claims of the others' plans)
ROUTE_AHEAD_M = 2000.0
#: a heartbeat the server took more than this long before a snapshot was built no longer
#: counts in it: its route (the server's ``LiveConfig.max_age_s``) and its link as a cab
#: there now (``LiveConfig.current_s``)
COUNTED_FOR_S = 120.0
COUNTED_NOW_S = 45.0


@dataclass(frozen=True)
class Position:
    """What the next heartbeat says of the cab (from its last tick)."""

    t_s: float  # when the fix was taken, on the cab's clock
    link: int  # matched global edge id, -1 when not matched
    lon: float
    lat: float
    route: tuple[int, ...]  # the next ~2 km of the route shown (global ids); () when none


@dataclass(frozen=True)
class _Reported:
    server_s: float  # the server's clock when it took the heartbeat
    link: int  # -1 for an occupied cab (the server counts vacant cabs only)
    route: tuple[int, ...]


def route_ahead(
    graph: Graph, edges: tuple[int, ...], metres: float = ROUTE_AHEAD_M
) -> tuple[int, ...]:
    """The first links of ``edges`` (global ids) up to ``metres`` of road (the link that
    crosses the mark included); a link outside ``graph`` ends it."""
    if not edges:
        return ()
    loc = graph.local(np.asarray(edges, dtype=np.int64))
    out: list[int] = []
    run = 0.0
    for e, i in zip(edges, loc.tolist(), strict=True):
        if i < 0 or run >= metres:
            break
        out.append(int(e))
        run += float(graph.length_m[i])
    return tuple(out)


def position_of(result: TickResult, wall_s: float) -> Position | None:
    """The heartbeat's content after a tick made at ``wall_s`` (the cab's clock): the matched
    link (or the fix alone), the fix's time moved to the cab's clock, the route ahead when
    the driver is shown one. None without a usable fix."""
    fix = result.inputs.fix
    if fix is None or not (np.isfinite(fix.lon) and np.isfinite(fix.lat)):
        return None
    age = result.inputs.now_s - fix.time_s  # both on the GPS source's clock
    t_s = wall_s - (age if np.isfinite(age) and age > 0 else 0.0)
    m = result.match
    ins = result.instruction
    route: tuple[int, ...] = ()
    if ins.kind == "route" and result.graph is not None and len(ins.route_edges) > 1:
        route = route_ahead(result.graph, tuple(int(e) for e in ins.route_edges[1:]))
    if m is None:
        return Position(t_s, -1, float(fix.lon), float(fix.lat), ())
    return Position(t_s, int(m.best.edge_id), float(m.best.lon), float(m.best.lat), route)


class LiveLink:
    """The heartbeat and snapshot threads of one agent (module docstring)."""

    def __init__(
        self,
        *,
        server_url: str,
        token: str,
        area: str,
        network_sha256: str,
        data_dir: Path,
        tuf_dir: Path | None,
        clock: Callable[[], float],
        ca_file: str | None = None,
        heartbeat_every_s: float = 15.0,
        snapshot_every_s: float = 30.0,
        keep_snapshots: int = 20_000,
    ) -> None:
        from sync._tls import client_verify
        from sync.live import (
            LIVE_NO_TRUST,
            HeartbeatClient,
            LiveClientConfig,
            SnapshotArchive,
            SnapshotClient,
            TrustSource,
        )

        self.area = area
        self.clock = clock
        self.heartbeat_every_s = heartbeat_every_s
        self.keep_snapshots = keep_snapshots
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._position: Position | None = None
        self._occupied = False
        self._reported: deque[_Reported] = deque(maxlen=64)
        self._heartbeats: Counter[str] = Counter()
        self._last_heartbeat: dict[str, Any] = {}
        self._unexpected = 0
        self._events_acked = 0
        self._last_fetch: FetchOutcome | None = None
        self._accepted = 0
        self._threads: list[threading.Thread] = []
        verify = client_verify(ca_file)  # SyncDataError for an unreadable CA file
        # one connection pool each (a slow snapshot download never delays a heartbeat), each
        # made by its thread's first request: httpx is not imported before the first tick
        self.heartbeat: HeartbeatClient = HeartbeatClient(
            server_url, token, area, network_sha256, timeout_s=2.0, verify=verify, clock=clock
        )
        self.archive: SnapshotArchive = SnapshotArchive(data_dir / "live")
        self.snapshots: SnapshotClient | None = None
        self._no_client_reason = LIVE_NO_TRUST
        if tuf_dir is None:
            log.info("live: no trusted fleet metadata (bundle sync is off): no snapshots")
            return
        try:
            self.snapshots = SnapshotClient(
                server_url,
                area,
                token,
                TrustSource(tuf_dir),
                archive=self.archive,
                network=network_sha256,
                config=LiveClientConfig(
                    every_s=snapshot_every_s, jitter_s=snapshot_every_s / 6, timeout_s=5.0
                ),
                verify=verify,
                clock=clock,
                rng=random.Random(),
            )
        except Exception as e:  # an unreadable archive: heartbeats still go, no snapshots
            self._no_client_reason = "LIVE_STORAGE"
            log.error("live: snapshot client cannot start: %s", e)

    # ---------------------------------------------------------------- from the agent
    def note(self, position: Position | None) -> None:
        """The last tick's position (the next heartbeat sends it)."""
        if position is not None:
            self._position = position

    def meter(self, occupied: bool, lon: float | None, lat: float | None) -> None:
        """A taximeter change: vacant -> occupied is a pickup, back a drop-off (sent with
        the next heartbeats until acknowledged; a change without a position is not)."""
        from sync.live import DROPOFF, PICKUP

        with self._lock:
            changed = occupied != self._occupied
            self._occupied = occupied
        if changed and lon is not None and lat is not None:
            self.heartbeat.record_event(PICKUP if occupied else DROPOFF, self.clock(), lon, lat)

    def set_network(self, network_sha256: str) -> None:
        """A new bundle: heartbeats and snapshots refer to its road network."""
        from sync.live import network_tag

        self.heartbeat.network = network_tag(network_sha256)
        if self.snapshots is not None:
            self.snapshots.network = network_sha256

    def tick_input(self, now_s: float) -> LiveInput:
        """What a tick at ``now_s`` (the cab's clock) plans with; no I/O."""
        from sync.live import LIVE_EXPIRED, LIVE_OTHER_NETWORK

        client = self.snapshots
        if client is None:
            return LiveInput(self.area, reason=self._no_client_reason)
        snap = client.latest(now_s)
        out = self._last_fetch
        reason = out.reason if out is not None and out.status in ("refused", "unreachable") else ""
        if snap is not None and client.network and snap.network not in ("", client.network):
            snap, reason = None, LIVE_OTHER_NETWORK  # held from before a bundle switch
        if snap is None:
            if not reason:
                reason = LIVE_EXPIRED if client.last_version > 0 else LIVE_NO_SNAPSHOT
            return LiveInput(self.area, reason=reason)
        own = self._own_before(snap.built_s)
        on_link = own is not None and snap.built_s - own.server_s <= COUNTED_NOW_S
        return LiveInput(
            self.area,
            snap,
            age_s=now_s - snap.built_s,
            own_link=own.link if own is not None and on_link else -1,
            own_route=() if own is None else own.route,
            reason=reason,
        )

    def _own_before(self, built_s: float) -> _Reported | None:
        """This cab's last heartbeat the server took before it built the snapshot."""
        with self._lock:
            for r in reversed(self._reported):
                if r.server_s <= built_s:
                    return r if built_s - r.server_s <= COUNTED_FOR_S else None
        return None

    def status(self) -> dict[str, Any]:
        c = self.snapshots
        with self._lock:
            out: dict[str, Any] = {
                "area": self.area,
                "heartbeats": dict(self._heartbeats),
                "last_heartbeat": dict(self._last_heartbeat),
                "events_acked": self._events_acked,
                "unexpected_errors": self._unexpected,
            }
        out["snapshot"] = (
            {"enabled": False, "reason": self._no_client_reason}
            if c is None
            else {
                "enabled": True,
                "version": c.last_version,
                "outcomes": c.outcomes(),
                "last_reason": c.last_reason,
            }
        )
        return out

    # ---------------------------------------------------------------- threads
    def start(self) -> None:
        loops: list[tuple[str, Callable[[], None], Callable[[], float]]] = [
            ("agent-heartbeat", self._heartbeat_once, lambda: self.heartbeat_every_s)
        ]
        if self.snapshots is not None:
            c = self.snapshots.config
            loops.append(
                (
                    "agent-live-snapshot",
                    self._fetch_once,
                    lambda: c.every_s + random.uniform(-c.jitter_s, c.jitter_s),
                )
            )
        for name, step, every in loops:
            t = threading.Thread(target=self._loop, args=(name, step, every), name=name)
            t.daemon = True
            t.start()
            self._threads.append(t)

    def _loop(self, name: str, step: Callable[[], None], every: Callable[[], float]) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception:  # a bug or data no check foresaw: the thread carries on
                with self._lock:
                    self._unexpected += 1
                log.exception("live: %s step failed unexpectedly; the thread carries on", name)
            self._stop.wait(max(every(), 0.01))

    def _heartbeat_once(self) -> None:
        pos = self._position
        if pos is None:  # no tick with a fix yet: nothing to say
            return
        with self._lock:
            vacant = not self._occupied
        route = pos.route if vacant else ()
        res = self.heartbeat.send(
            t_s=pos.t_s, link=pos.link, lon=pos.lon, lat=pos.lat, vacant=vacant, route=route
        )
        with self._lock:
            self._heartbeats[res.status] += 1
            self._last_heartbeat = {"status": res.status, "detail": res.detail}
            self._events_acked += res.events_acked
            if res.status == "accepted" and res.server_s is not None:
                self._reported.append(_Reported(res.server_s, pos.link if vacant else -1, route))
        if res.status != "accepted":
            log.info("live: heartbeat %s: %s", res.status, res.detail)

    def _fetch_once(self) -> None:
        assert self.snapshots is not None
        out = self.snapshots.fetch()
        self._last_fetch = out
        if out.status == "accepted":
            self._accepted += 1
            if self._accepted % 100 == 0:
                self.archive.prune(self.area, self.keep_snapshots)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10.0)
        self._threads.clear()
        if self.snapshots is not None:
            self.snapshots.close()
        self.heartbeat.close()
