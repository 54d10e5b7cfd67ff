"""The fleet's live layer, transport and trust: heartbeats up, signed live snapshots down.

Cab -> server, ``POST /v1/live/heartbeat`` (msgpack, the cab's vehicle token, every ~15 s)::

    [1, area, t_s, net, link, lon_e6, lat_e6, vacant, events, route]

``t_s`` is the cab's clock (integer Unix seconds), ``net`` the first 4 bytes of the sha256 of
the road network its link ids refer to (the bundle's ``network_sha256``), ``link`` the matched
global edge id (-1: none), ``lon_e6``/``lat_e6`` the position in microdegrees, ``vacant`` from
the meter, ``events`` the meter events not yet acknowledged (``[kind, t_s, lon_e6, lat_e6]``,
kind 1 pickup, 2 drop-off, at most an hour old) and ``route`` the next ~2 km of global edge ids
it is following, delta-coded (the first id, then each id minus the one before: small numbers,
one msgpack byte each along a street). Live data is perishable: the server drops a heartbeat
older than ``max_age_s`` (120 s) or more than 30 s ahead of its own clock, and the client
never sends or retries a stale one (the trip log keeps everything through the outbox). A meter
event is carried by every heartbeat until one is acknowledged, and counted once (per cab,
kind, time).

Server -> cab, ``GET /v1/live/snapshot?area=A`` (``If-None-Match: "<version>"`` -> 304): an
envelope ``["nagashi-live", 1, body, [[keyid, signature], ...]]`` whose ``body`` (msgpack map,
see :func:`encode_body`) holds only aggregates: per link (sorted global edge ids) the vacant
cabs on it now and the passes planned over the vacant cabs' reported routes; per 500 m cell of
the area's demand grid (the bundle's ``demand.json`` ``grid``, the same cells as the demand
model) the pickups in the last 15, 30 and 60 minutes. No vehicle id, no token, no position of
a single cab. The counts include the receiving cab's own last heartbeat: a planner that must
see only the others subtracts its own link and route.

The body is signed with the fleet's ``live`` key, a role delegated by targets.json (see
:mod:`sync.repository`): the cab trusts it through the TUF metadata its bundle client already
verified. :meth:`SnapshotClient.fetch` refuses a snapshot with a reason code (logged) and keeps
the last good one: :data:`LIVE_BAD_SIGNATURE`, :data:`LIVE_STALE_VERSION` (older than or equal
to one accepted before, across restarts through the archive), :data:`LIVE_EXPIRED`,
:data:`LIVE_NOT_YET_VALID` (built more than the skew allowance ahead of the cab's clock),
:data:`LIVE_MALFORMED` (shape, bounds, size, another area), :data:`LIVE_OTHER_NETWORK` (link
ids of another road network), :data:`LIVE_NO_TRUST` (no live key in the cab's trusted
metadata). :meth:`SnapshotClient.latest` never touches the network. Every accepted snapshot is
kept once, content-addressed, in a :class:`SnapshotArchive` that replay reads back.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import numpy.typing as npt
from securesystemslib.signer import Signature  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined]

from sync._fs import atomic_write_bytes, read_bounded, sha256_bytes, storage_errors
from sync.errors import LiveInputError, LiveRefusedError, SyncDataError, SyncStorageError

log = logging.getLogger(__name__)

HEARTBEAT_SCHEMA = 1
SNAPSHOT_SCHEMA = 1
ENVELOPE_MAGIC = "nagashi-live"
MSGPACK = "application/msgpack"
LIVE_ROLE = "live"

PICKUP = 1
DROPOFF = 2
EVENT_KINDS = (PICKUP, DROPOFF)

LIVE_BAD_SIGNATURE = "LIVE_BAD_SIGNATURE"
LIVE_STALE_VERSION = "LIVE_STALE_VERSION"
LIVE_EXPIRED = "LIVE_EXPIRED"
LIVE_NOT_YET_VALID = "LIVE_NOT_YET_VALID"
LIVE_MALFORMED = "LIVE_MALFORMED"
LIVE_OTHER_NETWORK = "LIVE_OTHER_NETWORK"
LIVE_NO_TRUST = "LIVE_NO_TRUST"
LIVE_UNREACHABLE = "LIVE_UNREACHABLE"  # a fetch outcome, not a refusal of a snapshot

MAX_HEARTBEAT_BYTES = 4096
MAX_EVENTS = 32
MAX_ROUTE_EDGES = 256
MAX_EDGE_ID = (1 << 31) - 1
MAX_T_S = 1 << 40
EVENT_MAX_AGE_S = 3600  # the longest pickup window of the snapshot
WINDOWS_S = (900, 1800, 3600)  # pickups in the last 15, 30, 60 minutes
MAX_COUNT = 0xFFFF  # counts saturate (uint16 on the wire)
_AREA = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# ====================================================================== heartbeat
@dataclass(frozen=True)
class MeterEvent:
    kind: int  # PICKUP or DROPOFF
    t_s: int
    lon: float
    lat: float


@dataclass(frozen=True)
class Heartbeat:
    area: str
    t_s: int
    network: bytes  # 4 bytes: the start of the road network's sha256
    link: int  # global edge id, -1 when not matched
    lon: float
    lat: float
    vacant: bool
    events: tuple[MeterEvent, ...] = ()
    route: tuple[int, ...] = ()  # the next ~2 km of global edge ids


def network_tag(network_sha256: str) -> bytes:
    """The 4 bytes a heartbeat carries for a road network (its sha256 in hex)."""
    try:
        tag = bytes.fromhex(network_sha256[:8])
    except ValueError as e:
        raise LiveInputError(f"network sha256 {network_sha256[:16]!r} is not hex") from e
    if len(tag) != 4:
        raise LiveInputError("network sha256 is shorter than 8 hex digits")
    return tag


def _e6(x: float) -> int:
    return round(x * 1e6)


def encode_heartbeat(hb: Heartbeat) -> bytes:
    doc = [
        HEARTBEAT_SCHEMA,
        hb.area,
        hb.t_s,
        hb.network,
        hb.link,
        _e6(hb.lon),
        _e6(hb.lat),
        hb.vacant,
        [[e.kind, e.t_s, _e6(e.lon), _e6(e.lat)] for e in hb.events],
        [b - a for a, b in zip((0, *hb.route), hb.route, strict=False)],
    ]
    out: bytes = msgpack.packb(doc, use_bin_type=True)
    return out


def _int_in(v: object, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise LiveInputError(f"{what} must be an integer in {lo}..{hi}")
    return v


def decode_heartbeat(data: bytes) -> Heartbeat:
    """Every field checked (shape, type, bounds); raises :class:`LiveInputError`."""
    if len(data) > MAX_HEARTBEAT_BYTES:
        raise LiveInputError(f"heartbeat larger than {MAX_HEARTBEAT_BYTES} bytes")
    try:
        doc = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_array_len=MAX_ROUTE_EDGES + 1
        )
    except Exception as e:  # msgpack raises several unrelated types
        raise LiveInputError(f"heartbeat is not msgpack: {type(e).__name__}") from e
    if not isinstance(doc, list) or len(doc) != 10 or doc[0] != HEARTBEAT_SCHEMA:
        raise LiveInputError("heartbeat is not a schema-1 array of 10 fields")
    _, area, t_s, net, link, lon, lat, vacant, events, route = doc
    if not isinstance(area, str) or not _AREA.match(area):
        raise LiveInputError("area must match [a-z0-9][a-z0-9_-]{0,63}")
    t = _int_in(t_s, 0, MAX_T_S, "t_s")
    if type(net) is not bytes or len(net) != 4:
        raise LiveInputError("net must be 4 bytes")
    link = _int_in(link, -1, MAX_EDGE_ID, "link")
    lon = _int_in(lon, -180_000_000, 180_000_000, "lon_e6")
    lat = _int_in(lat, -90_000_000, 90_000_000, "lat_e6")
    if type(vacant) is not bool:
        raise LiveInputError("vacant must be true or false")
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise LiveInputError(f"events must be a list of at most {MAX_EVENTS}")
    evs: list[MeterEvent] = []
    for ev in events:
        if not isinstance(ev, list) or len(ev) != 4:
            raise LiveInputError("an event is [kind, t_s, lon_e6, lat_e6]")
        if ev[0] not in EVENT_KINDS or type(ev[0]) is not int:
            raise LiveInputError("event kind must be 1 (pickup) or 2 (drop-off)")
        et = _int_in(
            ev[1], max(0, t - EVENT_MAX_AGE_S), t, "event t_s (within the hour before t_s)"
        )
        elon = _int_in(ev[2], -180_000_000, 180_000_000, "event lon_e6")
        elat = _int_in(ev[3], -90_000_000, 90_000_000, "event lat_e6")
        evs.append(MeterEvent(ev[0], et, elon / 1e6, elat / 1e6))
    if not isinstance(route, list) or len(route) > MAX_ROUTE_EDGES:
        raise LiveInputError(f"route must be a list of at most {MAX_ROUTE_EDGES} edge ids")
    edges: list[int] = []
    prev = 0
    for d in route:
        if type(d) is not int:
            raise LiveInputError("route deltas must be integers")
        prev += d
        edges.append(_int_in(prev, 0, MAX_EDGE_ID, "route edge id"))
    return Heartbeat(area, t, net, link, lon / 1e6, lat / 1e6, vacant, tuple(evs), tuple(edges))


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
    every heartbeat until one is acknowledged. A heartbeat older than ``max_age_s`` by the
    cab's clock is not sent: the next one carries the fresh state."""

    def __init__(
        self,
        server_url: str,
        token: str,
        area: str,
        network_sha256: str,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 2.0,
        max_age_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = server_url.rstrip("/") + "/v1/live/heartbeat"
        self.area = area
        self.network = network_tag(network_sha256)
        self.max_age_s = max_age_s
        self.clock = clock
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s)
        self._headers = {"authorization": f"Bearer {token}", "content-type": MSGPACK}
        self._pending: list[MeterEvent] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

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
        with self._lock:
            self._pending = [e for e in self._pending if t - EVENT_MAX_AGE_S <= e.t_s <= t]
            events = tuple(self._pending)
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
        try:
            r = self._client.post(self.url, content=body, headers=self._headers)
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


# ====================================================================== snapshot
I64 = npt.NDArray[np.int64]

GridSpec = tuple[float, float, float, float, int, int]  # min_lon, min_lat, dlon, dlat, cols, rows


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A live snapshot of one area: aggregates only (see the module docstring)."""

    area: str
    version: int
    built_s: float
    expires_s: float
    network: str  # sha256 (hex) of the road network the link ids refer to; "" unknown
    grid: GridSpec | None  # the demand model's 500 m cell grid (cells are its indices)
    vacant_cabs: int  # cabs reporting vacant now (in the area)
    occupied_cabs: int
    link_ids: I64  # sorted global edge ids with a nonzero count
    vacant_now: I64  # vacant cabs on the link now
    planned: I64  # passes planned by vacant cabs' routes (the next ~2 km each)
    cell_ids: I64  # sorted cell indices with a pickup in the last hour
    pickups: I64  # shape (len(cell_ids), 3): last 15, 30, 60 minutes
    sha256: str = ""  # of the signed envelope (what the archive and the tick log name)

    def link_counts(self, edge_ids: npt.ArrayLike) -> tuple[I64, I64]:
        """``(vacant_now, planned)`` for each of ``edge_ids`` (global ids; 0 when absent)."""
        ids = np.asarray(edge_ids, dtype=np.int64)
        now = np.zeros(ids.shape, dtype=np.int64)
        planned = np.zeros(ids.shape, dtype=np.int64)
        if len(self.link_ids):
            pos = np.searchsorted(self.link_ids, ids)
            pos = np.minimum(pos, len(self.link_ids) - 1)
            hit = self.link_ids[pos] == ids
            now[hit] = self.vacant_now[pos[hit]]
            planned[hit] = self.planned[pos[hit]]
        return now, planned

    def cell_pickups(self, n_cells: int) -> I64:
        """Pickups per cell as an ``(n_cells, 3)`` array (last 15, 30, 60 minutes)."""
        out = np.zeros((n_cells, 3), dtype=np.int64)
        ok = self.cell_ids < n_cells
        out[self.cell_ids[ok]] = self.pickups[ok]
        return out


def grid_spec(grid_json: dict[str, Any]) -> GridSpec:
    """The grid of a demand.json ``grid`` object (models.CellGrid.to_json)."""
    return (
        float(grid_json["min_lon"]),
        float(grid_json["min_lat"]),
        float(grid_json["cell_deg_lon"]),
        float(grid_json["cell_deg_lat"]),
        int(grid_json["ncols"]),
        int(grid_json["nrows"]),
    )


def _cells(grid: GridSpec, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> I64:
    min_lon, min_lat, dlon, dlat, ncols, nrows = grid
    cx = np.floor((lon - min_lon) / dlon)
    cy = np.floor((lat - min_lat) / dlat)
    ok = (cx >= 0) & (cx < ncols) & (cy >= 0) & (cy < nrows)
    return np.where(ok, cy * ncols + cx, -1).astype(np.int64)


def build_snapshot(
    heartbeats: Iterable[Heartbeat],
    now: float,
    *,
    area: str,
    pickups: Iterable[MeterEvent] = (),
    network: str = "",
    grid: GridSpec | None = None,
    version: int = 0,
    expires_in_s: float = 180.0,
    current_s: float = 45.0,
    planned_s: float = 120.0,
) -> Snapshot:
    """The live snapshot of ``area`` at ``now`` (pure).

    ``heartbeats``: the latest heartbeat of each cab. A vacant cab whose heartbeat is at most
    ``current_s`` old counts on its link now; one at most ``planned_s`` old counts once on
    every other link of its route. Link counts come only from heartbeats on ``network`` (when
    known). ``pickups``: the meter pickups (deduplicated) of the last hour, counted per cell
    of ``grid`` in the last 15, 30 and 60 minutes (outside the grid: not counted).
    """
    tag = network_tag(network) if network else None
    links_now: list[int] = []
    route_edges: list[int] = []  # every vacant cab's route, flat
    route_cab: list[int] = []  # the cab (its position in this call) of each route edge
    n_vacant = n_occupied = 0
    for k, hb in enumerate(heartbeats):
        age = now - hb.t_s
        if hb.area != area or age > planned_s:
            continue
        if age <= current_s:
            if hb.vacant:
                n_vacant += 1
            else:
                n_occupied += 1
        if not hb.vacant or (tag is not None and hb.network != tag):
            continue
        if age <= current_s and hb.link >= 0:
            links_now.append(hb.link)
        if hb.route:
            route_edges.extend(hb.route)
            route_cab.extend([k] * len(hb.route))
            route_edges.append(hb.link)  # marks the cab's own link, removed below
            route_cab.append(-1 - k)
    now_ids, now_n = np.unique(np.asarray(links_now, dtype=np.int64), return_counts=True)
    # each (cab, edge) once, without the cab's own link
    e = np.asarray(route_edges, dtype=np.int64)
    c = np.asarray(route_cab, dtype=np.int64)
    own = c < 0
    key = np.unique(np.where(own, -1 - c, c) << 32 | (e & 0xFFFFFFFF))
    own_key = np.unique((-1 - c[own]) << 32 | (e[own] & 0xFFFFFFFF))
    key = np.setdiff1d(key, own_key, assume_unique=True)
    pl_ids, pl_n = np.unique(key & 0xFFFFFFFF, return_counts=True)
    link_ids = np.union1d(now_ids, pl_ids)
    vacant_now = np.zeros(len(link_ids), np.int64)
    planned = np.zeros(len(link_ids), np.int64)
    vacant_now[np.searchsorted(link_ids, now_ids)] = now_n
    planned[np.searchsorted(link_ids, pl_ids)] = pl_n

    cell_ids = np.zeros(0, np.int64)
    counts = np.zeros((0, 3), np.int64)
    if grid is not None:
        ev = [(e.t_s, e.lon, e.lat) for e in pickups if e.kind == PICKUP]
        if ev:
            a = np.asarray(ev, dtype=np.float64)
            ages = now - a[:, 0]
            keep = (ages >= -current_s) & (ages <= WINDOWS_S[-1])
            cells = _cells(grid, a[keep, 1], a[keep, 2])
            ages = ages[keep]
            inside = cells >= 0
            cells, ages = cells[inside], ages[inside]
            cell_ids = np.unique(cells)
            pos = np.searchsorted(cell_ids, cells)
            counts = np.zeros((len(cell_ids), 3), np.int64)
            for j, w in enumerate(WINDOWS_S):
                np.add.at(counts[:, j], pos[ages <= w], 1)
    return Snapshot(
        area=area,
        version=version,
        built_s=float(now),
        expires_s=float(now) + expires_in_s,
        network=network,
        grid=grid,
        vacant_cabs=n_vacant,
        occupied_cabs=n_occupied,
        link_ids=link_ids,
        vacant_now=np.minimum(vacant_now, MAX_COUNT),
        planned=np.minimum(planned, MAX_COUNT),
        cell_ids=cell_ids,
        pickups=np.minimum(counts, MAX_COUNT),
    )


_BODY_KEYS = frozenset(
    {"schema", "area", "version", "built_s", "expires_s", "network", "grid", "cabs"}
    | {"links", "now", "planned", "cells", "pickups"}
)


def _delta(ids: I64) -> bytes:
    """Sorted ids as uint32 gaps (the first from 0): small numbers that deflate well."""
    return np.diff(ids, prepend=0).astype("<u4").tobytes()


def _undelta(b: bytes, n_max: int) -> I64:
    if len(b) % 4 or len(b) // 4 > n_max:
        raise LiveInputError("id array of bad length")
    gaps = np.frombuffer(b, dtype="<u4").astype(np.int64)
    ids = np.cumsum(gaps)
    if len(ids) > 1 and not bool(np.all(gaps[1:] > 0)):
        raise LiveInputError("ids are not strictly increasing")
    if len(ids) and ids[-1] > MAX_EDGE_ID:
        raise LiveInputError("id out of range")
    return ids


def encode_body(s: Snapshot) -> bytes:
    """The snapshot's signed body: a msgpack map of scalars and little-endian arrays (ids as
    uint32 gaps, counts uint16), deflated. Decoded by :func:`decode_body`."""
    doc = {
        "schema": SNAPSHOT_SCHEMA,
        "area": s.area,
        "version": s.version,
        "built_s": s.built_s,
        "expires_s": s.expires_s,
        "network": s.network,
        "grid": list(s.grid) if s.grid is not None else None,
        "cabs": [s.vacant_cabs, s.occupied_cabs],
        "links": _delta(s.link_ids),
        "now": s.vacant_now.astype("<u2").tobytes(),
        "planned": s.planned.astype("<u2").tobytes(),
        "cells": _delta(s.cell_ids),
        "pickups": s.pickups.astype("<u2").tobytes(),
    }
    return zlib.compress(msgpack.packb(doc, use_bin_type=True), 6)


def _inflate(data: bytes, max_bytes: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as e:
        raise LiveInputError(f"body is not deflate: {e}") from e
    if len(out) > max_bytes or not d.eof or d.unused_data:
        raise LiveInputError(f"body inflates past {max_bytes} bytes or is not one stream")
    return out


def _counts(b: object, n: int, what: str, cols: int = 1) -> I64:
    if type(b) is not bytes or len(b) != 2 * n * cols:
        raise LiveInputError(f"{what} does not match its ids")
    a = np.frombuffer(b, dtype="<u2").astype(np.int64)
    return a.reshape(n, cols) if cols > 1 else a


def _finite(v: object, what: str) -> float:
    if type(v) not in (int, float) or not math.isfinite(float(v)):  # type: ignore[arg-type]
        raise LiveInputError(f"{what} must be a finite number")
    return float(v)  # type: ignore[arg-type]


def decode_body(body: bytes, *, sha256: str = "", max_bytes: int = 8 << 20) -> Snapshot:
    """Parse a signed body (shape and bounds checked; no signature, no clock)."""
    raw = _inflate(body, max_bytes)
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as e:
        raise LiveInputError(f"body is not msgpack: {type(e).__name__}") from e
    if not isinstance(doc, dict) or set(doc) != _BODY_KEYS:
        raise LiveInputError("body has missing or unknown fields")
    if doc["schema"] != SNAPSHOT_SCHEMA:
        raise LiveInputError(f"unknown snapshot schema {doc['schema']!r}")
    area = doc["area"]
    if not isinstance(area, str) or not _AREA.match(area):
        raise LiveInputError("bad area")
    version = _int_in(doc["version"], 1, (1 << 63) - 1, "version")
    built, expires = _finite(doc["built_s"], "built_s"), _finite(doc["expires_s"], "expires_s")
    if not built <= expires:
        raise LiveInputError("expires_s before built_s")
    network = doc["network"]
    if not isinstance(network, str) or not re.fullmatch(r"(?:[0-9a-f]{64})?", network):
        raise LiveInputError("network must be 64 lowercase hex or empty")
    grid: GridSpec | None = None
    g = doc["grid"]
    if g is not None:
        if not isinstance(g, list) or len(g) != 6:
            raise LiveInputError("grid must be [min_lon, min_lat, dlon, dlat, ncols, nrows]")
        f = [_finite(x, "grid") for x in g[:4]]
        cols = _int_in(g[4], 1, 1 << 20, "grid ncols")
        rows = _int_in(g[5], 1, 1 << 20, "grid nrows")
        if f[2] <= 0 or f[3] <= 0:
            raise LiveInputError("grid cell sizes must be positive")
        grid = (f[0], f[1], f[2], f[3], cols, rows)
    cabs = doc["cabs"]
    if not isinstance(cabs, list) or len(cabs) != 2:
        raise LiveInputError("cabs must be [vacant, occupied]")
    nv = _int_in(cabs[0], 0, 1 << 31, "cabs")
    no = _int_in(cabs[1], 0, 1 << 31, "cabs")
    for k in ("links", "now", "planned", "cells", "pickups"):
        if type(doc[k]) is not bytes:
            raise LiveInputError(f"{k} must be bytes")
    link_ids = _undelta(doc["links"], max_bytes // 4)
    cell_ids = _undelta(doc["cells"], max_bytes // 4)
    if grid is None and len(cell_ids):
        raise LiveInputError("cells without a grid")
    if grid is not None and len(cell_ids) and cell_ids[-1] >= grid[4] * grid[5]:
        raise LiveInputError("cell outside the grid")
    return Snapshot(
        area=area,
        version=version,
        built_s=built,
        expires_s=expires,
        network=network,
        grid=grid,
        vacant_cabs=nv,
        occupied_cabs=no,
        link_ids=link_ids,
        vacant_now=_counts(doc["now"], len(link_ids), "now"),
        planned=_counts(doc["planned"], len(link_ids), "planned"),
        cell_ids=cell_ids,
        pickups=_counts(doc["pickups"], len(cell_ids), "pickups", 3),
        sha256=sha256,
    )


def sign_envelope(body: bytes, signers: Sequence[Any]) -> bytes:
    """``["nagashi-live", 1, body, [[keyid, signature], ...]]`` (securesystemslib signers)."""
    sigs = [[s.public_key.keyid, bytes.fromhex(s.sign(body).signature)] for s in signers]
    out: bytes = msgpack.packb([ENVELOPE_MAGIC, SNAPSHOT_SCHEMA, body, sigs], use_bin_type=True)
    return out


def open_envelope(data: bytes) -> tuple[bytes, dict[str, Signature]]:
    """The body and signatures of an envelope (shape checked, nothing verified)."""
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=64)
    except Exception as e:
        raise LiveInputError(f"envelope is not msgpack: {type(e).__name__}") from e
    if (
        not isinstance(doc, list)
        or len(doc) != 4
        or doc[0] != ENVELOPE_MAGIC
        or doc[1] != SNAPSHOT_SCHEMA
        or type(doc[2]) is not bytes
        or not isinstance(doc[3], list)
    ):
        raise LiveInputError("not a schema-1 live envelope")
    sigs: dict[str, Signature] = {}
    for s in doc[3]:
        if (
            not isinstance(s, list)
            or len(s) != 2
            or not isinstance(s[0], str)
            or not re.fullmatch(r"[0-9a-f]{64}", s[0])
            or type(s[1]) is not bytes
            or len(s[1]) > 512
        ):
            raise LiveInputError("a signature is [keyid (64 hex), bytes]")
        sigs[s[0]] = Signature(s[0], s[1].hex())
    return doc[2], sigs


# ====================================================================== trust
class LiveTrust:
    """The live role's keys, from targets metadata verified against a trusted root."""

    def __init__(self, targets: Metadata[Targets]) -> None:
        d = targets.signed.delegations
        if d is None or d.roles is None or LIVE_ROLE not in d.roles:
            raise LiveRefusedError(LIVE_NO_TRUST, "the fleet's targets delegate no live role")
        self._targets = targets.signed

    @classmethod
    def from_metadata(cls, root_json: bytes, targets_json: bytes) -> LiveTrust:
        """Trust from a root the cab trusts and the targets that root signed."""
        try:
            root: Metadata[Root] = Metadata.from_bytes(root_json)
            targets: Metadata[Targets] = Metadata.from_bytes(targets_json)
            root.signed.verify_delegate("targets", targets.signed_bytes, targets.signatures)
        except Exception as e:  # tuf raises its own family and ValueError/TypeError
            raise LiveRefusedError(
                LIVE_NO_TRUST, f"trusted metadata unusable: {type(e).__name__}: {e}"
            ) from e
        if targets.signed.is_expired(datetime.now(UTC)):
            raise LiveRefusedError(LIVE_NO_TRUST, "the trusted targets metadata has expired")
        return cls(targets)

    def keyids(self) -> list[str]:
        d = self._targets.delegations
        assert d is not None and d.roles is not None
        return list(d.roles[LIVE_ROLE].keyids)

    def verify(self, body: bytes, sigs: dict[str, Signature]) -> None:
        try:
            self._targets.verify_delegate(LIVE_ROLE, body, sigs)
        except Exception as e:
            raise LiveRefusedError(LIVE_BAD_SIGNATURE, f"{type(e).__name__}: {e}") from e


class TrustSource:
    """The cab's live trust from its TUF metadata folder (``BundleStore.tuf_dir``: root.json
    and targets.json as python-tuf's ngclient left them), read again when either changes (a
    rotated live key arrives with the next bundle pull)."""

    def __init__(self, tuf_dir: str | Path) -> None:
        self.tuf_dir = Path(tuf_dir)
        self._stamp: tuple[int, ...] | None = None
        self._trust: LiveTrust | None = None

    def current(self) -> LiveTrust:
        paths = (self.tuf_dir / "root.json", self.tuf_dir / "targets.json")
        try:
            stamp = tuple(x for p in paths for x in (p.stat().st_mtime_ns, p.stat().st_size))
        except OSError as e:
            raise LiveRefusedError(LIVE_NO_TRUST, f"no trusted metadata in {self.tuf_dir}") from e
        if stamp != self._stamp or self._trust is None:
            try:
                docs = [read_bounded(p, 8 << 20) for p in paths]
            except (OSError, SyncDataError) as e:
                raise LiveRefusedError(LIVE_NO_TRUST, f"trusted metadata: {e}") from e
            self._trust = LiveTrust.from_metadata(docs[0], docs[1])
            self._stamp = stamp
        return self._trust


# ====================================================================== cab side
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


def verify_snapshot(
    data: bytes,
    trust: LiveTrust,
    now: float,
    *,
    area: str,
    last_version: int = 0,
    network: str | None = None,
    skew_s: float = 60.0,
    max_bytes: int = 1 << 20,
) -> Snapshot:
    """Verify and decode an envelope; raises :class:`LiveRefusedError` with the reason."""
    if len(data) > max_bytes:
        raise LiveRefusedError(LIVE_MALFORMED, f"{len(data)} bytes, more than {max_bytes}")
    try:
        body, sigs = open_envelope(data)
    except LiveInputError as e:
        raise LiveRefusedError(LIVE_MALFORMED, str(e)) from e
    trust.verify(body, sigs)  # before parsing the body: only the fleet's bytes are inflated
    try:
        snap = decode_body(body, sha256=sha256_bytes(data), max_bytes=8 * max_bytes)
    except LiveInputError as e:
        raise LiveRefusedError(LIVE_MALFORMED, str(e)) from e
    if snap.area != area:
        raise LiveRefusedError(LIVE_MALFORMED, f"snapshot of area {snap.area!r}, not {area!r}")
    if snap.version <= last_version:
        raise LiveRefusedError(
            LIVE_STALE_VERSION, f"version {snap.version} is not newer than {last_version}"
        )
    if now > snap.expires_s + skew_s:
        raise LiveRefusedError(
            LIVE_EXPIRED, f"expired {now - snap.expires_s:.0f} s ago by this cab's clock"
        )
    if now < snap.built_s - skew_s:
        raise LiveRefusedError(
            LIVE_NOT_YET_VALID, f"built {snap.built_s - now:.0f} s ahead of this cab's clock"
        )
    if network is not None and snap.network and snap.network != network:
        raise LiveRefusedError(
            LIVE_OTHER_NETWORK, f"links of network {snap.network[:12]}, not {network[:12]}"
        )
    return snap


class SnapshotArchive:
    """Every accepted snapshot, once per version: ``<dir>/<area>/<version>.<sha256>.live``
    holds the signed envelope exactly as received (atomic write). Replay reads it back with
    :meth:`get`; the tick log names a snapshot by its version and sha256."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _area_dir(self, area: str) -> Path:
        if not _AREA.match(area):
            raise LiveInputError(f"bad area name {area!r}")
        return self.dir / area

    @storage_errors
    def put(self, data: bytes, snap: Snapshot) -> Path:
        sha = sha256_bytes(data)
        p = self._area_dir(snap.area) / f"{snap.version}.{sha}.live"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(p, data)
        return p

    def _find(self, area: str, version: int | None, sha256: str | None) -> Path | None:
        v = "*" if version is None else str(int(version))
        h = "*" if sha256 is None else sha256
        if h != "*" and not re.fullmatch(r"[0-9a-f]{64}", h):
            raise LiveInputError("sha256 must be 64 lowercase hex")
        found = sorted(self._area_dir(area).glob(f"{v}.{h}.live"))
        return found[0] if found else None

    @storage_errors
    def get(self, area: str, *, version: int | None = None, sha256: str | None = None) -> Snapshot:
        """The stored snapshot of ``area`` with this version and/or sha256 (content checked;
        the signature was checked when it was accepted). SyncStorageError if absent."""
        if version is None and sha256 is None:
            raise LiveInputError("name a snapshot by version or sha256")
        p = self._find(area, version, sha256)
        if p is None:
            raise SyncStorageError(
                f"no live snapshot of {area} with version {version} / sha256 {sha256}"
            )
        data = p.read_bytes()
        sha = sha256_bytes(data)
        if sha != p.name.split(".")[1]:
            raise SyncStorageError(f"{p} is damaged (its content hash differs from its name)")
        body, _ = open_envelope(data)
        return decode_body(body, sha256=sha)

    def highest_version(self, area: str) -> int:
        d = self._area_dir(area)
        if not d.is_dir():
            return 0
        vs = [int(p.name.split(".")[0]) for p in d.glob("*.live") if p.name.split(".")[0].isdigit()]
        return max(vs, default=0)

    @storage_errors
    def prune(self, area: str, keep: int) -> int:
        """Keep the ``keep`` highest versions of ``area``; returns the files removed."""
        d = self._area_dir(area)
        files = sorted(
            (p for p in d.glob("*.live") if p.name.split(".")[0].isdigit()),
            key=lambda p: int(p.name.split(".")[0]),
        )
        gone = files[: max(0, len(files) - keep)]
        for p in gone:
            p.unlink(missing_ok=True)
        return len(gone)


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
    :meth:`start` runs :meth:`fetch` in a background thread every ``every_s`` (+ jitter)."""

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
        self._client = client or httpx.Client(timeout=self.config.timeout_s)
        self._headers = {"authorization": f"Bearer {token}"}
        self._lock = threading.Lock()
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
        try:
            with self._client.stream(
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
        if self._own_client:
            self._client.close()
