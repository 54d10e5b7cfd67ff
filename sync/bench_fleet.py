"""Fleet server under a fleet: N simulated cabs upload trip logs, send live heartbeats, poll
for bundles and fetch the live snapshot.

``nagashi bench fleet --cabs 300 --interval-s 15 --minutes 1 --database all --json``

Every back end asked for gets its own fleet root and a real ``nagashi fleet serve`` (in
separate processes on 127.0.0.1; ``postgresql-2proc`` is two processes on one PostgreSQL
database, the cabs spread over both). For PostgreSQL without ``--postgres-url`` a throwaway
cluster is made (initdb, pg_ctl on a loopback port) and removed.

Each cab (an asyncio task over one shared httpx.AsyncClient, keep-alive) wakes every
``--interval-s`` (first wake at a random offset) and sends:

* an upload: ``--records-per-upload`` msgpack records of about ``--record-bytes``, gzip, with
  its outbox epoch and increasing seqs (re-sent as the cab would when an upload fails);
* a bundle poll as the cab's TUF client makes it when nothing changed: ``GET
  /metadata/<n+1>.root.json`` (404) and ``GET /metadata/timestamp.json``;
* a live heartbeat (``POST /v1/live/heartbeat``: a link, a ~2 km route of 20 links, a meter
  pickup every fourth wake, re-sent until acknowledged), and every second wake (every 30 s at
  15 s) ``GET /v1/live/snapshot`` with ``If-None-Match`` as the cab's SnapshotClient does
  (a 503 before the first build is counted in ``snapshot_not_ready``, not as an error).

The fleet root publishes no bundle: its one area, ``bench-<back end>`` (runs may share one
``--postgres-url`` database), is entered in ``published.json``
with no files (the live layer needs only the area; without a demand table the snapshot has
no cell grid and counts links on any network). The servers rebuild the snapshot every
``--live-build-every`` seconds; after the run the snapshot each server serves is read back:
``snapshot_cabs`` (the vacant cabs it counts, per server: every cab, also across two
processes on PostgreSQL, when the run is longer than one build period).

Reported per back end: requests and requests/s, p50/p95/p99/max latency (ms) of uploads and
polls, errors (non-200 answers other than the 404 of the next root, and transport errors),
``records_acked``, ``records_stored`` (read back from the database after the run),
``records_lost`` (acknowledged but not stored; must be 0) and ``records_unacked`` (given up
after retries), duplicates (stored more than once; must be 0), the servers' peak RSS (MiB,
sampled every second) and whether the offered load was held (``lag_p99_ms``: how late the cabs'
wake-ups ran behind schedule). With ``sqlite`` in the run, ``ratios_to_sqlite`` gives each
other back end's figures divided by SQLite's of the same run (requests/s held, latency
percentiles, RSS): the figures to compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from sync._fs import atomic_write_bytes

if TYPE_CHECKING:  # the bench imports httpx only when it runs
    import httpx

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql", "postgresql-2proc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cabs", type=int, default=300)
    parser.add_argument("--interval-s", type=float, default=15.0, help="per cab, between wakes")
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the run")
    parser.add_argument(
        "--database",
        default="all",
        help="sqlite, postgresql, postgresql-2proc, or all (default: side by side)",
    )
    parser.add_argument("--postgres-url", default=None, help="use this database, not a new one")
    parser.add_argument("--records-per-upload", type=int, default=15)
    parser.add_argument("--record-bytes", type=int, default=200)
    parser.add_argument("--max-connections", type=int, default=256, help="client connections")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--live-build-every", type=float, default=30.0, help="the servers' snapshot period, s"
    )


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))] * 1000.0, 2)

    return {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "max": round(v[-1] * 1000.0, 2)}


@contextmanager
def _serve(
    root: Path, database: str | None, live_build_every_s: float = 30.0
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tools.cli", "fleet", "serve", "--root", str(root),
            "--port", "0", "--max-connections-per-ip", "100000", "--max-connections", "4096",
            "--token-burst", "1000", "--live-build-every", str(live_build_every_s)]  # fmt: skip
    if database:
        args += ["--database", database]
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
        if not m:
            raise RuntimeError(f"fleet serve did not start: {line}{proc.stderr.read()[-2000:]}")
        # keep draining stderr (warnings under load) so the server never blocks on it
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield m.group(1), proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _rss_sampler(pids: list[int], stop: threading.Event, peak: list[float]) -> None:
    import psutil

    procs = [psutil.Process(p) for p in pids]
    while not stop.is_set():
        total = 0.0
        for p in procs:
            with suppress(psutil.Error):
                total += p.memory_info().rss
        peak[0] = max(peak[0], total / 2**20)
        stop.wait(1.0)


class _Load:
    """The cabs' load on the servers at ``urls`` and what it measured (see the module
    docstring): one shared httpx.AsyncClient, at most ``--max-connections`` requests in
    flight."""

    def __init__(
        self,
        urls: list[str],
        args: argparse.Namespace,
        area: str,
        client: httpx.AsyncClient,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.urls, self.args, self.area = urls, args, area
        self.client = client
        self.loop = loop
        self.rng = random.Random(args.seed)
        self.lat: dict[str, list[float]] = {
            "upload": [], "poll": [], "heartbeat": [], "snapshot": []
        }  # fmt: skip
        self.lag: list[float] = []
        self.errors: dict[str, int] = {}
        self.acked: dict[str, set[int]] = {}
        self.unacked = 0
        self.requests = 0
        self.not_ready = 0
        self.events_unacked = 0
        self.pad = b"x" * max(0, args.record_bytes - 40)
        # at most --max-connections requests in flight: httpcore's pool assigns waiting
        # requests in O(waiting x connections), which with thousands of cabs queued made the
        # load generator, not the server, the bottleneck. Latency is measured from here: the
        # server's answer time with that many concurrent requests (``lag_p99_ms`` says when
        # the generator fell behind the offered schedule).
        self.in_flight = asyncio.Semaphore(args.max_connections)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def timed(self, kind: str, method: str, url: str, **kw: Any) -> httpx.Response | None:
        """The answer to one request (None on a transport error, counted), its latency kept."""
        import httpx

        async with self.in_flight:
            t0 = time.perf_counter()
            self.requests += 1
            try:
                r = await self.client.request(method, url, **kw)
            except httpx.HTTPError as e:
                self.error(f"{kind}:{type(e).__name__}")
                return None
            self.lat[kind].append(time.perf_counter() - t0)
            return r

    async def live(self, i: int, wake: int, headers: dict[str, str], state: dict[str, Any]) -> None:
        """One heartbeat (its pending pickups re-sent until acknowledged) and, every second
        wake, a snapshot fetch with the last ETag."""
        from sync.live import PICKUP, Heartbeat, MeterEvent, encode_heartbeat

        area = self.area
        base = self.urls[i % len(self.urls)]
        t = int(time.time())
        if wake % 4 == 0:
            state["events"].append(MeterEvent(PICKUP, t - 1, 139.70 + i * 1e-5, 35.66))
        link = 1 + (i * 37 + wake) % 50_000
        hb = Heartbeat(
            area=area, t_s=t, network=b"\0\0\0\0", link=link, lon=139.70 + i * 1e-5,
            lat=35.66, vacant=i % 5 != 0, events=tuple(state["events"][-32:]),
            route=tuple(range(link + 1, link + 21)),
        )  # fmt: skip
        r = await self.timed(
            "heartbeat", "POST", f"{base}/v1/live/heartbeat",
            content=encode_heartbeat(hb), headers=headers,
        )  # fmt: skip
        if r is not None and r.status_code == 200:
            state["events"].clear()
        elif r is not None:
            self.error(f"heartbeat:HTTP {r.status_code}")
        if wake % 2 == 1:
            h = {**headers, "If-None-Match": state["etag"]} if state["etag"] else headers
            r = await self.timed(
                "snapshot", "GET", f"{base}/v1/live/snapshot", params={"area": area},
                headers=h,
            )  # fmt: skip
            if r is not None and r.status_code == 200:
                state["etag"] = r.headers.get("etag", "")
            elif r is not None and r.status_code == 503:
                self.not_ready += 1
            elif r is not None and r.status_code != 304:
                self.error(f"snapshot:HTTP {r.status_code}")

    async def upload(
        self, base: str, vehicle: str, epoch: str, seq: int, headers: dict[str, str]
    ) -> int:
        """One upload of ``--records-per-upload`` records after ``seq`` (retried as a cab
        does, the same seqs); the last seq."""
        args = self.args
        mine = self.acked.setdefault(vehicle, set())
        records = []
        for _ in range(args.records_per_upload):
            seq += 1
            data = msgpack.packb({"kind": "tick", "seq": seq, "pad": self.pad})
            records.append({"seq": seq, "t_s": time.time(), "data": data})
        body = gzip.compress(
            msgpack.packb(
                {"schema_version": 1, "vehicle_id": vehicle, "epoch": epoch,
                 "dropped_total": 0, "records": records},
                use_bin_type=True,
            ),
            compresslevel=6,
        )  # fmt: skip
        want = {r["seq"] for r in records}
        for _attempt in range(5):  # a cab retries; the seqs are the same
            r = await self.timed(
                "upload", "POST", f"{base}/v1/logs", content=body,
                headers={**headers, "Content-Encoding": "gzip"},
            )  # fmt: skip
            if r is not None and r.status_code == 200:
                mine.update(set(msgpack.unpackb(r.content)["acked"]) & want)
                break
            if r is not None:
                self.error(f"upload:HTTP {r.status_code}")
            await asyncio.sleep(0.5)
        else:
            self.unacked += len(want - mine)
        return seq

    async def poll(self, base: str) -> None:
        """A bundle poll as the cab's TUF client makes it when nothing changed."""
        for path, ok in (("/metadata/2.root.json", 404), ("/metadata/timestamp.json", 200)):
            r = await self.timed("poll", "GET", f"{base}{path}")
            if r is not None and r.status_code != ok:
                self.error(f"poll:HTTP {r.status_code}")

    async def cab(self, i: int, vehicle: str, token: str) -> None:
        args, loop = self.args, self.loop
        base = self.urls[i % len(self.urls)]
        live_state: dict[str, Any] = {"events": [], "etag": ""}
        wake = 0
        epoch = secrets.token_hex(8)
        headers = {"Authorization": f"Bearer {token}"}
        seq = 0
        self.acked.setdefault(vehicle, set())
        start = loop.time()
        due = start + self.rng.uniform(0, args.interval_s)
        while due < start + args.minutes * 60.0:
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.lag.append(max(0.0, loop.time() - due))
            seq = await self.upload(base, vehicle, epoch, seq, headers)
            await self.poll(base)
            await self.live(i, wake, headers, live_state)
            wake += 1
            due += args.interval_s
        self.events_unacked += len(live_state["events"])

    def figures(self, wall: float, cabs: int) -> dict[str, Any]:
        lat = self.lat
        return {
            "requests": self.requests,
            "wall_s": round(wall, 1),
            "requests_per_s": round(self.requests / wall, 1),
            "offered_requests_per_s": round(4.5 * cabs / self.args.interval_s, 1),
            "upload_ms": _percentiles(lat["upload"]),
            "poll_ms": _percentiles(lat["poll"]),
            "heartbeat_ms": _percentiles(lat["heartbeat"]),
            "snapshot_ms": _percentiles(lat["snapshot"]),
            "heartbeats": len(lat["heartbeat"]),
            "snapshot_not_ready": self.not_ready,
            "pickups_unacked": self.events_unacked,
            "lag_p99_ms": _percentiles(self.lag)["p99"],
            "errors": sum(self.errors.values()),
            "error_kinds": dict(sorted(self.errors.items())),
            "acked": {v: sorted(s) for v, s in self.acked.items()},
            "records_unacked": self.unacked,
        }


async def _drive(
    urls: list[str], tokens: dict[str, str], args: argparse.Namespace, area: str
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(
        max_connections=args.max_connections, max_keepalive_connections=args.max_connections
    )
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:
        load = _Load(urls, args, area, client, asyncio.get_running_loop())
        t0 = time.perf_counter()
        await asyncio.gather(
            *(load.cab(i, v, t) for i, (v, t) in enumerate(sorted(tokens.items())))
        )
        wall = time.perf_counter() - t0
    return load.figures(wall, len(tokens))


def _one(backend: str, work: Path, args: argparse.Namespace, pg: Any) -> dict[str, Any]:
    from sync import FleetRepository
    from sync.logstore import open_storage

    root = work / backend
    repo = FleetRepository(root)
    repo.init(datetime.now(UTC).replace(microsecond=0))
    # the live layer's area (no bundle: see the module docstring)
    area = f"bench-{backend}"
    index = {"area": area, "bundle_id": "", "files": {}}
    atomic_write_bytes(repo.published_path, json.dumps({area: index}).encode())
    database = None
    if backend.startswith("postgresql"):
        database = args.postgres_url or pg().database()
    storage = open_storage(root, database)
    try:
        # names of their own per back end: runs may share one --postgres-url database
        names = [f"{backend}-cab-{i:05d}" for i in range(args.cabs)]
        tokens = {v: storage.add_token("vehicle", v, 0.0) for v in names}
        n_proc = 2 if backend.endswith("2proc") else 1
        with ExitStack() as stack:
            servers = [
                stack.enter_context(_serve(root, database, args.live_build_every))
                for _ in range(n_proc)
            ]
            stop, peak = threading.Event(), [0.0]
            sampler = threading.Thread(
                target=_rss_sampler, args=([p.pid for _, p in servers], stop, peak), daemon=True
            )
            sampler.start()
            try:
                out = asyncio.run(_drive([u for u, _ in servers], tokens, args, area))
            finally:
                stop.set()
                sampler.join(5)
            out["snapshot_cabs"] = [_snapshot_cabs(u, area, tokens[names[0]]) for u, _ in servers]
        acked = out.pop("acked")
        stored = lost = dup = 0
        for v in tokens:
            rows = storage.read(v, -1e18, 0, 10**9)
            seqs = [r.seq for r in rows]
            stored += len(seqs)
            dup += len(seqs) - len(set(seqs))
            lost += len(set(acked.get(v, [])) - set(seqs))
        out.update(
            {
                "servers": n_proc,
                "records_acked": sum(len(s) for s in acked.values()),
                "records_stored": stored,
                "records_lost": lost,
                "records_duplicated": dup,
                "server_peak_rss_mib": round(peak[0], 1),
            }
        )
        return out
    finally:
        storage.close()


def _snapshot_cabs(url: str, area: str, token: str) -> int | None:
    """The vacant cabs the snapshot a server serves counts (None: no snapshot)."""
    import httpx

    from sync.live import decode_body, open_envelope

    r = httpx.get(
        f"{url}/v1/live/snapshot",
        params={"area": area},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if r.status_code != 200:
        return None
    body, _ = open_envelope(r.content)
    return decode_body(body).vacant_cabs


def _ratios(figures: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    """``figures`` over the same run's ``peer`` (SQLite): requests/s, latencies, RSS."""

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if isinstance(a, int | float) and b else None

    out = {"requests_per_s": ratio(figures["requests_per_s"], peer["requests_per_s"])}
    for kind in ("upload", "poll", "heartbeat", "snapshot"):
        for q in ("p50", "p95", "p99"):
            key = f"{kind}_ms"
            out[f"{kind}_{q}"] = ratio(figures[key][q], peer[key][q])
    out["server_peak_rss"] = ratio(figures["server_peak_rss_mib"], peer["server_peak_rss_mib"])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sync._pgcluster import PgCluster

    wanted = BACKENDS if args.database == "all" else tuple(args.database.split(","))
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown or args.cabs < 1 or not args.interval_s > 0 or not args.minutes > 0:
        raise ValueError(f"--database: one of {', '.join(BACKENDS)} or all; positive sizes")
    work = Path(tempfile.mkdtemp(prefix="nagashi-bench-fleet-"))
    cluster: list[PgCluster] = []

    def pg() -> PgCluster:
        if not cluster:
            cluster.append(PgCluster())
        return cluster[0]

    result: dict[str, Any] = {
        "cabs": args.cabs,
        "interval_s": args.interval_s,
        "minutes": args.minutes,
        "cpus": os.cpu_count(),
    }
    try:
        for backend in wanted:
            result[backend] = _one(backend, work, args, pg)
            # progress: each back end's figures as soon as they are in (a long run)
            print(f"bench fleet: {backend}: {json.dumps(result[backend])}", file=sys.stderr)
    finally:
        for c in cluster:
            c.destroy()
        shutil.rmtree(work, ignore_errors=True)
    if "sqlite" in result:
        result["ratios_to_sqlite"] = {
            b: _ratios(result[b], result["sqlite"]) for b in wanted if b != "sqlite"
        }
    return result
