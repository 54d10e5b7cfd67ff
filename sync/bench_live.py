"""Live layer: heartbeats the fleet server takes, snapshot build time and size, cab-side apply.

Builds road tiles from a real OSM extract (Manhattan midtown by default), a bundle whose
demand grid is the demand model's 500 m grid, publishes it to a fleet repository and starts
``nagashi fleet serve`` in its own process on 127.0.0.1. ``--cabs`` simulated cabs (each with
its own vehicle token) stand on random links, 60 % of them vacant, each following a random
legal ~2 km route, with two or three pickups in the last hour:

* ``heartbeats_*``: every cab sends a heartbeat every ``--period-s`` for ``--seconds``, paced
  (each cab at its own offset in the period) from ``--connections`` keep-alive connections;
  ``heartbeats_lost`` counts every one not answered 200 (the goal is none), latency is from
  the scheduled send time to the answer (client queueing included). ``burst_heartbeats_per_s``:
  the same heartbeats sent as fast as the connections allow (the server's ceiling on this
  machine, the load generator sharing the cores).
* ``build_ms_p95`` (goal < 200 ms) and ``snapshot_bytes``: the server's snapshot code
  (:class:`sync._live_server.LiveService`) in this process, on a copy of the repository, fed
  the same cabs, for ``--cabs`` and for a tenth of them (300 and 3,000 by default).
* ``apply_ms_p95`` (goal < 5 ms): what a cab does with a fetched snapshot: verify the
  signature, version, expiry and shape, decode, and map it onto every link and cell of its
  network (``apply_cpu_ms_p95``: the same in CPU time of the thread, which a loaded machine's
  scheduler does not inflate).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sync._serve_process import FleetServerProcess
from tiles.fileio import real_data_dir

if TYPE_CHECKING:  # the bench imports sync.live only when it runs
    from sync.live import Snapshot

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OSM = real_data_dir() / "osm" / "nyc_manhattan_midtown.osm.pbf"
AREA = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--osm", type=Path, default=DEFAULT_OSM, help="OSM extract for tiles")
    parser.add_argument("--tiles", type=Path, help="use this tile database (skip the build)")
    parser.add_argument("--cabs", type=_at_least_10, default=3000)
    parser.add_argument("--period-s", type=float, default=15.0, help="heartbeat period")
    parser.add_argument("--seconds", type=float, default=30.0, help="paced load duration")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--builds", type=int, default=20, help="snapshot builds to time")
    parser.add_argument("--applies", type=int, default=200, help="cab-side applies to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--served-wait-s", type=float, default=40.0,
        help="wait this long for the server's own build to cover the cabs (0: one look)",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, help="keep the work directory here")


def _at_least_10(text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from e
    if n < 10:
        raise argparse.ArgumentTypeError("must be at least 10")
    return n


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Conn:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a load generator light enough
    that the figures are the server's rather than the client library's."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last = 0.0

    async def post(self, path: str, body: bytes, token: str) -> int:
        if self.writer is None or time.monotonic() - self.last > 3.0:  # server keep-alive 5 s
            if self.writer is not None:
                self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\nauthorization: Bearer {token}\r\n"
            f"content-type: application/msgpack\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        await self.reader.readexactly(length)
        self.last = time.monotonic()
        if close:
            self.writer.close()
            self.writer = None
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


class _Cabs:
    """Simulated cabs on a real network: a link, a vacant flag, a ~2 km legal route."""

    def __init__(self, tiles: Path, n: int, seed: int, network: str) -> None:
        from sync.live import PICKUP, Heartbeat, MeterEvent, network_tag
        from tiles import TileStore

        with TileStore(tiles) as store:
            g = store.all()
        self.graph = g
        rng = np.random.default_rng(seed)
        succ: dict[int, list[int]] = {}
        for a, b in np.asarray(g.turn_pairs).T.tolist():
            succ.setdefault(int(a), []).append(int(b))
        tag = network_tag(network)
        self.cabs: list[dict[str, Any]] = []
        now = time.time()
        for i in range(n):
            e = int(rng.integers(len(g.edge_id)))
            route: list[int] = []
            length = 0.0
            cur = e
            while length < 2000 and succ.get(cur):
                cur = int(rng.choice(succ[cur]))
                route.append(int(g.edge_id[cur]))
                length += float(g.length_m[cur])
            mid_lon = float(0.5 * (g.u_lon[e] + g.v_lon[e]))
            mid_lat = float(0.5 * (g.u_lat[e] + g.v_lat[e]))
            events = tuple(
                MeterEvent(PICKUP, int(now - rng.uniform(60, 3500)), mid_lon, mid_lat)
                for _ in range(int(rng.integers(2, 4)))
            )
            self.cabs.append(
                {
                    "id": f"bench-cab-{i}",
                    "hb": Heartbeat(
                        AREA,
                        int(now),
                        tag,
                        int(g.edge_id[e]),
                        mid_lon,
                        mid_lat,
                        bool(rng.random() < 0.6),
                        events,
                        tuple(route),
                    ),
                }
            )

    def at(self, i: int, t: float, with_events: bool) -> Any:
        import dataclasses

        hb = self.cabs[i]["hb"]
        ev = tuple(e for e in hb.events if e.t_s <= t) if with_events else ()
        return dataclasses.replace(hb, t_s=int(t), events=ev)


async def _paced(
    port: int, tokens: list[str], cabs: _Cabs, period: float, seconds: float, conns: int
) -> dict[str, Any]:
    from sync.live import encode_heartbeat

    n = len(tokens)
    offsets = np.random.default_rng(1).uniform(0, period, n)
    schedule = sorted((k * period + float(offsets[i]), k, i) for i in range(n)
                      for k in range(int(seconds // period) or 1))  # fmt: skip
    queue: asyncio.Queue[tuple[float, int, int] | None] = asyncio.Queue()
    lat: list[float] = []
    lost: list[str] = []
    sizes: list[int] = []
    sizes_first: list[int] = []
    t0 = time.monotonic()
    wall0 = time.time()

    async def producer() -> None:
        for due, k, i in schedule:
            delay = t0 + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await queue.put((due, k, i))
        for _ in range(conns):
            await queue.put(None)

    async def worker(conn: _Conn) -> None:
        while (item := await queue.get()) is not None:
            due, k, i = item  # the first round carries the cab's last hour of pickups
            body = encode_heartbeat(cabs.at(i, wall0 + due, with_events=k == 0))
            (sizes if k else sizes_first).append(len(body))
            try:
                status = await conn.post("/v1/live/heartbeat", body, tokens[i])
                if status != 200:
                    lost.append(str(status))
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
                lost.append(type(e).__name__)
                conn.writer = None
            lat.append(time.monotonic() - (t0 + due))

    pool = [_Conn("127.0.0.1", port) for _ in range(conns)]
    await asyncio.gather(producer(), *(worker(c) for c in pool))
    for c in pool:
        c.close()
    elapsed = time.monotonic() - t0
    return {
        "sent": len(schedule),
        "elapsed_s": elapsed,
        "lost": lost,
        "lat": lat,
        "sizes": sizes or sizes_first,
        "sizes_first": sizes_first,
    }


async def _burst(port: int, tokens: list[str], cabs: _Cabs, conns: int) -> dict[str, Any]:
    from sync.live import encode_heartbeat

    n = len(tokens)
    now = time.time()
    bodies = [encode_heartbeat(cabs.at(i, now, with_events=False)) for i in range(n)]
    lost = 0
    nxt = iter(range(n))

    async def worker(conn: _Conn) -> None:
        nonlocal lost
        for i in nxt:
            try:
                lost += await conn.post("/v1/live/heartbeat", bodies[i], tokens[i]) != 200
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                lost += 1
                conn.writer = None

    pool = [_Conn("127.0.0.1", port) for _ in range(conns)]
    t0 = time.monotonic()
    await asyncio.gather(*(worker(c) for c in pool))
    elapsed = time.monotonic() - t0
    for c in pool:
        c.close()
    return {"per_s": n / elapsed, "lost": lost}


def _snapshot_figures(root: Path, cabs: _Cabs, n: int, builds: int, applies: int) -> dict[str, Any]:
    from sync._live_server import LiveService
    from sync.live import LiveTrust, verify_snapshot
    from sync.repository import FleetRepository

    repo = FleetRepository(root)
    svc = LiveService(repo)
    now = time.time()
    for i in range(n):
        svc.accept(cabs.cabs[i]["id"], cabs.at(i, now, with_events=True), now)
    times: list[float] = []
    for _ in range(builds):
        svc.rebuild(time.time())
        times.append(svc.builds_s[-1])
    cur = svc.current(AREA)
    assert cur is not None
    _, data = cur
    trust = LiveTrust.from_metadata(
        repo.trusted_root_path().read_bytes(), repo.targets_md().to_bytes()
    )
    ids = cabs.graph.edge_id
    network, grid = svc.context(AREA)
    n_cells = grid[4] * grid[5] if grid else 0
    apply_s: list[float] = []
    apply_cpu_s: list[float] = []
    snap = None
    for _ in range(applies):
        t0, c0 = time.perf_counter(), time.thread_time()
        snap = verify_snapshot(data, trust, time.time(), area=AREA, network=network)
        snap.link_counts(ids)
        snap.cell_pickups(n_cells)
        apply_s.append(time.perf_counter() - t0)
        apply_cpu_s.append(time.thread_time() - c0)
    assert snap is not None
    return {
        "bytes": len(data),
        "links": len(snap.link_ids),
        "cells": len(snap.cell_ids),
        "build_ms_p50": round(_pct(times, 50) * 1e3, 2),
        "build_ms_p95": round(_pct(times, 95) * 1e3, 2),
        "apply_ms_p50": round(_pct(apply_s, 50) * 1e3, 3),
        "apply_ms_p95": round(_pct(apply_s, 95) * 1e3, 3),
        "apply_cpu_ms_p95": round(_pct(apply_cpu_s, 95) * 1e3, 3),
    }


def _published_fleet(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any], Path]:
    """Tiles, a bundle with the demand model's 500 m grid published to a fleet repository
    (and a copy of it for the in-process figures): the tiles, their meta, the fleet root."""
    from sync import BundleInputs, FleetRepository, build_bundle
    from sync._fixtures import base_manifest, composed, tiles_meta, write_inputs
    from tiles import build_tiles

    now = datetime.now(UTC).replace(microsecond=0)
    tiles = args.tiles or build_tiles(args.osm, work / "tiles")[0]
    meta = tiles_meta(tiles)
    m = base_manifest(meta["source_sha256"], area=AREA)
    src = work / "inputs"
    src.mkdir(exist_ok=True)
    shutil.copyfile(tiles, src / "tiles.sqlite")
    p = write_inputs(src, src / "tiles.sqlite", m, cell_m=500.0)
    bundle = build_bundle(
        composed(m), BundleInputs(p["tiles"], p["demand"], p["params"], p["area"]),
        work / "bundles",
    )  # fmt: skip
    fleet = work / "fleet"
    repo = FleetRepository(fleet)
    repo.init(now)
    repo.publish(bundle.path, AREA, now)
    shutil.copytree(fleet, work / "fleet-inproc")
    return tiles, meta, fleet


def _served_snapshot(url: str, token: str, args: argparse.Namespace) -> tuple[Snapshot | None, int]:
    """The snapshot the server serves and its size, once its own build covers half the cabs
    (or ``--served-wait-s`` has passed): (None, 0) when it serves none."""
    import httpx

    from sync.live import decode_body, open_envelope

    served: Snapshot | None = None
    served_bytes = 0
    deadline = time.monotonic() + args.served_wait_s  # its next build (every 30 s)
    while True:
        r = httpx.get(
            f"{url}/v1/live/snapshot",
            params={"area": AREA},
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        if r.status_code == 200:
            served, served_bytes = decode_body(open_envelope(r.content)[0]), len(r.content)
            if served.vacant_cabs + served.occupied_cabs >= args.cabs // 2:
                break
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return served, served_bytes


@dataclass(frozen=True)
class _ServerLoad:
    paced: dict[str, Any]
    burst: dict[str, Any]
    cpu_s: tuple[float, float, float]  # the server's CPU seconds before, between, after
    served: Snapshot | None
    served_bytes: int


def _server_load(
    fleet: Path, tokens: list[str], cabs: _Cabs, args: argparse.Namespace
) -> _ServerLoad:
    """The paced and burst heartbeats against a real ``nagashi fleet serve``, the server's CPU
    during each, and the snapshot it serves afterwards."""
    server = FleetServerProcess(fleet, start_timeout_s=30.0)
    try:
        cpu0 = _cpu_s(server.proc.pid)
        paced = asyncio.run(
            _paced(server.port, tokens, cabs, args.period_s, args.seconds, args.connections)
        )
        cpu1 = _cpu_s(server.proc.pid)
        burst = asyncio.run(_burst(server.port, tokens, cabs, args.connections))
        cpu2 = _cpu_s(server.proc.pid)
        served, served_bytes = _served_snapshot(server.url, tokens[0], args)
    finally:
        server.close()
    return _ServerLoad(paced, burst, (cpu0, cpu1, cpu2), served, served_bytes)


def _figures(
    args: argparse.Namespace,
    cabs: _Cabs,
    load: _ServerLoad,
    small: dict[str, Any],
    full: dict[str, Any],
) -> dict[str, Any]:
    """The report: the server's heartbeat figures, then the snapshot build and apply ones."""
    paced, burst, served = load.paced, load.burst, load.served
    cpu0, cpu1, cpu2 = load.cpu_s
    lat = paced["lat"]
    return {
        "osm": args.osm.name if not args.tiles else str(args.tiles),
        "edges": len(cabs.graph.edge_id),
        "cabs": args.cabs,
        "period_s": args.period_s,
        "heartbeats_sent": paced["sent"],
        "heartbeats_lost": len(paced["lost"]),
        "heartbeats_lost_first": paced["lost"][:3],
        "heartbeats_per_s": round(paced["sent"] / paced["elapsed_s"], 1),
        "heartbeats_needed_per_s": round(args.cabs / args.period_s, 1),
        "heartbeat_latency_ms_p50": round(_pct(lat, 50) * 1e3, 2),
        "heartbeat_latency_ms_p95": round(_pct(lat, 95) * 1e3, 2),
        "heartbeat_bytes_mean": round(float(np.mean(paced["sizes"])), 1),
        "heartbeat_bytes_p95": round(_pct([float(x) for x in paced["sizes"]], 95), 1),
        "heartbeat_bytes_with_hour_of_pickups_mean": round(float(np.mean(paced["sizes_first"])), 1),
        "server_cpu_ms_per_heartbeat": round((cpu1 - cpu0) * 1e3 / paced["sent"], 3),
        "server_cpu_ms_per_heartbeat_burst": round((cpu2 - cpu1) * 1e3 / args.cabs, 3),
        "burst_heartbeats_per_s": round(burst["per_s"], 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "burst_lost": burst["lost"],
        "served_snapshot_bytes": load.served_bytes,
        "served_snapshot_cabs": served.vacant_cabs + served.occupied_cabs if served else 0,
        f"snapshot_bytes_{max(1, args.cabs // 10)}_cabs": small["bytes"],
        f"snapshot_bytes_{args.cabs}_cabs": full["bytes"],
        "snapshot_links": full["links"],
        "snapshot_cells": full["cells"],
        "build_ms_p50": full["build_ms_p50"],
        "build_ms_p95": full["build_ms_p95"],
        f"build_ms_p95_{max(1, args.cabs // 10)}_cabs": small["build_ms_p95"],
        "apply_ms_p50": full["apply_ms_p50"],
        "apply_ms_p95": full["apply_ms_p95"],
        "apply_cpu_ms_p95": full["apply_cpu_ms_p95"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sync.logstore import SqliteLogStorage

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nagashi-bench-live-"))
    work.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    try:
        tiles, meta, fleet = _published_fleet(args, work)
        storage = SqliteLogStorage(fleet / "fleet.sqlite")
        tokens = [storage.add_token("vehicle", f"bench-cab-{i}", 0.0) for i in range(args.cabs)]
        storage.close()
        cabs = _Cabs(tiles, args.cabs, args.seed, meta["source_sha256"])
        load = _server_load(fleet, tokens, cabs, args)
        small = _snapshot_figures(
            work / "fleet-inproc", cabs, max(1, args.cabs // 10), args.builds, args.applies
        )
        shutil.rmtree(work / "fleet-inproc" / "live", ignore_errors=True)
        full = _snapshot_figures(work / "fleet-inproc", cabs, args.cabs, args.builds, args.applies)
        return _figures(args, cabs, load, small, full)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
