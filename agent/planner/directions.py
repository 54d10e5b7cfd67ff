"""Turn-by-turn directions for a planned route of links.

At each junction the turn angle is the signed difference between the bearing at the end of the
incoming link and the bearing at the start of the outgoing one (positive: right). Consecutive
links of the same street driven (nearly) straight are merged into one instruction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tiles.geo import signed_turn_deg
from tiles.graph import Graph

#: |angle| limits (degrees) of the manoeuvre classes: below 20 degrees a road bend is not a turn;
#: past 170 degrees the cab comes back the way it came.
STRAIGHT_MAX_DEG = 20.0
SLIGHT_MAX_DEG = 60.0
TURN_MAX_DEG = 140.0
UTURN_MIN_DEG = 170.0


@dataclass(frozen=True)
class Direction:
    """One instruction: at the start of route link ``index`` do ``action`` onto ``street``."""

    index: int  # position in Plan.edges where the manoeuvre happens
    edge_id: int  # global id of the link entered
    action: str  # depart, continue, slight_left/right, left/right, sharp_left/right, uturn
    turn_deg: float  # signed, positive to the right
    street: str
    distance_m: float  # driven on this instruction until the next one
    lon: float  # where the manoeuvre happens (start of the link)
    lat: float

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "edge_id": self.edge_id,
            "action": self.action,
            "turn_deg": round(self.turn_deg, 1),
            "street": self.street,
            "distance_m": round(self.distance_m, 1),
            "lon": round(self.lon, 7),
            "lat": round(self.lat, 7),
        }


def classify_turn(angle_deg: float) -> str:
    a = abs(angle_deg)
    side = "right" if angle_deg > 0 else "left"
    if a <= STRAIGHT_MAX_DEG:
        return "continue"
    if a >= UTURN_MIN_DEG:
        return "uturn"
    if a <= SLIGHT_MAX_DEG:
        return f"slight_{side}"
    if a <= TURN_MAX_DEG:
        return side
    return f"sharp_{side}"


def directions(
    g: Graph, start: int, route: Sequence[int], names: Mapping[int, str]
) -> tuple[Direction, ...]:
    """Instructions for driving ``route`` (local links) after the current link ``start``."""
    if not route:
        return ()
    prev = np.concatenate([[start], np.asarray(route[:-1], dtype=np.int64)])
    cur = np.asarray(route, dtype=np.int64)
    angles = signed_turn_deg(g.bearing_end[prev], g.bearing_start[cur])
    out: list[Direction] = []
    for i, (e, ang) in enumerate(zip(cur.tolist(), angles.tolist(), strict=True)):
        street = names.get(int(g.way_id[e]), "")
        action = classify_turn(float(ang))
        same_street = out and street == out[-1].street and street != ""
        if out and action == "continue" and (same_street or street == ""):
            last = out[-1]
            out[-1] = Direction(
                last.index,
                last.edge_id,
                last.action,
                last.turn_deg,
                last.street,
                last.distance_m + float(g.length_m[e]),
                last.lon,
                last.lat,
            )
            continue
        out.append(
            Direction(
                index=i,
                edge_id=int(g.edge_id[e]),
                action="depart" if i == 0 and action == "continue" else action,
                turn_deg=float(ang),
                street=street,
                distance_m=float(g.length_m[e]),
                lon=float(g.u_lon[e]),
                lat=float(g.u_lat[e]),
            )
        )
    return tuple(out)
