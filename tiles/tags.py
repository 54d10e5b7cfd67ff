"""How OSM tags become a car-drivable, taxi-legal road graph.

Pure functions over a way's tag dict. The rules, and why:

* Drivable classes are the car road classes of OSRM's and Valhalla's car profiles. A
  ``highway=pedestrian`` street is imported only where motor vehicles are admitted at some time
  (``motor_vehicle=yes|destination`` or a ``motor_vehicle:conditional``/``access:conditional``
  no-entry window, as on Japan's time-windowed pedestrian streets): outside its window it is a
  street, inside it is closed.
* ``taxi=yes`` or ``psv=yes`` opens a road to taxis whatever ``access``/``motor_vehicle`` say
  (Valhalla's taxi costing; OSRM's car profile would wrongly close it).
* Roads closed to the general public (``access``/``motor_vehicle``/``motorcar`` = private, no,
  destination, customers, delivery, agricultural, forestry; ``service=driveway|parking_aisle|
  emergency_access``) are kept, flagged ``private``: map matching must still see a cab parked in a
  driveway, but the planner never sends it there.
* ``motorway``: highway=motorway/motorway_link, and trunk/trunk_link only with ``motorroad=yes``
  (Japan's highway=trunk is an ordinary national route that taxis cruise).
* Default speeds (km/h) per class are urban free-flow values used where ``maxspeed`` is absent;
  ``maxspeed`` accepts numbers, ``mph``, and country zone codes such as ``JP:urban``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Car road classes, in the order of their numeric codes (stored as uint8 in tiles).
HIGHWAY_CLASSES: tuple[str, ...] = (
    "motorway",
    "motorway_link",
    "trunk",
    "trunk_link",
    "primary",
    "primary_link",
    "secondary",
    "secondary_link",
    "tertiary",
    "tertiary_link",
    "unclassified",
    "residential",
    "living_street",
    "service",
    "road",
    "pedestrian",
    "busway",
)
HIGHWAY_CODE: dict[str, int] = {name: i for i, name in enumerate(HIGHWAY_CLASSES)}

#: Default free-flow speed per class, km/h (urban), where maxspeed is not tagged.
DEFAULT_SPEED_KPH: dict[str, float] = {
    "motorway": 80.0,
    "motorway_link": 45.0,
    "trunk": 60.0,
    "trunk_link": 40.0,
    "primary": 50.0,
    "primary_link": 35.0,
    "secondary": 40.0,
    "secondary_link": 30.0,
    "tertiary": 40.0,
    "tertiary_link": 30.0,
    "unclassified": 30.0,
    "residential": 30.0,
    "living_street": 10.0,
    "service": 15.0,
    "road": 25.0,
    "pedestrian": 10.0,
    "busway": 30.0,
}

# Edge flag bits (uint16 in tiles).
FLAG_MOTORWAY = 1 << 0
FLAG_PRIVATE = 1 << 1
FLAG_PIER = 1 << 2
FLAG_ROUNDABOUT = 1 << 3
FLAG_ONEWAY = 1 << 4
FLAG_WINDOWS = 1 << 5
FLAG_REVERSE = 1 << 6
FLAG_COMPLEX = 1 << 7
FLAG_RAMP = 1 << 8
FLAG_TAXI_ONLY = 1 << 9

FLAG_NAMES: dict[str, int] = {
    "motorway": FLAG_MOTORWAY,
    "private": FLAG_PRIVATE,
    "pier": FLAG_PIER,
    "roundabout": FLAG_ROUNDABOUT,
    "oneway": FLAG_ONEWAY,
    "no_entry_windows": FLAG_WINDOWS,
    "reverse": FLAG_REVERSE,
    "complex_junction": FLAG_COMPLEX,
    "ramp": FLAG_RAMP,
    "taxi_only": FLAG_TAXI_ONLY,
}

#: Flags of links a cruising taxi must never be sent onto (time windows are checked separately).
CRUISE_FORBIDDEN = FLAG_MOTORWAY | FLAG_PRIVATE | FLAG_PIER
#: Flags of links where turn-by-turn guidance is not given ("hard to judge" roads).
HARD_TO_JUDGE = FLAG_MOTORWAY | FLAG_RAMP | FLAG_PRIVATE | FLAG_PIER | FLAG_COMPLEX

_CLOSED_ACCESS = {
    "no",
    "private",
    "destination",
    "customers",
    "delivery",
    "agricultural",
    "forestry",
    "permit",
    "emergency",
}
_PRIVATE_SERVICE = {"driveway", "parking_aisle", "emergency_access"}
_OPEN_VALUES = {"yes", "designated", "permissive"}
_CONDITIONAL_KEYS = ("motor_vehicle:conditional", "access:conditional", "motorcar:conditional")


def is_oneway(tags: Mapping[str, str]) -> int:
    """Direction rule: 1 forward only, -1 backward only, 0 both ways."""
    value = tags.get("oneway", "").strip().lower()
    if value in {"yes", "1", "true"}:
        return 1
    if value in {"-1", "reverse"}:
        return -1
    if value == "no":
        return 0
    if tags.get("junction") in {"roundabout", "circular"}:
        return 1
    if tags.get("highway") == "motorway":
        return 1
    return 0


def taxi_allowed_override(tags: Mapping[str, str]) -> bool:
    """True where taxis are explicitly admitted (``taxi``/``psv`` = yes/designated)."""
    return tags.get("taxi") in _OPEN_VALUES or tags.get("psv") in _OPEN_VALUES


def is_private(tags: Mapping[str, str]) -> bool:
    """Closed to the general public (kept in the graph, never cruised)."""
    if taxi_allowed_override(tags):
        return False
    if tags.get("service") in _PRIVATE_SERVICE:
        return True
    for key in ("motorcar", "motor_vehicle", "vehicle", "access"):
        value = tags.get(key)
        if value is None:
            continue
        return value in _CLOSED_ACCESS
    return False


def is_taxi_only(tags: Mapping[str, str]) -> bool:
    """Open to taxis/PSV only (bus lanes and the like): legal for a taxi."""
    if not taxi_allowed_override(tags):
        return False
    for key in ("motorcar", "motor_vehicle", "vehicle", "access"):
        value = tags.get(key)
        if value is not None:
            return value in _CLOSED_ACCESS
    return False


def is_motorway(tags: Mapping[str, str]) -> bool:
    highway = tags.get("highway", "")
    if highway in {"motorway", "motorway_link"}:
        return True
    return highway in {"trunk", "trunk_link"} and tags.get("motorroad") == "yes"


def is_ramp(tags: Mapping[str, str]) -> bool:
    return tags.get("highway", "").endswith("_link")


def has_conditional_access(tags: Mapping[str, str]) -> bool:
    return any(
        key in tags
        or key.replace(":conditional", ":forward:conditional") in tags
        or key.replace(":conditional", ":backward:conditional") in tags
        for key in _CONDITIONAL_KEYS
    )


def exclusion_reason(tags: Mapping[str, str]) -> str | None:
    """Why a way is not part of the car graph, or None when it is."""
    highway = tags.get("highway")
    if highway is None:
        return "not_highway"
    if highway not in HIGHWAY_CODE:
        return "not_drivable_class"
    if tags.get("area") == "yes":
        return "area"
    if highway == "pedestrian":
        motor = tags.get("motor_vehicle", tags.get("motorcar"))
        if motor in _OPEN_VALUES or motor == "destination" or has_conditional_access(tags):
            return None
        if taxi_allowed_override(tags):
            return None
        return "pedestrian_street"
    return None


_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$")
_ZONE_SPEED_KPH: dict[str, float] = {
    "JP:urban": 60.0,
    "JP:nsl": 60.0,
    "US:urban": 40.0,
    "FR:urban": 50.0,
    "MC:urban": 50.0,
    "DE:urban": 50.0,
    "GB:nsl_restricted": 48.0,
}


def parse_maxspeed_kph(value: str | None) -> float | None:
    """Parse an OSM ``maxspeed`` value to km/h; None when absent or not a speed."""
    if not value:
        return None
    value = value.split(";")[0].strip()
    m = _NUMBER.match(value)
    if m:
        speed = float(m.group(1))
        if m.group(2) == "mph":
            speed *= 1.609344
        return speed if 0 < speed <= 200 else None
    return _ZONE_SPEED_KPH.get(value)


def speed_kph(tags: Mapping[str, str]) -> float:
    """Free-flow speed: maxspeed where tagged (capped by nothing), else the class default."""
    parsed = parse_maxspeed_kph(tags.get("maxspeed"))
    if parsed is not None:
        return parsed
    return DEFAULT_SPEED_KPH.get(tags.get("highway", ""), 25.0)


#: Tags kept on the ``ways`` table (everything a query or a later rule may need).
KEPT_TAGS: tuple[str, ...] = (
    "highway",
    "name",
    "name:en",
    "ref",
    "oneway",
    "junction",
    "maxspeed",
    "access",
    "motor_vehicle",
    "motorcar",
    "taxi",
    "psv",
    "service",
    "motorroad",
    "man_made",
    "lanes",
    "bridge",
    "tunnel",
    "motor_vehicle:conditional",
    "access:conditional",
    "motorcar:conditional",
    "motor_vehicle:forward:conditional",
    "motor_vehicle:backward:conditional",
    "access:forward:conditional",
    "access:backward:conditional",
)
