"""The reference fleet server (starlette; the ``server`` extra). Imported only by
``nagashi fleet serve`` and tests: the agent never imports it.

* ``GET /metadata/…`` and ``GET /targets/…``: the TUF repository as static files (HTTP Range
  supported, so interrupted downloads resume). There is no write route: publishing is
  ``nagashi fleet publish`` on the server machine, with the signing keys, never over HTTP.
* ``POST /v1/logs``: a vehicle's msgpack batch (see :mod:`sync.logs`), gzip-compressed or not,
  size-capped before and after decompression, every field checked before anything is stored
  (400 with the reason), stored once per (vehicle_id, epoch, seq) and acknowledged from what the
  database holds (see :mod:`sync.logstore`). The token's vehicle must be the batch's vehicle.
* ``GET /v1/vehicles/{id}/logs``: engineers only.
* ``GET /healthz``.

What the server bounds (slow or too many clients, requests per token) is in
:mod:`sync._serving`; :func:`serve` binds the port first, so that a port in use is one clear
error (:class:`~sync.errors.SyncTransportError`), not uvicorn's log lines and exit status 3.
"""

from __future__ import annotations

import hashlib
import logging
import math
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sync._serve_limits import ServeLimits
from sync._serving import (
    BodyDeadline,
    HTTPError,
    TokenBuckets,
    bounded_protocol,
    guarded,
    prepare_process,
)
from sync.errors import SyncDataError, SyncStorageError, SyncTransportError
from sync.logs import MSGPACK, WIRE_SCHEMA
from sync.logstore import MAX_INT, LogStorage, Principal, check_batch, open_storage
from sync.names import is_hex64
from sync.repository import FleetRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    max_batch_bytes: int = 4 << 20
    max_records_per_batch: int = 20_000
    max_page_records: int = 5_000
    max_vehicle_id_chars: int = 128
    limits: ServeLimits = field(default_factory=ServeLimits)  # timeouts, connections, rates
    live_build_every_s: float = 30.0  # the live snapshots are rebuilt this often


def _pack(doc: dict[str, Any]) -> Response:
    return Response(msgpack.packb(doc, use_bin_type=True), media_type=MSGPACK)


class _LogRoutes:
    """The log and health routes (``/v1/logs``, ``/v1/health``, ``/v1/vehicles/{id}/logs``) over
    one log storage, with their bearer-token check and per-token rate limit."""

    def __init__(self, cfg: ServerConfig, store: LogStorage, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.buckets = TokenBuckets(
            cfg.limits.token_rate_per_s, cfg.limits.token_burst, cfg.limits.max_tracked_tokens
        )

    async def principal(self, request: Request) -> Principal:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPError(401, "missing bearer token")
        who = await run_in_threadpool(self.store.authenticate, token.strip())
        if who is None:
            raise HTTPError(401, "unknown token")
        wait = self.buckets.take(hashlib.sha256(token.strip().encode()).hexdigest())
        if wait > 0:
            raise HTTPError(
                429,
                f"more than {self.cfg.limits.token_burst} requests in a burst or "
                f"{self.cfg.limits.token_rate_per_s:g}/s for this token",
                {"retry-after": str(max(1, round(wait)))},
            )
        return who

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > self.cfg.max_batch_bytes:
                    raise HTTPError(413, f"batch larger than {self.cfg.max_batch_bytes} bytes")
            except ValueError as e:
                raise HTTPError(400, "bad Content-Length") from e
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise HTTPError(415, f"unsupported Content-Encoding {encoding!r} (gzip or none)")
        buf = bytearray()
        async for piece in request.stream():
            buf += piece
            if len(buf) > self.cfg.max_batch_bytes:
                raise HTTPError(413, f"batch larger than {self.cfg.max_batch_bytes} bytes")
        if encoding == "identity":
            return bytes(buf)
        # bounded inflation: a small body must not expand past the cap (a "zip bomb")
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(bytes(buf), self.cfg.max_batch_bytes + 1)
        except zlib.error as e:
            raise HTTPError(400, f"batch is not valid gzip: {e}") from e
        if len(out) > self.cfg.max_batch_bytes:
            raise HTTPError(413, f"batch larger than {self.cfg.max_batch_bytes} bytes uncompressed")
        if not inflater.eof or inflater.unused_data:
            raise HTTPError(400, "batch is not one complete gzip member")
        return out

    async def ingest(self, request: Request) -> Response:
        who = await self.principal(request)
        if who.kind != "vehicle":
            raise HTTPError(403, "only vehicles upload logs")
        body = await self.read_body(request)
        try:
            doc = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types
            raise HTTPError(400, f"batch is not msgpack: {type(e).__name__}") from e
        if not isinstance(doc, dict) or doc.get("schema_version") != WIRE_SCHEMA:
            raise HTTPError(400, "batch has an unknown schema_version")
        vehicle = doc.get("vehicle_id")
        if vehicle != who.subject:
            raise HTTPError(403, "a vehicle uploads only its own logs")
        records = doc.get("records")
        if not isinstance(records, list) or len(records) > self.cfg.max_records_per_batch:
            raise HTTPError(400, "records must be a list of bounded length")
        epoch = doc.get("epoch", "")  # absent: an outbox from before epochs
        rows: list[tuple[int, float, bytes]] = []
        for r in records:
            if not isinstance(r, dict):
                raise HTTPError(400, "record is not a map")
            seq, t_s, data = r.get("seq"), r.get("t_s"), r.get("data")
            if (
                not isinstance(seq, int)
                or isinstance(seq, bool)
                or not isinstance(t_s, int | float)
                or isinstance(t_s, bool)
                or not isinstance(data, bytes)
            ):
                raise HTTPError(400, "record needs seq > 0 (int), t_s (number), data (bytes)")
            try:
                t = float(t_s)
            except OverflowError as e:
                raise HTTPError(400, f"record {seq}: t_s is out of range") from e
            rows.append((seq, t, data))
        dropped = doc.get("dropped_total", 0)
        try:
            check_batch(rows, dropped, epoch)
        except SyncDataError as e:
            raise HTTPError(400, str(e)) from e
        res = await run_in_threadpool(
            self.store.insert_batch, who.subject, rows, dropped, self.clock(), epoch
        )
        return _pack(
            {
                "schema_version": WIRE_SCHEMA,
                "epoch": epoch,
                "acked": res.acked,
                "inserted": res.inserted,
                "duplicates": res.duplicates,
                "conflicts": res.conflicts,
            }
        )

    async def report_health(self, request: Request) -> Response:
        """A cab's health verdict on a bundle it tried (staged rollouts, sync.rollout)."""
        who = await self.principal(request)
        if who.kind != "vehicle":
            raise HTTPError(403, "only vehicles report health")
        body = await self.read_body(request)
        try:
            doc = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types
            raise HTTPError(400, f"report is not msgpack: {type(e).__name__}") from e
        if not isinstance(doc, dict) or doc.get("schema_version") != WIRE_SCHEMA:
            raise HTTPError(400, "report has an unknown schema_version")
        if doc.get("vehicle_id") != who.subject:
            raise HTTPError(403, "a vehicle reports only its own health")
        bundle_id, ok, detail = doc.get("bundle_id"), doc.get("ok"), doc.get("detail", "")
        if not isinstance(bundle_id, str) or not is_hex64(bundle_id):
            raise HTTPError(400, "bundle_id must be 64 lowercase hex characters")
        if not isinstance(ok, bool) or not isinstance(detail, str) or len(detail) > 500:
            raise HTTPError(400, "ok must be a boolean, detail a string of at most 500")
        await run_in_threadpool(
            self.store.record_health, who.subject, bundle_id, ok, detail, self.clock()
        )
        return _pack({"schema_version": WIRE_SCHEMA, "recorded": True})

    async def read_logs(self, request: Request) -> Response:
        who = await self.principal(request)
        if who.kind != "engineer":
            raise HTTPError(403, "only engineers read logs")
        vehicle = request.path_params["vehicle_id"]
        q = request.query_params
        unknown = sorted(set(q.keys()) - {"since_s", "after_id", "limit"})
        if unknown:
            raise HTTPError(400, f"unknown parameter(s) {', '.join(unknown)}")
        try:
            since_s = float(q.get("since_s", "0"))
            after = int(q.get("after_id", "0"))
            limit = int(q.get("limit", "1000"))
        except ValueError as e:
            raise HTTPError(400, "since_s, after_id and limit must be numbers") from e
        if not math.isfinite(since_s):
            raise HTTPError(400, "since_s must be finite")
        if not 0 <= after <= MAX_INT:
            raise HTTPError(400, "after_id must be in 0..2^63-1")
        if not 0 < limit <= MAX_INT:
            raise HTTPError(400, "limit must be positive")
        limit = min(limit, self.cfg.max_page_records)
        recs = await run_in_threadpool(self.store.read, vehicle, since_s, after, limit)
        dropped = await run_in_threadpool(self.store.dropped_total, vehicle)
        return _pack(
            {
                "schema_version": WIRE_SCHEMA,
                "vehicle_id": vehicle,
                "dropped_total": dropped,
                "records": [
                    {
                        "id": r.id,
                        "epoch": r.epoch,
                        "seq": r.seq,
                        "t_s": r.t_s,
                        "received_s": r.received_s,
                        "data": r.data,
                    }
                    for r in recs
                ],
                "next_after_id": recs[-1].id if len(recs) == limit else None,
            }
        )


async def _healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app(
    root: str | Path,
    config: ServerConfig | None = None,
    storage: LogStorage | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The ASGI app serving the repository under ``root`` and its log storage."""
    cfg = config or ServerConfig()
    repo = FleetRepository(root)
    repo.metadata_dir.mkdir(parents=True, exist_ok=True)
    repo.targets_dir.mkdir(parents=True, exist_ok=True)
    store: LogStorage = storage or open_storage(root)
    logs = _LogRoutes(cfg, store, clock)
    routes = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/v1/logs", guarded(logs.ingest), methods=["POST"]),
        Route("/v1/health", guarded(logs.report_health), methods=["POST"]),
        Route("/v1/vehicles/{vehicle_id}/logs", guarded(logs.read_logs), methods=["GET"]),
        Mount("/metadata", app=StaticFiles(directory=repo.metadata_dir), name="metadata"),
        Mount("/targets", app=StaticFiles(directory=repo.targets_dir), name="targets"),
    ]
    from sync._live_server import LiveConfig, LiveService, live_app  # sync.live's server

    # the live inputs: in the database when the log storage offers it (PostgreSQL: shared by
    # the server processes), else in this process's memory
    make_inputs = getattr(store, "live_inputs", None)
    inputs = make_inputs() if callable(make_inputs) else None
    live = LiveService(repo, LiveConfig(build_every_s=cfg.live_build_every_s), clock, inputs)
    routes.append(Mount("/v1/live", app=live_app(live, store.authenticate, cfg.limits)))
    body_deadline = Middleware(BodyDeadline, timeout_s=cfg.limits.body_timeout_s)
    app = Starlette(routes=routes, middleware=[body_deadline])
    app.state.live = live
    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``: a port in use or a bad address is one clear error."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
        family, _, _, _, address = infos[0]
        # protocol IPPROTO_TCP, not 0 (socket.create_server's): asyncio sets TCP_NODELAY only on
        # such sockets, and without it a response written in two pieces waits ~40 ms for the
        # client's delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(2048)
        except BaseException:
            sock.close()
            raise
        return sock
    except OSError as e:  # gaierror included
        raise SyncTransportError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def serve(
    root: str | Path,
    host: str = "127.0.0.1",
    port: int = 8470,
    config: ServerConfig | None = None,
    *,
    database: str | None = None,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the server in the foreground (``nagashi fleet serve``) on ``host:port`` with the
    bounds of ``config.limits`` until SIGINT/SIGTERM; ``on_ready(url)`` once it listens.
    ``database`` is the log storage (:func:`sync.logstore.open_storage`: ROOT/fleet.sqlite by
    default, or ``postgresql://…``; several processes may share one PostgreSQL database).
    Everything is checked before (the root holds a repository, the database opens, the port is
    free)."""
    import uvicorn

    if not (Path(root) / "repo" / "metadata" / "1.root.json").is_file():
        raise SyncStorageError(
            f"{root} holds no fleet repository (mistyped --root? else `nagashi fleet keys init`)"
        )
    cfg = config or ServerConfig()
    lim = cfg.limits
    storage = open_storage(root, database)
    try:
        sock = listen(host, port)
    except BaseException:
        storage.close()
        raise
    prepare_process(lim)
    if on_ready is not None:
        bound = sock.getsockname()
        on_ready(f"http://{host}:{bound[1]}")
    uconfig = uvicorn.Config(
        create_app(root, cfg, storage=storage),
        http=bounded_protocol(lim),
        timeout_keep_alive=lim.keep_alive_s,
        limit_concurrency=lim.max_connections,
        log_level=log_level,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(uconfig)
    try:
        server.run(sockets=[sock])
    finally:
        storage.close()
    if not server.started:
        raise SyncTransportError(f"the server on {host}:{port} did not start (see the log above)")
