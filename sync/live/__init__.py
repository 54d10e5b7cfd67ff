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

Laid out one concern a module: :mod:`~sync.live.protocol` (the constants, reason codes and
bounds), :mod:`~sync.live.heartbeat` (the heartbeat and its wire form),
:mod:`~sync.live.heartbeat_client` (the cab's sender), :mod:`~sync.live.snapshot` (the
snapshot and its body's format), :mod:`~sync.live.envelope` (the signed envelope),
:mod:`~sync.live.build` (the server's pure builder), :mod:`~sync.live.trust` (the live keys
and :func:`verify_snapshot`), :mod:`~sync.live.archive` and :mod:`~sync.live.client` (the
cab's snapshot client). Every name is imported from here, as before the split.
"""

from __future__ import annotations

from sync.live.archive import SnapshotArchive
from sync.live.build import build_snapshot
from sync.live.client import FetchOutcome, LiveClientConfig, SnapshotClient
from sync.live.envelope import open_envelope, sign_envelope
from sync.live.heartbeat import (
    Heartbeat,
    MeterEvent,
    decode_heartbeat,
    encode_heartbeat,
    network_tag,
)
from sync.live.heartbeat_client import HeartbeatClient, HeartbeatResult
from sync.live.protocol import (
    DROPOFF,
    ENVELOPE_MAGIC,
    EVENT_KINDS,
    EVENT_MAX_AGE_S,
    HEARTBEAT_SCHEMA,
    LIVE_BAD_SIGNATURE,
    LIVE_EXPIRED,
    LIVE_MALFORMED,
    LIVE_NO_TRUST,
    LIVE_NOT_YET_VALID,
    LIVE_OTHER_NETWORK,
    LIVE_ROLE,
    LIVE_STALE_VERSION,
    LIVE_UNREACHABLE,
    MAX_COUNT,
    MAX_EDGE_ID,
    MAX_EVENTS,
    MAX_HEARTBEAT_BYTES,
    MAX_ROUTE_EDGES,
    MAX_T_S,
    MSGPACK,
    PICKUP,
    SNAPSHOT_SCHEMA,
    WINDOWS_S,
)
from sync.live.snapshot import (
    I64,
    GridSpec,
    Snapshot,
    decode_body,
    encode_body,
    grid_spec,
)
from sync.live.trust import LiveTrust, TrustSource, verify_snapshot

__all__ = [
    "DROPOFF",
    "ENVELOPE_MAGIC",
    "EVENT_KINDS",
    "EVENT_MAX_AGE_S",
    "HEARTBEAT_SCHEMA",
    "I64",
    "LIVE_BAD_SIGNATURE",
    "LIVE_EXPIRED",
    "LIVE_MALFORMED",
    "LIVE_NOT_YET_VALID",
    "LIVE_NO_TRUST",
    "LIVE_OTHER_NETWORK",
    "LIVE_ROLE",
    "LIVE_STALE_VERSION",
    "LIVE_UNREACHABLE",
    "MAX_COUNT",
    "MAX_EDGE_ID",
    "MAX_EVENTS",
    "MAX_HEARTBEAT_BYTES",
    "MAX_ROUTE_EDGES",
    "MAX_T_S",
    "MSGPACK",
    "PICKUP",
    "SNAPSHOT_SCHEMA",
    "WINDOWS_S",
    "FetchOutcome",
    "GridSpec",
    "Heartbeat",
    "HeartbeatClient",
    "HeartbeatResult",
    "LiveClientConfig",
    "LiveTrust",
    "MeterEvent",
    "Snapshot",
    "SnapshotArchive",
    "SnapshotClient",
    "TrustSource",
    "build_snapshot",
    "decode_body",
    "decode_heartbeat",
    "encode_body",
    "encode_heartbeat",
    "grid_spec",
    "network_tag",
    "open_envelope",
    "sign_envelope",
    "verify_snapshot",
]
