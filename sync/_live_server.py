"""The fleet server's live layer (starlette; mounted at ``/v1/live`` by :mod:`sync.server`).

* ``POST /v1/live/heartbeat``: a vehicle's heartbeat (see :mod:`sync.live`), authenticated
  like ``/v1/logs`` (bearer token of a vehicle, the same per-token rate limit; a token found
  in the database is remembered for ``auth_ttl_s``, 30 s, so a revoked token can still send
  heartbeats and read snapshots for up to 30 s), every field
  checked before anything is kept (400). A heartbeat older than ``max_age_s`` or more than
  ``max_ahead_s`` ahead of the server's clock is dropped (422, nothing kept, never queued).
  Answer: ``{"server_s", "events_acked"}`` (msgpack). 503 while the database is away.
* ``GET /v1/live/snapshot?area=A``: the area's latest signed snapshot (vehicles and
  engineers); ``ETag: "<version>"``, ``If-None-Match`` -> 304; 503 while none is built or
  the repository has no live key (``nagashi fleet keys rotate --role live``).

The live inputs (the latest heartbeat of each cab and the deduplicated pickups of the last
hour, per area) and the snapshot versions are kept by a :class:`LiveInputs` back end:

* :class:`MemoryLiveInputs` (``fleet serve --root DIR``, one process): in memory; a restart
  loses at most the perishable inputs (the cabs refill them within one heartbeat period; the
  pickups of the last hour come back empty); the versions are kept on disk
  (``live/versions.json`` under the fleet root), so they only grow across restarts.
* :class:`sync._live_pg.PostgresLiveInputs` (``--database postgresql://…``): in the database,
  shared by every server process on it, so each builds its snapshot from the same inputs; the
  version comes from the database (``UPDATE … RETURNING``), so versions only grow across
  processes and restarts, and every process serves the newest snapshot any of them built
  (kept in the database too): a cab whose requests go to several processes never sees a
  version go back.

A background task (started with the first live request) rebuilds every area's snapshot every
``build_every_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync._fs import atomic_write_bytes, read_bounded
from sync._serve_limits import ServeLimits
from sync._serving import HTTPError, TokenBuckets, guarded
from sync.errors import LiveInputError, SyncDataError, SyncStorageError
from sync.live import (
    EVENT_MAX_AGE_S,
    MAX_HEARTBEAT_BYTES,
    MSGPACK,
    PICKUP,
    GridSpec,
    Heartbeat,
    MeterEvent,
    build_snapshot,
    decode_heartbeat,
    encode_body,
    grid_spec,
    sign_envelope,
)
from sync.logstore import Principal
from sync.repository import FleetRepository

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class LiveConfig:
    build_every_s: float = 30.0
    expires_in_s: float = 180.0  # a snapshot's lifetime (a few build periods)
    max_age_s: float = 120.0  # older heartbeats are dropped
    max_ahead_s: float = 30.0  # a heartbeat further in the future: the cab's clock is wrong
    current_s: float = 45.0  # a vacant cab counts on its link for this long
    max_cabs_per_area: int = 50_000
    max_pickups_per_area: int = 500_000
    auth_ttl_s: float = 30.0  # a token looked up is trusted this long (revocation delay)


@dataclass
class _Area:
    network: str = ""
    grid: GridSpec | None = None
    signed: bytes | None = None  # the newest snapshot this process knows (built or read)
    version: int = 0


class LiveInputs(Protocol):
    """Where the live layer's inputs and snapshot versions are kept (thread-safe)."""

    def accept(self, vehicle: str, hb: Heartbeat, now: float, config: LiveConfig) -> None:
        """Keep ``hb`` as the cab's latest heartbeat in its area (unless a later one is kept)
        and its pickups of the last hour, each (cab, time) once. LiveInputError when the
        area already holds ``config.max_cabs_per_area`` other cabs."""
        ...

    def take(
        self, area: str, now: float, config: LiveConfig
    ) -> tuple[list[Heartbeat], list[MeterEvent]]:
        """The area's latest heartbeats at most ``max_age_s`` old (without their events) and
        its pickups of the last hour (at most ``max_pickups_per_area``, the latest, oldest
        first); older ones may be removed."""
        ...

    def next_version(self, area: str, now: float) -> int:
        """A new snapshot version: ``max(last + 1, int(now))``, never handed out twice."""
        ...

    def put_snapshot(self, area: str, version: int, signed: bytes) -> None:
        """Keep a built snapshot (shared back ends: unless a newer one is kept)."""
        ...

    def newer_snapshot(self, area: str, version: int) -> tuple[int, bytes] | None:
        """A kept snapshot newer than ``version`` (built by another process), else None."""
        ...


@dataclass
class _Inputs:
    latest: dict[str, Heartbeat] = field(default_factory=dict)
    pickups: deque[MeterEvent] = field(default_factory=deque)
    seen: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)  # cab -> events


class MemoryLiveInputs:
    """:class:`LiveInputs` in this process's memory; versions in ``versions_path`` (JSON)."""

    def __init__(self, versions_path: Path) -> None:
        self.versions_path = versions_path
        self._lock = threading.Lock()
        self._areas: dict[str, _Inputs] = {}
        self._versions = self._read_versions()

    def _read_versions(self) -> dict[str, int]:
        try:
            doc = json.loads(read_bounded(self.versions_path, 1 << 20))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, SyncDataError) as e:
            raise SyncStorageError(f"{self.versions_path} is unreadable: {e}") from e
        return {str(k): int(v) for k, v in doc.items()} if isinstance(doc, dict) else {}

    def accept(self, vehicle: str, hb: Heartbeat, now: float, config: LiveConfig) -> None:
        with self._lock:
            st = self._areas.setdefault(hb.area, _Inputs())
            prev = st.latest.get(vehicle)
            if prev is None and len(st.latest) >= config.max_cabs_per_area:
                raise LiveInputError(f"more than {config.max_cabs_per_area} cabs in {hb.area}")
            if prev is None or hb.t_s >= prev.t_s:
                st.latest[vehicle] = replace(hb, events=()) if hb.events else hb
            seen = st.seen.setdefault(vehicle, {})
            for e in hb.events:
                key = (e.kind, e.t_s)
                if key in seen:
                    continue
                seen[key] = e.t_s
                if e.kind == PICKUP and now - e.t_s <= EVENT_MAX_AGE_S:
                    st.pickups.append(e)
                    if len(st.pickups) > config.max_pickups_per_area:
                        st.pickups.popleft()
            if len(seen) > 4 * 32:
                for k in [k for k, t in seen.items() if now - t > EVENT_MAX_AGE_S]:
                    del seen[k]

    def take(
        self, area: str, now: float, config: LiveConfig
    ) -> tuple[list[Heartbeat], list[MeterEvent]]:
        with self._lock:
            st = self._areas.setdefault(area, _Inputs())
            for v in [v for v, h in st.latest.items() if now - h.t_s > config.max_age_s]:
                del st.latest[v]
                st.seen.pop(v, None)
            # in arrival order, not time order (a cab sends its older pickups after a newer
            # one): every one is checked, not only the first
            if any(now - e.t_s > EVENT_MAX_AGE_S for e in st.pickups):
                st.pickups = deque(e for e in st.pickups if now - e.t_s <= EVENT_MAX_AGE_S)
            return list(st.latest.values()), list(st.pickups)

    def next_version(self, area: str, now: float) -> int:
        with self._lock:
            version = max(self._versions.get(area, 0) + 1, int(now))
            self._versions[area] = version
            doc = json.dumps(self._versions, sort_keys=True).encode()
            self.versions_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.versions_path, doc)
        return version

    def put_snapshot(self, area: str, version: int, signed: bytes) -> None:
        return None  # one process: the service's own copy is the newest

    def newer_snapshot(self, area: str, version: int) -> tuple[int, bytes] | None:
        return None


def _area_context(repo: FleetRepository, index: dict[str, Any]) -> tuple[str, GridSpec | None]:
    """The network sha256 and cell grid of an area's published demand.json (read from the
    repository's own chunks); ("", None) when the bundle has none."""
    ent = index.get("files", {}).get("demand/demand.json")
    if not isinstance(ent, dict):
        return "", None
    try:
        data = b"".join(
            read_bounded(repo.targets_dir / "chunks" / f"{h}.{h}", 64 << 20) for h in ent["chunks"]
        )
        doc = json.loads(data)
        return str(doc.get("network_sha256", "")), grid_spec(doc["grid"])
    except (OSError, ValueError, KeyError, TypeError, SyncDataError) as e:
        log.warning("live: demand.json of area %s unreadable: %s", index.get("area"), e)
        return "", None


class LiveService:
    """The live layer's state and snapshot building (no HTTP: the app below calls it)."""

    def __init__(
        self,
        repo: FleetRepository,
        config: LiveConfig | None = None,
        clock: Callable[[], float] = time.time,
        inputs: LiveInputs | None = None,
    ) -> None:
        self.repo = repo
        self.config = config or LiveConfig()
        self.clock = clock
        self.inputs: LiveInputs = inputs or MemoryLiveInputs(repo.root / "live" / "versions.json")
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        # a heartbeat's stamp and keeping it, and a build's stamp and taking its inputs, each
        # one step (take_heartbeat, rebuild): a snapshot counts exactly the heartbeats stamped
        # at or before its built_s, which is how a cab finds its own one in it (agent.live)
        self._stamp_lock = threading.Lock()
        self._built_at = -math.inf  # the last build's stamp
        self._stamped_at = -math.inf  # the last heartbeat's stamp
        self._areas: dict[str, _Area] = {}
        self.builds_s: deque[float] = deque(maxlen=1000)  # build durations (the bench reads)
        self.problem = "no live snapshot built yet"
        self.refresh_areas()

    def refresh_areas(self) -> None:
        """Take the published areas (and their grid and network) from the repository."""
        try:
            published = self.repo.published()
        except SyncStorageError as e:
            log.warning("live: %s", e)
            return
        ctx = {a: _area_context(self.repo, i) for a, i in published.items()}
        with self._lock:
            for a, (network, grid) in ctx.items():
                st = self._areas.setdefault(a, _Area())
                st.network, st.grid = network, grid

    # ---------------------------------------------------------------- heartbeats
    def take_heartbeat(self, vehicle: str, hb: Heartbeat) -> tuple[int, float]:
        """:meth:`accept` at the server's clock, stamped and kept in one step against the
        builds of this process; returns (meter events acknowledged, the stamp), the stamp
        always after the last build's (so that a snapshot built before the heartbeat was kept
        never has a ``built_s`` at or after it, even at the clock's resolution)."""
        with self._stamp_lock:
            now = self.clock()
            if now <= self._built_at:
                now = math.nextafter(self._built_at, math.inf)
            acked = self.accept(vehicle, hb, now)
            self._stamped_at = max(self._stamped_at, now)
            return acked, now

    def accept(self, vehicle: str, hb: Heartbeat, now: float) -> int:
        """Keep a checked heartbeat; returns the meter events acknowledged. Raises
        LiveInputError (400) for an unknown area, ValueError (422) for a stale one,
        SyncStorageError (503) when the inputs' database is away."""
        cfg = self.config
        if now - hb.t_s > cfg.max_age_s:
            raise ValueError(f"heartbeat {now - hb.t_s:.0f} s old (dropped past {cfg.max_age_s:g})")
        if hb.t_s - now > cfg.max_ahead_s:
            raise ValueError(f"heartbeat {hb.t_s - now:.0f} s ahead of the server's clock")
        if not self.known(hb.area):
            raise LiveInputError(f"area {hb.area!r} is not published on this server")
        self.inputs.accept(vehicle, hb, now, cfg)
        return len(hb.events)

    def inputs_now(self, area: str) -> tuple[list[Heartbeat], list[MeterEvent]]:
        """The area's live inputs as the next build takes them (the latest heartbeat of each
        cab, the pickups of the last hour)."""
        return self.inputs.take(area, self.clock(), self.config)

    # ---------------------------------------------------------------- snapshots
    def rebuild(self, now: float | None = None) -> dict[str, int]:
        """Build and sign every area's snapshot; returns area -> version ({} without a live
        key). Versions only grow (``max(last + 1, int(now))``, from the inputs' back end)."""
        signer = self.repo.live_signer()
        if signer is None:
            self.problem = "the repository has no live key: `nagashi fleet keys rotate --role live`"
            return {}
        self.problem = "no live snapshot built yet"
        out: dict[str, int] = {}
        with self._build_lock:
            with self._lock:
                areas = sorted(self._areas)
            for area in areas:
                t0 = time.perf_counter()
                with self._stamp_lock:  # every heartbeat stamped at or before t is kept
                    t = max(self.clock(), self._stamped_at) if now is None else now
                    self._built_at = max(self._built_at, t)
                    hbs, pickups = self.inputs.take(area, t, self.config)
                with self._lock:
                    st = self._areas[area]
                    network, grid = st.network, st.grid
                version = self.inputs.next_version(area, t)
                snap = build_snapshot(
                    hbs,
                    t,
                    area=area,
                    pickups=pickups,
                    network=network,
                    grid=grid,
                    version=version,
                    expires_in_s=self.config.expires_in_s,
                    current_s=self.config.current_s,
                    planned_s=self.config.max_age_s,
                )
                signed = sign_envelope(encode_body(snap), [signer])
                self.inputs.put_snapshot(area, version, signed)
                self.builds_s.append(time.perf_counter() - t0)
                with self._lock:
                    if version > st.version:
                        st.signed, st.version = signed, version
                out[area] = version
        return out

    def current(self, area: str) -> tuple[int, bytes] | None:
        """The newest snapshot of ``area``: this process's, or a newer one another process
        built (shared back ends). A database that is away serves this process's copy."""
        with self._lock:
            st = self._areas.get(area)
            if st is None:
                return None
            have = st.version if st.signed is not None else 0
        try:
            newer = self.inputs.newer_snapshot(area, have)
        except SyncStorageError as e:
            log.warning("live: %s", e)
            newer = None
        with self._lock:
            if newer is not None and newer[0] > st.version:
                st.version, st.signed = newer
            if st.signed is None:
                return None
            return st.version, st.signed

    def context(self, area: str) -> tuple[str, GridSpec | None]:
        """The area's road network sha256 and cell grid (from its published demand.json)."""
        with self._lock:
            st = self._areas[area]
            return st.network, st.grid

    def known(self, area: str) -> bool:
        with self._lock:
            return area in self._areas


class _LiveRoutes:
    """The ``/v1/live`` routes over ``service``, with the background build task they start and
    their token check: a token found by ``authenticate`` is remembered for ``auth_ttl_s``."""

    def __init__(
        self,
        service: LiveService,
        authenticate: Callable[[str], Principal | None],
        limits: ServeLimits,
    ) -> None:
        self.service = service
        self.authenticate = authenticate
        self.lim = limits
        self.buckets = TokenBuckets(
            limits.token_rate_per_s, limits.token_burst, limits.max_tracked_tokens
        )
        self.ticker: dict[str, asyncio.Task[None]] = {}
        # token sha256 -> (principal, monotonic time it was looked up): a cab's heartbeat every
        # 15 s does not hit the token database each time; a revoked token stops within auth_ttl_s
        self.known: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self.auth_ttl_s = service.config.auth_ttl_s

    async def offload(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``: in a worker thread when the inputs are in a database, at once when
        they are in memory (no thread hop on the heartbeat path)."""
        if isinstance(self.service.inputs, MemoryLiveInputs):
            return fn(*args)
        return await run_in_threadpool(fn, *args)

    async def tick(self) -> None:
        service = self.service
        while True:
            try:
                await run_in_threadpool(service.refresh_areas)
                await run_in_threadpool(service.rebuild)
            except Exception:  # a failed build keeps the last snapshot; the next one retries
                log.exception("live: snapshot build failed")
            await asyncio.sleep(service.config.build_every_s)

    def ensure_ticker(self) -> None:
        task = self.ticker.get("task")
        if task is None or task.done():
            self.ticker["task"] = asyncio.get_running_loop().create_task(self.tick())

    async def principal(self, request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPError(401, "missing bearer token")
        digest = hashlib.sha256(token.encode()).hexdigest()
        known = self.known
        hit = known.pop(digest, None)
        t = time.monotonic()
        if hit is not None and t - hit[1] <= self.auth_ttl_s:
            who: Principal | None = hit[0]
            known[digest] = hit
        else:
            who = await run_in_threadpool(self.authenticate, token)
            if who is not None:
                known[digest] = (who, t)
                while len(known) > self.lim.max_tracked_tokens:
                    known.popitem(last=False)
        if who is None:
            raise HTTPError(401, "unknown token")
        wait = self.buckets.take(digest)
        if wait > 0:
            raise HTTPError(
                429, "too many requests for this token", {"retry-after": str(max(1, round(wait)))}
            )
        return who

    async def heartbeat(self, request: Request) -> Response:
        self.ensure_ticker()
        who = await self.principal(request)
        if who.kind != "vehicle":
            raise HTTPError(403, "only vehicles send heartbeats")
        buf = bytearray()
        async for piece in request.stream():
            buf += piece
            if len(buf) > MAX_HEARTBEAT_BYTES:
                raise HTTPError(413, f"heartbeat larger than {MAX_HEARTBEAT_BYTES} bytes")
        try:
            hb = decode_heartbeat(bytes(buf))
            acked, now = await self.offload(self.service.take_heartbeat, who.subject, hb)
        except LiveInputError as e:
            raise HTTPError(400, str(e)) from e
        except ValueError as e:
            raise HTTPError(422, str(e)) from e
        doc = {"server_s": now, "events_acked": acked}
        return Response(msgpack.packb(doc, use_bin_type=True), media_type=MSGPACK)

    async def snapshot(self, request: Request) -> Response:
        self.ensure_ticker()
        await self.principal(request)
        area = request.query_params.get("area", "")
        if not self.service.known(area):
            raise HTTPError(404, f"no live snapshot for area {area[:64]!r}")
        cur = await self.offload(self.service.current, area)
        if cur is None:
            raise HTTPError(503, self.service.problem, {"retry-after": "30"})
        version, data = cur
        etag = f'"{version}"'
        headers = {"etag": etag, "cache-control": "no-cache"}
        inm = request.headers.get("if-none-match", "")
        if etag in [x.strip() for x in inm.split(",")]:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=MSGPACK, headers=headers)


def live_app(
    service: LiveService,
    authenticate: Callable[[str], Principal | None],
    limits: ServeLimits | None = None,
) -> Starlette:
    """The ``/v1/live`` routes over ``service``; ``authenticate`` is the log storage's."""
    routes = _LiveRoutes(service, authenticate, limits or ServeLimits())
    return Starlette(
        routes=[
            Route("/heartbeat", guarded(routes.heartbeat), methods=["POST"]),
            Route("/snapshot", guarded(routes.snapshot), methods=["GET"]),
        ]
    )
