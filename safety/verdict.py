"""The gate's answer for one tick, and its plain-dict forms for the trip log.

Record form (``to_record``), a msgpack-able dict, ``schema_version`` 1::

    {"schema_version": 1, "kind": "safety_verdict",
     "ok": bool,                     # True: "route" may be shown turn by turn
     "route": [int, ...],            # the validated route (global edge ids); [] on fallback
     "trimmed": ["ROUTE_LOOP", ...], # ok only: problems further ahead; "route" is the prefix
                                     # of "proposed" that ends before the first of them
     "proposed": [int, ...],         # what the planner proposed (checked, maybe rejected)
     "reasons": ["GPS_STALE", ...],  # Reason codes, [] when ok
     "message": str,                 # driver message on fallback ("" when ok)
     "locale": "ja" | "en",
     "continuation": [int, ...],     # "follow the road" links from the matched link on
     "time_s": float,                # the injected now
     "minute_of_week": float,        # local time used for no-entry windows
     "lon": float | None, "lat": float | None,   # the fix
     "edge_id": int | None, "fraction": float | None,  # the matched link, position on it
                                     # (6 decimals: its last bits are the CPU's, and a log
                                     # replays byte-identical on another one)
     "error": str}                   # INTERNAL_ERROR only: exception type and text

Unknown keys and unknown reason codes (from a newer agent) are kept on read and written back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from safety.errors import SafetyLogError
from safety.reasons import Reason, parse_reasons

SCHEMA_VERSION = 1
KIND = "safety_verdict"
EVENT_KIND = "safety_fallback"
# the matched position on its link, as the gate judges from it and the record keeps it: a
# millionth of a link (under a millimetre on a 500 m one), the same figure on every CPU
FRACTION_DECIMALS = 6
_KNOWN_KEYS = frozenset(
    {
        "schema_version",
        "kind",
        "ok",
        "route",
        "proposed",
        "trimmed",
        "reasons",
        "message",
        "locale",
        "continuation",
        "time_s",
        "minute_of_week",
        "lon",
        "lat",
        "edge_id",
        "fraction",
        "error",
    }
)


@dataclass(frozen=True)
class Verdict:
    """A validated route (``ok``) or a fallback with its message and reasons."""

    ok: bool
    route: tuple[int, ...]
    reasons: tuple[Reason, ...]
    message: str
    locale: str
    continuation: tuple[int, ...]
    time_s: float
    minute_of_week: float
    lon: float | None = None
    lat: float | None = None
    edge_id: int | None = None
    fraction: float | None = None
    proposed: tuple[int, ...] = ()
    error: str = ""
    trimmed: tuple[Reason, ...] = ()
    unknown_reasons: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def codes(self) -> tuple[str, ...]:
        return (*(r.value for r in self.reasons), *self.unknown_reasons)

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = dict(self.extra)
        rec.update(
            {
                "schema_version": SCHEMA_VERSION,
                "kind": KIND,
                "ok": self.ok,
                "route": list(self.route),
                "proposed": list(self.proposed),
                "trimmed": [r.value for r in self.trimmed],
                "reasons": list(self.codes),
                "message": self.message,
                "locale": self.locale,
                "continuation": list(self.continuation),
                "time_s": self.time_s,
                "minute_of_week": self.minute_of_week,
                "lon": self.lon,
                "lat": self.lat,
                "edge_id": self.edge_id,
                "fraction": self.fraction,
                "error": self.error,
            }
        )
        return rec

    @staticmethod
    def from_record(r: Mapping[str, Any]) -> Verdict:
        """Read a logged verdict; :class:`SafetyLogError` when it is not one."""
        if not isinstance(r, Mapping):
            raise SafetyLogError("a safety verdict must be a map")
        version = r.get("schema_version")
        if not isinstance(version, int) or version < 1:
            raise SafetyLogError(f"safety verdict has schema_version {version!r}")
        try:
            reasons, unknown = parse_reasons(r.get("reasons", []))
            return Verdict(
                ok=_bool(r["ok"]),
                route=_ids(r.get("route", [])),
                reasons=reasons,
                message=str(r.get("message", "")),
                locale=str(r.get("locale", "en")),
                continuation=_ids(r.get("continuation", [])),
                time_s=_float(r["time_s"]),
                minute_of_week=_float(r["minute_of_week"]),
                lon=_opt_float(r.get("lon")),
                lat=_opt_float(r.get("lat")),
                edge_id=_opt_int(r.get("edge_id")),
                fraction=_opt_float(r.get("fraction")),
                proposed=_ids(r.get("proposed", [])),
                trimmed=parse_reasons(r.get("trimmed", []))[0],
                error=str(r.get("error", "")),
                unknown_reasons=unknown,
                extra={k: v for k, v in r.items() if k not in _KNOWN_KEYS},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SafetyLogError(f"unreadable safety verdict: {e!r}") from e

    def event(self) -> dict[str, Any] | None:
        """The fallback event for the trip log (reason, time, position); None when ok."""
        if self.ok:
            return None
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": EVENT_KIND,
            "reasons": list(self.codes),
            "time_s": self.time_s,
            "minute_of_week": self.minute_of_week,
            "lon": self.lon,
            "lat": self.lat,
            "edge_id": self.edge_id,
            "error": self.error,
        }


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected a boolean, got {v!r}")
    return v


def _float(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


def _opt_float(v: object) -> float | None:
    if v is None:
        return None
    f = _float(v)
    return f if math.isfinite(f) else None


def _opt_int(v: object) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _ids(v: object) -> tuple[int, ...]:
    if not isinstance(v, list | tuple):
        raise TypeError(f"expected a list of edge ids, got {type(v).__name__}")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise TypeError("edge ids must be integers")
    return tuple(int(x) for x in v)
