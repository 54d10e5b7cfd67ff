"""The cab's snapshot client (:class:`SnapshotClient`: :meth:`~SnapshotClient.fetch` one GET,
:meth:`~SnapshotClient.latest` no I/O, a background thread) and its settings and outcomes."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sync.errors import LiveRefusedError, SyncDataError, SyncStorageError
from sync.live.archive import SnapshotArchive
from sync.live.protocol import LIVE_UNREACHABLE
from sync.live.snapshot import Snapshot
from sync.live.trust import LiveTrust, TrustSource, verify_snapshot

if TYPE_CHECKING:  # httpx loads with the first fetch (the agent's start-up, issue 20)
    import ssl

    import httpx

log = logging.getLogger("sync.live")  # the name it logged under before the split


@dataclass(frozen=True)
class LiveClientConfig:
    every_s: float = 30.0  # background fetch period (plus jitter: cabs do not fetch together)
    jitter_s: float = 5.0
    timeout_s: float = 5.0
    skew_s: float = 60.0  # clock-skew allowance on built_s and expires_s
    max_bytes: int = 1 << 20  # envelope bound (the body inflates to at most 8x this)


@dataclass(frozen=True)
class FetchOutcome:
    status: str  # "accepted", "not_modified", "refused", "unreachable"
    reason: str = ""  # a LIVE_* code when refused or unreachable
    detail: str = ""
    version: int = 0
    bytes_received: int = 0


@dataclass
class _State:
    snapshot: Snapshot | None = None
    etag: str | None = None
    last_version: int = 0
    last_reason: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)


class SnapshotClient:
    """The cab's live snapshot: :meth:`fetch` (one GET, blocking, never raises for the
    network or a bad snapshot) and :meth:`latest` (no I/O: what a planning tick reads).
    :meth:`start` runs :meth:`fetch` in a background thread every ``every_s`` (+ jitter).
    Without a ``client`` it makes its own (TLS ``verify``) at the first fetch: a restart's
    archived snapshot is read back, and served by :meth:`latest`, without httpx or tuf."""

    def __init__(
        self,
        server_url: str,
        area: str,
        token: str,
        trust: TrustSource | LiveTrust,
        *,
        archive: SnapshotArchive | None = None,
        network: str | None = None,
        config: LiveClientConfig | None = None,
        client: httpx.Client | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or LiveClientConfig()
        self.url = server_url.rstrip("/") + "/v1/live/snapshot"
        self.area = area
        self.network = network
        self.trust = trust
        self.archive = archive
        self.clock = clock
        self._rng = rng or random.Random()
        self._own_client = client is None
        self._client = client
        self._verify = verify
        self._headers = {"authorization": f"Bearer {token}"}
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()  # making the client (not the state lock)
        self._state = _State()
        if archive is not None:  # a restart: the last accepted snapshot is the floor (and
            # still usable while valid); the server answers 304 while it has nothing newer
            v = archive.highest_version(area)
            self._state.last_version = v
            if v:
                try:
                    self._state.snapshot = archive.get(area, version=v)
                    self._state.etag = f'"{v}"'
                except (SyncStorageError, SyncDataError) as e:
                    log.warning("live snapshot %d of %s in the archive unusable: %s", v, area, e)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- reading
    def latest(self, now: float) -> Snapshot | None:
        """The last accepted snapshot if still valid at ``now`` (expiry + skew), else None."""
        with self._lock:
            s = self._state.snapshot
        if s is None or now > s.expires_s + self.config.skew_s:
            return None
        return s

    @property
    def last_reason(self) -> str:
        with self._lock:
            return self._state.last_reason

    @property
    def last_version(self) -> int:
        with self._lock:
            return self._state.last_version

    def outcomes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._state.outcomes)

    # ---------------------------------------------------------------- fetching
    def _http(self) -> httpx.Client:
        import httpx

        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.config.timeout_s, verify=self._verify)
            return self._client

    def _trust(self) -> LiveTrust:
        return self.trust.current() if isinstance(self.trust, TrustSource) else self.trust

    def _note(self, out: FetchOutcome) -> FetchOutcome:
        with self._lock:
            key = out.reason or out.status
            self._state.outcomes[key] = self._state.outcomes.get(key, 0) + 1
            if out.reason:
                self._state.last_reason = out.reason
        if out.status in ("refused", "unreachable"):
            log.warning("live snapshot %s: %s %s", out.status, out.reason, out.detail)
        return out

    def fetch(self) -> FetchOutcome:
        headers = dict(self._headers)
        with self._lock:
            if self._state.etag is not None:
                headers["if-none-match"] = self._state.etag
            last = self._state.last_version
        import httpx

        try:
            with self._http().stream(
                "GET", self.url, params={"area": self.area}, headers=headers
            ) as r:
                buf = bytearray()
                for piece in r.iter_bytes():
                    buf += piece
                    if len(buf) > self.config.max_bytes:
                        break
        except httpx.HTTPError as e:
            return self._note(FetchOutcome("unreachable", LIVE_UNREACHABLE, f"{e}"))
        if r.status_code == 304:
            return self._note(FetchOutcome("not_modified", "", "", last))
        if r.status_code != 200:
            return self._note(
                FetchOutcome("unreachable", LIVE_UNREACHABLE, f"HTTP {r.status_code}")
            )
        data = bytes(buf)
        now = self.clock()
        try:
            snap = verify_snapshot(
                data,
                self._trust(),
                now,
                area=self.area,
                last_version=last,
                network=self.network,
                skew_s=self.config.skew_s,
                max_bytes=self.config.max_bytes,
            )
            if self.archive is not None:
                self.archive.put(data, snap)
        except LiveRefusedError as e:
            return self._note(FetchOutcome("refused", e.reason, str(e), 0, len(data)))
        except SyncStorageError as e:  # the archive: a snapshot replay cannot find is unused
            return self._note(FetchOutcome("refused", "LIVE_STORAGE", str(e), 0, len(data)))
        with self._lock:
            if snap.version > self._state.last_version:
                self._state.snapshot = snap
                self._state.last_version = snap.version
                self._state.etag = r.headers.get("etag")
        return self._note(FetchOutcome("accepted", "", "", snap.version, len(data)))

    # ---------------------------------------------------------------- background
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="live-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.fetch()
            except Exception:  # a tick must keep its last good snapshot whatever happens
                log.exception("live snapshot fetch failed")
            c = self.config
            self._stop.wait(c.every_s + self._rng.uniform(-c.jitter_s, c.jitter_s))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.timeout_s + 5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if not self._own_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
