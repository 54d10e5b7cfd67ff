"""The heartbeat a cab sends (its model, ``network_tag``) and its msgpack wire form, every field
checked when decoded (see :mod:`sync.live` for the layout)."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from sync.errors import LiveInputError
from sync.live.protocol import (
    _AREA,
    EVENT_KINDS,
    EVENT_MAX_AGE_S,
    HEARTBEAT_SCHEMA,
    MAX_EDGE_ID,
    MAX_EVENTS,
    MAX_HEARTBEAT_BYTES,
    MAX_ROUTE_EDGES,
    MAX_T_S,
    _int_in,
)


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
