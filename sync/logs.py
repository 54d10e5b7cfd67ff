"""Trip-log upload (vehicle) and retrieval (engineer) over the fleet server's HTTP API.

Wire format (``schema_version`` 1), msgpack both ways::

    POST /v1/logs            Authorization: Bearer <vehicle token>
      {"schema_version": 1, "vehicle_id": str, "epoch": str, "dropped_total": int,
       "records": [{"seq": int, "t_s": float, "data": bytes}, ...]}
    -> {"schema_version": 1, "epoch": str, "acked": [seq, ...], "inserted": int,
        "duplicates": int, "conflicts": int}

    GET /v1/vehicles/<vehicle_id>/logs?since_s=<unix s>&after_id=<int>&limit=<int>
                             Authorization: Bearer <engineer token>
    -> {"schema_version": 1, "vehicle_id": str, "dropped_total": int,
        "records": [{"id", "epoch", "seq", "t_s", "data", "received_s"}, ...],
        "next_after_id": int | None}

``epoch`` names the cab's outbox (see :class:`sync.outbox.Outbox`); ``id`` is the server's
arrival order, the read cursor. ``dropped_total`` on the read side is what the vehicle's
outboxes dropped at their bound, summed: records that never reached the server.

Batches travel gzip-compressed (``Content-Encoding: gzip``; trip logs shrink to about a third,
which is what a cab's cellular plan pays for); the server also takes them uncompressed.

The server stores each (vehicle_id, epoch, seq) once; re-sending a batch is harmless, so the
:class:`LogUploader` deletes records from the outbox only when they are acknowledged and
otherwise retries with exponential backoff and jitter.
"""

from __future__ import annotations

import gzip
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack

from sync._tls import certificate_problem, certificate_refused, client_verify
from sync.backoff import backoff_delay_s
from sync.errors import SyncAuthError, SyncDataError, SyncTransportError
from sync.outbox import Outbox, OutboxRecord

log = logging.getLogger(__name__)

WIRE_SCHEMA = 1
MSGPACK = "application/msgpack"


#: the log reader's retries: 0.5 s doubling, at most this long
PAGE_RETRY_MAX_S = 30.0


@dataclass(frozen=True)
class LogClientConfig:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_response_bytes: int = 64 << 20
    page_records: int = 1000
    #: gzip level of uploaded batches (0: send them uncompressed)
    gzip_level: int = 6
    #: PEM file of the CA the server's certificate must chain to (None: the system's)
    ca_file: str | None = None


@dataclass(frozen=True)
class LogRecord:
    vehicle_id: str
    seq: int
    t_s: float
    data: bytes
    received_s: float | None = None
    epoch: str = ""

    def payload(self) -> Any:
        return msgpack.unpackb(self.data, raw=False)


def _unpack(resp: httpx.Response, limit: int) -> dict[str, Any]:
    body = resp.content
    if len(body) > limit:
        raise SyncDataError(f"server answer of {len(body)} bytes exceeds {limit}")
    try:
        doc = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise SyncDataError(f"server answer is not msgpack: {e}") from e
    if not isinstance(doc, dict):
        raise SyncDataError("server answer is not a map")
    return doc


class LogClient:
    """HTTP client of the log API, with one bearer token."""

    def __init__(
        self,
        server_url: str,
        token: str,
        config: LogClientConfig | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.config = config or LogClientConfig()
        self.base = server_url.rstrip("/")
        c = self.config
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s),
            verify=client_verify(c.ca_file),
        )
        self._headers = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        self._client.close()

    def _request(
        self, method: str, url: str, extra_headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {**self._headers, **(extra_headers or {})}
        try:
            resp = self._client.request(method, url, headers=headers, **kw)
        except httpx.HTTPError as e:
            problem = certificate_problem(e)
            if problem is not None:  # a wrong CA or host name: not retried
                raise certificate_refused(f"{method} {url}", problem) from e
            raise SyncTransportError(f"{method} {url}: {type(e).__name__}: {e}") from e
        if resp.status_code in (401, 403):
            raise SyncAuthError(f"{method} {url}: HTTP {resp.status_code} {resp.text[:200]}")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise SyncTransportError(f"{method} {url}: HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise SyncDataError(f"{method} {url}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp

    def upload(
        self,
        vehicle_id: str,
        records: Sequence[OutboxRecord],
        dropped_total: int,
        epoch: str = "",
    ) -> list[int]:
        """Send one batch of outbox ``epoch``; the sequence numbers the server acknowledged
        (SyncDataError when the answer is not about this epoch)."""
        body = msgpack.packb(
            {
                "schema_version": WIRE_SCHEMA,
                "vehicle_id": vehicle_id,
                "epoch": epoch,
                "dropped_total": int(dropped_total),
                "records": [{"seq": r.seq, "t_s": r.t_s, "data": r.data} for r in records],
            },
            use_bin_type=True,
        )
        headers = {"Content-Type": MSGPACK}
        if self.config.gzip_level > 0:
            # mtime=0: the same batch gives the same bytes on every retry
            body = gzip.compress(body, compresslevel=self.config.gzip_level, mtime=0)
            headers["Content-Encoding"] = "gzip"
        resp = self._request("POST", f"{self.base}/v1/logs", content=body, extra_headers=headers)
        doc = _unpack(resp, self.config.max_response_bytes)
        acked = doc.get("acked")
        if not isinstance(acked, list) or not all(type(s) is int for s in acked):
            raise SyncDataError("server answer lacks acked")
        if doc.get("epoch") != epoch:
            # a server that ignores the epoch would take a new outbox's records for old ones
            raise SyncDataError(
                f"server acknowledged outbox epoch {doc.get('epoch')!r}, not {epoch!r}"
            )
        return list(acked)

    def report_health(self, vehicle_id: str, bundle_id: str, ok: bool, detail: str = "") -> None:
        """Tell the server how a bundle this cab tried did (staged rollouts)."""
        body = msgpack.packb(
            {
                "schema_version": WIRE_SCHEMA,
                "vehicle_id": vehicle_id,
                "bundle_id": bundle_id,
                "ok": bool(ok),
                "detail": detail[:500],
            },
            use_bin_type=True,
        )
        self._request(
            "POST",
            f"{self.base}/v1/health",
            {"Content-Type": MSGPACK},
            content=body,
        )

    def fetch_page(
        self, vehicle_id: str, since_s: float, after_id: int = 0, limit: int | None = None
    ) -> tuple[list[LogRecord], int | None, int]:
        """One page: (records, next_after_id or None, dropped_total)."""
        params = {
            "since_s": repr(float(since_s)),
            "after_id": str(int(after_id)),
            "limit": str(int(limit or self.config.page_records)),
        }
        resp = self._request("GET", f"{self.base}/v1/vehicles/{vehicle_id}/logs", params=params)
        doc = _unpack(resp, self.config.max_response_bytes)
        recs = [
            LogRecord(
                vehicle_id,
                int(r["seq"]),
                float(r["t_s"]),
                bytes(r["data"]),
                float(r["received_s"]) if r.get("received_s") is not None else None,
                str(r.get("epoch", "")),
            )
            for r in doc.get("records", [])
        ]
        nxt = doc.get("next_after_id")
        return recs, (int(nxt) if nxt is not None else None), int(doc.get("dropped_total", 0))

    def iter_pages(
        self,
        vehicle_id: str,
        since_s: float,
        *,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[tuple[list[LogRecord], int]]:
        """(records, dropped_total) page by page since ``since_s``; a page that fails in
        transport is asked again (up to ``attempts`` times, 0.5 s doubling between tries)."""
        after = 0
        while True:
            for attempt in range(1, attempts + 1):
                try:
                    recs, nxt, dropped = self.fetch_page(vehicle_id, since_s, after)
                    break
                except SyncTransportError:
                    if attempt == attempts:
                        raise
                    sleep(backoff_delay_s(attempt, 0.5, PAGE_RETRY_MAX_S))
            yield recs, dropped
            if nxt is None:
                return
            after = nxt

    def iter_logs(
        self,
        vehicle_id: str,
        since_s: float,
        *,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[LogRecord]:
        """Every record since ``since_s``, in the order the server received them."""
        for recs, _ in self.iter_pages(vehicle_id, since_s, attempts=attempts, sleep=sleep):
            yield from recs


@dataclass(frozen=True)
class VehicleLogs:
    """A vehicle's records on the server, and what its outboxes dropped at their bound
    (records the server never received: absent from ``records``)."""

    records: list[LogRecord]
    dropped_total: int


def fetch_vehicle_logs(
    server_url: str,
    token: str,
    vehicle_id: str,
    since_s: float,
    *,
    client: httpx.Client | None = None,
    attempts: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    ca_file: str | None = None,
) -> VehicleLogs:
    """Every record of ``vehicle_id`` with ``t_s >= since_s`` (engineer token), in arrival
    order, with the vehicle's ``dropped_total`` (the building block of ``nagashi logs pull``)."""
    lc = LogClient(server_url, token, LogClientConfig(ca_file=ca_file), client=client)
    records: list[LogRecord] = []
    dropped = 0
    try:
        for recs, d in lc.iter_pages(vehicle_id, since_s, attempts=attempts, sleep=sleep):
            records.extend(recs)
            dropped = max(dropped, d)
    finally:
        if client is None:
            lc.close()
    return VehicleLogs(records, dropped)


def fetch_logs(
    server_url: str,
    token: str,
    vehicle_id: str,
    since_s: float,
    *,
    client: httpx.Client | None = None,
    attempts: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    ca_file: str | None = None,
) -> list[LogRecord]:
    """The records of :func:`fetch_vehicle_logs`."""
    return fetch_vehicle_logs(
        server_url,
        token,
        vehicle_id,
        since_s,
        client=client,
        attempts=attempts,
        sleep=sleep,
        ca_file=ca_file,
    ).records


@dataclass(frozen=True)
class RetryConfig:
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    max_attempts: int = 8  # consecutive failures before flush() gives up (records stay)


@dataclass(frozen=True)
class FlushResult:
    sent: int
    batches: int
    failures: int
    remaining: int


class LogUploader:
    """Drains an :class:`Outbox` to the server. ``sleep`` and ``rng`` are injected."""

    def __init__(
        self,
        outbox: Outbox,
        client: LogClient,
        vehicle_id: str,
        config: RetryConfig | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.vehicle_id = vehicle_id
        self.config = config or RetryConfig()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def delay_s(self, failures: int) -> float:
        """Backoff before retry number ``failures`` (≥1): capped exponential, full jitter
        over the upper half (never zero, never above the cap)."""
        c = self.config
        return backoff_delay_s(failures, c.base_delay_s, c.max_delay_s, self._rng)

    def flush(self) -> FlushResult:
        """Upload until the outbox is empty; raise :class:`SyncTransportError` after
        ``max_attempts`` consecutive failures (every unacknowledged record stays)."""
        sent = batches = failures = consecutive = 0
        while True:
            batch = self.outbox.pending()
            if not batch:
                return FlushResult(sent, batches, failures, 0)
            try:
                acked = self.client.upload(
                    self.vehicle_id, batch, self.outbox.dropped_total, self.outbox.epoch
                )
            except SyncTransportError as e:
                failures += 1
                consecutive += 1
                if consecutive >= self.config.max_attempts:
                    raise SyncTransportError(
                        f"log upload failed {consecutive} times in a row; "
                        f"{self.outbox.stats()['records']} records kept: {e}"
                    ) from e
                delay = self.delay_s(consecutive)
                log.info("log upload failed (%s); retrying in %.2f s", e, delay)
                self._sleep(delay)
                continue
            consecutive = 0
            want = {r.seq for r in batch}
            sent += self.outbox.ack(s for s in acked if s in want)
            batches += 1
            if not want.intersection(acked):
                raise SyncDataError("server acknowledged none of the batch")
