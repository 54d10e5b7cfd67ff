"""Typed reason codes for every way a tick can fail its safety checks, and the driver messages.

A :class:`Reason` is a ``StrEnum``: its value is a stable upper-case string code that goes into
trip logs and counters and must never be renamed (add new codes instead). Each code belongs to a
:class:`Family`, which says which stage found it (and so which message the driver sees).
"""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    GPS = "gps"
    MATCH = "match"
    BUNDLE = "bundle"
    DEMAND = "demand"
    ROUTE = "route"
    ROAD = "road"
    INTERNAL = "internal"


class Reason(StrEnum):
    """Why guidance was withheld (stable string codes, logged as is)."""

    # GPS input
    GPS_MISSING = "GPS_MISSING"  # no fix at all this tick
    GPS_NAN = "GPS_NAN"  # NaN/inf (or not a number) in time, lon, lat, speed, accuracy, heading
    GPS_OUT_OF_RANGE = "GPS_OUT_OF_RANGE"  # lon/lat/heading/speed/accuracy outside valid ranges
    GPS_OUTSIDE_AREA = "GPS_OUTSIDE_AREA"  # fix outside the bundle's business area
    GPS_STALE = "GPS_STALE"  # fix older than the allowed age (or from the future)
    GPS_JUMP = "GPS_JUMP"  # implied speed since the previous fix is physically impossible
    GPS_POOR_ACCURACY = "GPS_POOR_ACCURACY"  # reported accuracy radius too large or unknown
    GPS_NO_HEADING_LOW_SPEED = "GPS_NO_HEADING_LOW_SPEED"  # direction of travel unknown
    # map matching
    MATCH_NONE = "MATCH_NONE"  # no road link near the fix
    MATCH_LOW_CONFIDENCE = "MATCH_LOW_CONFIDENCE"  # best link not clearly the right one
    MATCH_AMBIGUOUS = "MATCH_AMBIGUOUS"  # another road (parallel, stacked) nearly as likely
    # data and model
    BUNDLE_MISSING = "BUNDLE_MISSING"
    BUNDLE_EXPIRED = "BUNDLE_EXPIRED"
    BUNDLE_HASH = "BUNDLE_HASH"
    DEMAND_MISSING = "DEMAND_MISSING"  # no demand at all for this tick
    DEMAND_MALFORMED = "DEMAND_MALFORMED"  # shapes disagree, edge ids outside the network
    DEMAND_NAN = "DEMAND_NAN"
    DEMAND_NEGATIVE = "DEMAND_NEGATIVE"
    DEMAND_OUT_OF_DISTRIBUTION = "DEMAND_OUT_OF_DISTRIBUTION"
    DEMAND_SLOT_MISSING = "DEMAND_SLOT_MISSING"  # no demand for the current 30-min slot
    # route
    ROUTE_MISSING = "ROUTE_MISSING"  # the planner proposed nothing
    ROUTE_UNKNOWN_LINK = "ROUTE_UNKNOWN_LINK"  # edge id not in the loaded road graph
    ROUTE_FORBIDDEN_LINK = "ROUTE_FORBIDDEN_LINK"  # motorway, private, pier
    ROUTE_ILLEGAL_TURN = "ROUTE_ILLEGAL_TURN"  # joined links, but the turn is banned
    ROUTE_CLOSED_WINDOW = "ROUTE_CLOSED_WINDOW"  # link inside a no-entry window when driven
    ROUTE_OUTSIDE_AREA = "ROUTE_OUTSIDE_AREA"  # link outside the business area
    ROUTE_DISCONNECTED = "ROUTE_DISCONNECTED"  # consecutive links do not meet
    ROUTE_LOOP = "ROUTE_LOOP"  # U-turns or repeated links beyond the bound
    ROUTE_ABSURD_LENGTH = "ROUTE_ABSURD_LENGTH"  # too long, too many links
    ROUTE_NOT_FROM_POSITION = "ROUTE_NOT_FROM_POSITION"  # cannot be driven from where the cab is
    # roads where turn-by-turn guidance is never given
    HARD_TO_JUDGE_ROAD = "HARD_TO_JUDGE_ROAD"
    # the safety layer itself failed
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def family(self) -> Family:
        if self is Reason.HARD_TO_JUDGE_ROAD:
            return Family.ROAD
        if self is Reason.INTERNAL_ERROR:
            return Family.INTERNAL
        return Family(self.value.split("_", 1)[0].lower())


#: The production system's fallback, word for word: 「みちなりに走行してください」.
FOLLOW_THE_ROAD: dict[str, str] = {
    "ja": "みちなりに走行してください",
    "en": "Please follow the road",
}
#: Shown while the position itself is in doubt (GPS or map matching).
CHECKING_POSITION: dict[str, str] = {
    "ja": "現在地を確認しています。みちなりに走行してください",
    "en": "Checking your position. Please follow the road",
}

LOCALES: tuple[str, ...] = ("ja", "en")


def normalise_locale(locale: object) -> str:
    """``ja``, ``ja_JP.UTF-8``, ``ja-JP`` -> ``ja``; anything else (or garbage) -> ``en``."""
    if isinstance(locale, str) and locale.strip().lower().startswith("ja"):
        return "ja"
    return "en"


def fallback_message(reasons: tuple[Reason, ...] | list[Reason], locale: object) -> str:
    """The calm one-line message for a driver: position doubts first, else "follow the road"."""
    loc = normalise_locale(locale)
    if any(r.family in (Family.GPS, Family.MATCH) for r in reasons):
        return CHECKING_POSITION[loc]
    return FOLLOW_THE_ROAD[loc]


def parse_reasons(codes: object) -> tuple[tuple[Reason, ...], tuple[str, ...]]:
    """Known reasons and unknown code strings from a logged list (unknown codes are kept)."""
    known: list[Reason] = []
    unknown: list[str] = []
    if isinstance(codes, list | tuple):
        for c in codes:
            try:
                known.append(Reason(str(c)))
            except ValueError:
                unknown.append(str(c))
    return tuple(known), tuple(unknown)
