"""Safety: validate every input, model output and route; otherwise "follow the road".

The agent calls :meth:`SafetyGate.check` once per tick with a :class:`TickInput`; it always gets
a :class:`Verdict` back: a validated route (``ok``) or a fallback with a calm message
(「みちなりに走行してください」 / "Please follow the road"), typed :class:`Reason` codes and the
"follow the road" continuation. It never raises. :func:`slo` turns trip-log tick records into
the availability x quality figure. May import :mod:`tiles` and :mod:`models` only.
"""

from safety.config import DemandCheckConfig, GpsConfig, MatchCheckConfig, RouteConfig, SafetyConfig
from safety.data import check_bundle, check_demand
from safety.errors import SafetyError, SafetyInputError, SafetyLogError
from safety.gate import SafetyGate, evaluate
from safety.inputs import BundleStatus, BusinessArea, Fix, TickInput, bbox_area_geojson
from safety.position import FixCheck, check_fix, check_match, path_confidence
from safety.reasons import (
    CHECKING_POSITION,
    FOLLOW_THE_ROAD,
    Family,
    Reason,
    fallback_message,
    normalise_locale,
)
from safety.route import (
    RouteJudgement,
    check_route,
    follow_the_road,
    hard_to_judge,
    judge_route,
    legal_turns,
)
from safety.slo import (
    ReversalCounter,
    RouteRechecker,
    SloReport,
    StabilityReport,
    maneuver_key,
    slo,
    stability,
    verdict_of,
)
from safety.verdict import Verdict

__all__ = [
    "CHECKING_POSITION",
    "FOLLOW_THE_ROAD",
    "BundleStatus",
    "BusinessArea",
    "DemandCheckConfig",
    "Family",
    "Fix",
    "FixCheck",
    "GpsConfig",
    "MatchCheckConfig",
    "Reason",
    "ReversalCounter",
    "RouteConfig",
    "RouteJudgement",
    "RouteRechecker",
    "SafetyConfig",
    "SafetyError",
    "SafetyGate",
    "SafetyInputError",
    "SafetyLogError",
    "SloReport",
    "StabilityReport",
    "TickInput",
    "Verdict",
    "bbox_area_geojson",
    "check_bundle",
    "check_demand",
    "check_fix",
    "check_match",
    "check_route",
    "evaluate",
    "fallback_message",
    "follow_the_road",
    "hard_to_judge",
    "judge_route",
    "legal_turns",
    "maneuver_key",
    "normalise_locale",
    "path_confidence",
    "slo",
    "stability",
    "verdict_of",
]
