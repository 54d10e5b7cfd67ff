"""What the fleet server bounds, below the routes (the ``server`` extra: uvicorn + starlette).

uvicorn has no deadline for receiving a request (its ``timeout_keep_alive`` covers only the
idle time between requests, and is reset by every byte), so a client sending its headers or
body one byte at a time would hold a connection, and a file descriptor, for ever. Three bounds:

* :class:`BoundedH11Protocol` (uvicorn's h11 protocol, subclassed): a connection must deliver
  complete request headers within ``header_timeout_s`` of opening (or of the previous response)
  or it gets ``408`` and is closed; a client address may hold ``max_connections_per_ip`` open
  connections, the next one gets ``429`` and is closed at once (its descriptor freed).
* :class:`BodyDeadline` (ASGI middleware): a request body must be complete within
  ``body_timeout_s`` of the headers, or ``408``.
* :class:`HTTPError` and :func:`guarded`: a route's error as one JSON answer (``{"error": …}``
  with its status), and a database that is away as 503 with ``Retry-After`` (both apps: the
  fleet server's and its live layer's).
* :class:`TokenBuckets`: requests per credential (token bucket: ``token_rate_per_s`` refill,
  ``token_burst`` capacity), over it ``429`` with ``Retry-After``.

uvicorn's own bounds stay in force: ``limit_concurrency`` (``503`` past it), the 16 KiB limit on
incomplete header data (h11), ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import h11
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from sync._serve_limits import ServeLimits
from sync.errors import SyncStorageError

__all__ = [
    "BodyDeadline",
    "BoundedH11Protocol",
    "ServeLimits",
    "TokenBuckets",
    "bounded_protocol",
    "prepare_process",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


log = logging.getLogger(__name__)


class HTTPError(Exception):
    """An answer other than 2xx from a route: ``status``, a one-line ``message``, headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def guarded(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """The route ``fn`` with :class:`HTTPError` as its JSON answer and a storage error (the
    database is away, a restart) as 503 "retry later"."""

    async def handler(request: Request) -> Response:
        try:
            resp: Response = await fn(request)
            return resp
        except HTTPError as e:
            return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)
        except SyncStorageError as e:  # the database is away (a restart): retry later
            log.warning("%s %s: %s", request.method, request.url.path, e)
            return JSONResponse(
                {"error": "storage unavailable, retry later"},
                status_code=503,
                headers={"retry-after": "1"},
            )

    return handler


class _OncePerInterval(logging.Filter):
    """Lets one "out of system resource" record of asyncio's through per ``interval_s``: at
    the open-files limit, asyncio logs a traceback for every failed accept (thousands a
    second), which would bury the log (or block on a full stderr pipe)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.last = -math.inf
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self.last < self.interval_s:
            self.suppressed += 1
            return False
        self.last = now
        record.msg = f"{record.msg} (open-files limit reached; {self.suppressed} more suppressed)"
        record.exc_info = None
        self.suppressed = 0
        return True


def prepare_process(limits: ServeLimits) -> None:
    """Before serving: raise the soft open-files limit to the hard one (a connection is a
    descriptor), say so if ``max_connections`` cannot fit, and quieten asyncio's flood of
    accept errors at that limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 16 if hard == resource.RLIM_INFINITY else hard
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if limits.max_connections + 64 > soft:
        log.warning(
            "open-files limit %d is below max_connections %d + 64: past it, new connections "
            "wait in the listen queue until others close (raise `ulimit -n`)",
            soft,
            limits.max_connections,
        )
    logging.getLogger("asyncio").addFilter(_OncePerInterval())


def _raw_response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class _ConnectionGate:
    """Open connections per client address (one event loop: no lock needed)."""

    def __init__(self, limits: ServeLimits) -> None:
        self.limits = limits
        self.per_ip: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def enter(self, ip: str) -> bool:
        n = self.per_ip.get(ip, 0)
        if n >= self.limits.max_connections_per_ip:
            self.refused += 1
            return False
        self.per_ip[ip] = n + 1
        return True

    def leave(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a per-address connection limit.

    Use :func:`bounded_protocol` to get the class for one set of limits (uvicorn builds the
    protocol itself, from ``Config(http=...)``)."""

    gate: _ConnectionGate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn wants a Transport
        self._ip = self.client[0] if self.client else ""
        self._counted = self.gate.enter(self._ip)
        self._header_timer: asyncio.TimerHandle | None = None
        if not self._counted:
            limit = self.gate.limits.max_connections_per_ip
            self.transport.write(
                _raw_response(
                    429,
                    "Too Many Requests",
                    f"more than {limit} open connections from {self._ip}",
                    "retry-after: 1\r\n",
                )
            )
            self.transport.close()
            return
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_timer = self.loop.call_later(
            self.gate.limits.header_timeout_s, self._header_deadline
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.gate.timed_out += 1
        self.transport.write(
            _raw_response(
                408,
                "Request Timeout",
                f"request headers not received within {self.gate.limits.header_timeout_s:g} s",
            )
        )
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request's headers are in
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()  # the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        if self._counted:
            self._counted = False
            self.gate.leave(self._ip)
        super().connection_lost(exc)


def bounded_protocol(limits: ServeLimits) -> type[BoundedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"gate": _ConnectionGate(limits)})


class _BodyTimeout(Exception):
    pass


class BodyDeadline:
    """ASGI middleware: the request body must be complete ``timeout_s`` after the headers,
    else ``408`` (if no response has started; the connection is closed either way)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body: waits for http.disconnect, unbounded
                msg: Message = await receive()
                return msg
            try:
                async with asyncio.timeout_at(deadline):
                    msg = await receive()
            except TimeoutError:
                raise _BodyTimeout from None
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                body_done = True
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except _BodyTimeout:
            if started:
                return
            body = json.dumps(
                {"error": f"request body not received within {self.timeout_s:g} s"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


class TokenBuckets:
    """A token bucket per key (a credential): ``rate_per_s`` refill, ``burst`` capacity.

    The least recently seen keys are forgotten past ``max_keys`` (a forgotten key starts with
    a full bucket again)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)) or burst < 1:
            raise ValueError("token rate must be positive and finite, burst at least 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if granted, else the seconds until one is due."""
        now = self.clock()
        level, last = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        wait = 0.0
        if level >= 1.0:
            level -= 1.0
        else:
            wait = (1.0 - level) / self.rate
        self._buckets[key] = (level, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
