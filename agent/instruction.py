"""What the driver is shown: the current instruction, built from a tick's verdict (pure).

An :class:`Instruction` is one of three kinds:

* ``route``: a validated cruising route; ``maneuver`` is the next turn along it (or "continue"
  when the route goes straight on), with the distance to it from the cab's matched position.
* ``fallback``: no guidance; ``message`` is safety/'s calm text ("Please follow the road") and
  ``reason_codes`` why; ``geometry`` is the "follow the road" continuation when there is one.
* ``waiting``: before the first tick (no fix yet, bundle loading).

The JSON form (``to_json``, ``schema_version`` 1) is what the HTTP API serves and the trip log
keeps under ``"instruction"``; ``geometry`` is a GeoJSON LineString of ``(lon, lat)``.

Turn classes from the signed turn angle between the end of one link and the start of the next
(positive is right): under 30 degrees straight, 30-60 slight, 60-135 a turn, 135-170 sharp,
beyond 170 a U-turn.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tiles import Graph
from tiles.geo import signed_turn_deg

SCHEMA_VERSION = 1
STRAIGHT_DEG = 30.0
SLIGHT_DEG = 60.0
TURN_DEG = 135.0
SHARP_DEG = 170.0

_MOD_EN = {
    "straight": "continue straight",
    "slight right": "bear right",
    "right": "turn right",
    "sharp right": "turn sharp right",
    "slight left": "bear left",
    "left": "turn left",
    "sharp left": "turn sharp left",
    "uturn": "make a U-turn",
}
_MOD_JA = {
    "straight": "直進",
    "slight right": "右方向",
    "right": "右折",
    "sharp right": "右へ鋭角に曲がる",
    "slight left": "左方向",
    "left": "左折",
    "sharp left": "左へ鋭角に曲がる",
    "uturn": "Uターン",
}
WAITING_TEXT = {"ja": "位置を確認しています", "en": "Finding your position"}


def turn_modifier(angle_deg: float) -> str:
    a = abs(angle_deg)
    if a < STRAIGHT_DEG:
        return "straight"
    if a >= SHARP_DEG:
        return "uturn"
    side = "right" if angle_deg > 0 else "left"
    if a < SLIGHT_DEG:
        return f"slight {side}"
    if a < TURN_DEG:
        return side
    return f"sharp {side}"


@dataclass(frozen=True)
class Maneuver:
    """The next manoeuvre: ``type`` is "turn" or "continue"; distance in metres from the cab."""

    type: str
    modifier: str
    distance_m: float
    street: str
    lon: float
    lat: float
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "modifier": self.modifier,
            "distance_m": round(self.distance_m, 1),
            "street": self.street,
            "location": [round(self.lon, 7), round(self.lat, 7)],
            "text": self.text,
        }


def _round_distance(d: float) -> str:
    if d < 100:
        return f"{max(10, round(d / 10) * 10)} m"
    if d < 1000:
        return f"{round(d / 50) * 50} m"
    return f"{d / 1000:.1f} km"


def maneuver_text(kind: str, modifier: str, distance_m: float, street: str, locale: str) -> str:
    dist = _round_distance(distance_m)
    if locale == "ja":
        what = _MOD_JA.get(modifier, modifier)
        onto = f" {street}" if street else ""
        return f"{dist}先 {what}{onto}" if kind == "turn" else f"{dist} 道なりに直進{onto}"
    what = _MOD_EN.get(modifier, modifier)
    onto = f" onto {street}" if street else ""
    if kind == "turn":
        return f"In {dist}, {what}{onto}"
    return f"Continue on {street} for {dist}" if street else f"Continue for {dist}"


def first_turn(g: Graph, route: Sequence[int], fraction: float) -> tuple[int, float] | None:
    """The first turn along ``route`` (global ids, from the matched link at ``fraction``):
    (index in ``route`` of the link the turn enters, distance to it in metres), or None when
    the route goes straight on to its end (or is empty, or not in ``g``)."""
    loc = g.local(list(route))
    if len(loc) == 0 or np.any(loc < 0):
        return None
    dist = (1.0 - min(max(fraction, 0.0), 1.0)) * float(g.length_m[loc[0]])
    for i, (a, b) in enumerate(itertools.pairwise(loc)):
        angle = float(signed_turn_deg(g.bearing_end[a], g.bearing_start[b]))
        if turn_modifier(angle) != "straight":
            return i + 1, dist
        dist += float(g.length_m[b])
    return None


def next_maneuver(
    g: Graph,
    route: Sequence[int],
    fraction: float,
    names: Mapping[int, str],
    locale: str = "en",
) -> Maneuver | None:
    """The first turn along ``route`` (global ids, starting on the matched link at ``fraction``).

    ``names`` maps OSM way ids to street names. A change of street without a turn (an avenue
    that changes name) is not a manoeuvre. None when the route is empty or not in ``g``.
    """
    loc = g.local(list(route))
    if len(loc) == 0 or np.any(loc < 0):
        return None
    turn = first_turn(g, route, fraction)
    if turn is not None:
        i, dist = turn
        a, b = int(loc[i - 1]), int(loc[i])
        mod = turn_modifier(float(signed_turn_deg(g.bearing_end[a], g.bearing_start[b])))
        street = names.get(int(g.way_id[b]), "")
        return Maneuver(
            "turn",
            mod,
            dist,
            street,
            float(g.u_lon[b]),
            float(g.u_lat[b]),
            maneuver_text("turn", mod, dist, street, locale),
        )
    dist = (1.0 - min(max(fraction, 0.0), 1.0)) * float(g.length_m[loc[0]])
    for b in loc[1:]:
        dist += float(g.length_m[b])
    last = int(loc[-1])
    street = names.get(int(g.way_id[loc[0]]), "")
    return Maneuver(
        "continue",
        "straight",
        dist,
        street,
        float(g.v_lon[last]),
        float(g.v_lat[last]),
        maneuver_text("continue", "straight", dist, street, locale),
    )


def route_coordinates(g: Graph, route: Sequence[int], fraction: float) -> list[list[float]]:
    """The polyline of ``route`` from the cab's position on its first link (lon, lat)."""
    out: list[list[float]] = []
    loc = g.local(list(route))
    for k, e in enumerate(loc):
        if e < 0:
            break
        geom = g.geometry(int(e))
        if k == 0 and len(geom) >= 2:
            geom = _cut_from(geom, fraction)
        for x, y in geom if not out else geom[1:]:
            out.append([round(float(x), 7), round(float(y), 7)])
    return out


def _cut_from(geom: np.ndarray[Any, Any], fraction: float) -> np.ndarray[Any, Any]:
    """The part of a polyline after ``fraction`` of its (planar-approximated) length."""
    kx = math.cos(math.radians(float(geom[0, 1])))
    seg = np.hypot(np.diff(geom[:, 0]) * kx, np.diff(geom[:, 1]))
    total = float(seg.sum())
    if total <= 0:
        return geom
    target = min(max(fraction, 0.0), 1.0) * total
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    i = min(int(np.searchsorted(cum, target, side="right")) - 1, len(seg) - 1)
    f = (target - cum[i]) / seg[i] if seg[i] > 0 else 0.0
    start = geom[i] + f * (geom[i + 1] - geom[i])
    return np.vstack([start, geom[i + 1 :]])


@dataclass(frozen=True)
class Instruction:
    kind: str  # "route" | "fallback" | "waiting"
    time_s: float
    message: str
    reason_codes: tuple[str, ...]
    locale: str
    route_edges: tuple[int, ...]
    geometry: tuple[tuple[float, float], ...]
    maneuver: Maneuver | None
    position: tuple[float, float] | None  # the cab, snapped to its link when matched
    heading_deg: float | None
    tick_seq: int | None = None  # the trip-log record of the decision
    expected_revenue: float | None = None
    #: the cab's progress along ``geometry`` since the tick, metres (advanced between ticks,
    #: never backwards; not part of the JSON)
    progress_m: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "time_s": self.time_s,
            "message": self.message,
            "reason_codes": list(self.reason_codes),
            "locale": self.locale,
            "route_edges": list(self.route_edges),
            "geometry": {
                "type": "LineString",
                "coordinates": [[x, y] for x, y in self.geometry],
            },
            "maneuver": None if self.maneuver is None else self.maneuver.to_json(),
            "position": None if self.position is None else list(self.position),
            "heading_deg": self.heading_deg,
            "tick_seq": self.tick_seq,
            "expected_revenue": self.expected_revenue,
        }


def waiting(time_s: float, locale: str, message: str | None = None) -> Instruction:
    return Instruction(
        kind="waiting",
        time_s=time_s,
        message=message or WAITING_TEXT.get(locale, WAITING_TEXT["en"]),
        reason_codes=(),
        locale=locale,
        route_edges=(),
        geometry=(),
        maneuver=None,
        position=None,
        heading_deg=None,
    )


def build_instruction(
    g: Graph,
    *,
    ok: bool,
    route: Sequence[int],
    continuation: Sequence[int],
    message: str,
    reason_codes: Sequence[str],
    locale: str,
    time_s: float,
    position: tuple[float, float] | None,
    heading_deg: float | None,
    fraction: float,
    names: Mapping[int, str],
    tick_seq: int | None = None,
    expected_revenue: float | None = None,
) -> Instruction:
    """The instruction for a validated route (``ok``) or a fallback (with its continuation)."""
    edges = tuple(int(e) for e in (route if ok else continuation))
    coords = route_coordinates(g, edges, fraction) if edges else []
    if position is not None and coords:
        coords[0] = [round(position[0], 7), round(position[1], 7)]
    return Instruction(
        kind="route" if ok else "fallback",
        time_s=time_s,
        message="" if ok else message,
        reason_codes=tuple(reason_codes),
        locale=locale,
        route_edges=edges,
        geometry=tuple((c[0], c[1]) for c in coords),
        maneuver=next_maneuver(g, edges, fraction, names, locale) if ok else None,
        position=position,
        heading_deg=heading_deg,
        tick_seq=tick_seq,
        expected_revenue=expected_revenue,
    )


def format_line(ins: Instruction) -> str:
    """One terminal line for an instruction (the CLI prints it)."""
    from datetime import UTC, datetime

    clock = datetime.fromtimestamp(ins.time_s, tz=UTC).strftime("%H:%M:%S")
    seq = "" if ins.tick_seq is None else f"#{ins.tick_seq} "
    if ins.kind == "route" and ins.maneuver is not None:
        rev = (
            f"  (expected {ins.expected_revenue:.2f}/h)" if ins.expected_revenue is not None else ""
        )
        return f"{clock}Z {seq}GUIDE  {ins.maneuver.text}{rev}"
    if ins.kind == "fallback":
        return f"{clock}Z {seq}FOLLOW {ins.message}  [{', '.join(ins.reason_codes)}]"
    return f"{clock}Z {seq}WAIT   {ins.message}"


#: how far ahead of its last position on the route a fix is looked for (metres): more than a
#: cab drives between two fixes, less than a loop round a block (the route's next pass)
PROGRESS_WINDOW_M = 120.0
#: a fix farther than this from that stretch (a gap in the fixes) is looked for all the way
#: ahead, still never behind
PROGRESS_SNAP_M = 25.0


def _along_m(
    coords: tuple[tuple[float, float], ...],
    lon: float,
    lat: float,
    lo: float = 0.0,
    hi: float = math.inf,
) -> tuple[float, float]:
    """(distance along the route, distance from it), metres: :func:`tiles.geo.project_onto_line`
    on the stretch between ``lo`` and ``hi`` metres along it."""
    from tiles.geo import project_onto_line

    return project_onto_line(coords, lon, lat, lo, hi)


def advance(ins: Instruction, lon: float, lat: float, heading_deg: float | None) -> Instruction:
    """The instruction as the cab moves between planning ticks: new position, and the distance
    to the next manoeuvre along the route from the cab's position on it. The position on the
    route is tracked: each fix is projected onto the stretch from the cab's last position to
    :data:`PROGRESS_WINDOW_M` beyond (farther ahead only when the fix is off that stretch),
    never behind it, so the countdown only decreases, even on a route that comes back along a
    street it already drove (0 once the cab is level with the manoeuvre: the next tick, or
    leaving the route, re-plans)."""
    moved = replace(ins, position=(lon, lat), heading_deg=heading_deg)
    m = ins.maneuver
    if ins.kind != "route" or m is None or len(ins.geometry) < 2:
        return moved
    start = ins.progress_m
    cab_along, off = _along_m(ins.geometry, lon, lat, start, start + PROGRESS_WINDOW_M)
    if off > PROGRESS_SNAP_M:
        far_along, far_off = _along_m(ins.geometry, lon, lat, start)
        if far_off < off:
            cab_along = far_along
    progress = max(cab_along, start)
    left = max(m.distance_m - (progress - start), 0.0)  # ``m`` is as of ``start``
    text = maneuver_text(m.type, m.modifier, left, m.street, ins.locale)
    return replace(moved, maneuver=replace(m, distance_m=left, text=text), progress_m=progress)
