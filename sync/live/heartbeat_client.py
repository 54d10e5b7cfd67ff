"""The cab's heartbeat sender (:class:`HeartbeatClient`: one POST, never a retry) and what one
send came to (:class:`HeartbeatResult`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from sync.errors import LiveInputError
from sync.live.heartbeat import Heartbeat, MeterEvent, encode_heartbeat, network_tag
from sync.live.protocol import EVENT_KINDS, EVENT_MAX_AGE_S, MAX_EVENTS, MAX_ROUTE_EDGES, MSGPACK

if TYPE_CHECKING:  # httpx loads with the first heartbeat sent (the agent's start-up, issue 20)
    import ssl

    import httpx


@dataclass(frozen=True)
class HeartbeatResult:
    status: str  # "accepted", "stale" (not sent or dropped), "refused", "unreachable"
    detail: str = ""
    bytes_sent: int = 0
    events_acked: int = 0
    #: the server's clock when it took the heartbeat (accepted only): the cab compares it with
    #: a snapshot's ``built_s`` to know which of its heartbeats the snapshot counted
    server_s: float | None = None


class HeartbeatClient:
    """The cab's heartbeat sender: one POST, a short timeout, never a retry.

    Meter events are kept (at most :data:`MAX_EVENTS`, at most an hour old) and carried by
    every heartbeat until one is acknowledged, from the first whose ``t_s`` is not before
    them (the server takes a heartbeat's events of the hour up to its time: a meter change
    after the position being sent goes with a later one). A heartbeat older than
    ``max_age_s`` by the cab's clock is not sent: the next one carries the fresh state.
    Without a ``client`` it makes its own (``timeout_s``, TLS ``verify``) when it first
    sends."""

    def __init__(
        self,
        server_url: str,
        token: str,
        area: str,
        network_sha256: str,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 2.0,
        verify: ssl.SSLContext | bool = True,
        max_age_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = server_url.rstrip("/") + "/v1/live/heartbeat"
        self.area = area
        self.network = network_tag(network_sha256)
        self.max_age_s = max_age_s
        self.clock = clock
        self._own_client = client is None
        self._client = client
        self._timeout_s = timeout_s
        self._verify = verify
        self._headers = {"authorization": f"Bearer {token}", "content-type": MSGPACK}
        self._pending: list[MeterEvent] = []
        self._lock = threading.Lock()
        self._client_lock = threading.Lock()  # making the client (not the state lock)

    def _http(self) -> httpx.Client:
        import httpx

        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout_s, verify=self._verify)
            return self._client

    def close(self) -> None:
        if not self._own_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def record_event(self, kind: int, t_s: float, lon: float, lat: float) -> None:
        if kind not in EVENT_KINDS:
            raise LiveInputError("event kind must be PICKUP or DROPOFF")
        with self._lock:
            self._pending.append(MeterEvent(kind, int(t_s), lon, lat))
            del self._pending[:-MAX_EVENTS]

    def pending_events(self) -> tuple[MeterEvent, ...]:
        with self._lock:
            return tuple(self._pending)

    def send(
        self,
        *,
        t_s: float,
        link: int,
        lon: float,
        lat: float,
        vacant: bool,
        route: Sequence[int] = (),
    ) -> HeartbeatResult:
        now = self.clock()
        t = int(t_s)
        if now - t > self.max_age_s:
            return HeartbeatResult("stale", f"{now - t:.0f} s old by the cab's clock: not sent")
        with self._lock:  # the server takes events of the hour up to t_s: older ones are
            # dropped, newer ones (a meter change after the position sent) wait for a later t_s
            self._pending = [e for e in self._pending if e.t_s >= t - EVENT_MAX_AGE_S]
            events = tuple(e for e in self._pending if e.t_s <= t)
        hb = Heartbeat(
            self.area,
            t,
            self.network,
            link,
            lon,
            lat,
            vacant,
            events,
            tuple(route[:MAX_ROUTE_EDGES]),
        )
        body = encode_heartbeat(hb)
        import httpx

        try:
            r = self._http().post(self.url, content=body, headers=self._headers)
        except httpx.HTTPError as e:
            return HeartbeatResult("unreachable", f"{type(e).__name__}: {e}", len(body))
        if r.status_code == 200:
            with self._lock:
                self._pending = [e for e in self._pending if e not in events]
            return HeartbeatResult("accepted", "", len(body), len(events), _server_s(r.content))
        detail = _error_text(r)
        if r.status_code == 422:
            return HeartbeatResult("stale", detail, len(body))
        if r.status_code >= 500 or r.status_code == 429:
            return HeartbeatResult("unreachable", f"{r.status_code} {detail}", len(body))
        return HeartbeatResult("refused", f"{r.status_code} {detail}", len(body))


def _server_s(content: bytes) -> float | None:
    """``server_s`` of a heartbeat's answer (None when the answer does not carry one)."""
    try:
        doc = msgpack.unpackb(content, raw=False, max_map_len=8)
    except Exception:  # msgpack raises several unrelated types; the heartbeat was taken
        return None
    v = doc.get("server_s") if isinstance(doc, dict) else None
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        return None
    return float(v)


def _error_text(r: httpx.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return r.text[:200]
    return str(doc.get("error", ""))[:200] if isinstance(doc, dict) else ""
