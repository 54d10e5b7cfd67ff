"""Parameters of the safety checks: one frozen dataclass per stage, units in the names.

Defaults are chosen for an urban taxi and err on the side of *not guiding*: a wrong instruction
in a moving cab is worse than none. ``params.yaml`` in a bundle may override them (the agent
reads it once and builds a :class:`SafetyConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tiles import MatchConfig


@dataclass(frozen=True)
class GpsConfig:
    """Checks of one GPS fix and of the step from the previous one."""

    max_fix_age_s: float = 5.0  # older than this (against the injected ``now``) is stale
    max_future_skew_s: float = 2.0  # a fix this far ahead of ``now`` means a wrong clock
    max_implied_speed_kph: float = 180.0  # faster than this between two fixes is a jump
    jump_window_s: float = 120.0  # previous fixes older than this are not compared
    max_accuracy_m: float = 30.0  # reported 68 % radius; larger (or unknown) is poor
    max_speed_mps: float = 70.0  # reported speed above this (252 km/h) is out of range
    min_speed_for_heading_mps: float = 2.0  # below this the GPS heading is noise
    min_displacement_for_heading_m: float = 8.0  # to derive a heading from the previous fix
    # a cab stopped where it last moved still faces the way it was going: the heading of the
    # last moving fix is held this long, while the cab stays this close to where it was taken
    held_heading_max_age_s: float = 180.0
    held_heading_max_distance_m: float = 10.0
    held_heading_max_turn_deg: float = 45.0  # a crawling heading this far off: the cab turned


@dataclass(frozen=True)
class MatchCheckConfig:
    """Map-matching acceptance (on top of :class:`tiles.MatchConfig`).

    Confidence here is *path confidence*: the share of the candidates' likelihood that lies on
    the best link or on the links just before/after it in the same direction, and past such
    a link of at most ``short_link_m`` the ones before/after that (the raw
    :attr:`tiles.Match.confidence` splits between consecutive links of one street and would
    reject half of all perfect fixes).
    """

    min_confidence: float = 0.5
    ambiguity_ratio: float = 0.5  # another road this likely (relative to best) is ambiguous
    max_distance_m: float = 25.0  # snapped distance from the fix
    max_heading_diff_deg: float = 60.0  # between the heading and the matched link
    #: a link this short that agrees with the best one passes the agreement on to the links
    #: after (or before) it: a junction mapped as several nodes a few metres apart (one
    #: position sigma of ``matching``) is one junction of the cab's way, not another road
    short_link_m: float = 10.0
    matching: MatchConfig = field(default_factory=MatchConfig)


@dataclass(frozen=True)
class DemandCheckConfig:
    """Checks of a tick's demand against the statistics shipped in the bundle.

    A predicted rate is out of distribution when it exceeds ``ood_factor`` times the larger of
    the link's maximum over all slots and day types in the table and the table-wide
    ``ood_floor_quantile`` of positive rates (so links with no recorded hails may still get a
    modest prediction). Fares and trip durations get the same per-link bound.
    """

    ood_factor: float = 3.0
    ood_floor_quantile: float = 0.99
    max_ood_share: float = 0.0  # share of values allowed above the bound (0: none)


@dataclass(frozen=True)
class RouteConfig:
    """Checks of a proposed route (global edge ids from the matched link on)."""

    max_length_m: float = 15_000.0
    max_links: int = 600
    max_u_turns: int = 0  # U-turn instructions are not given while cruising
    max_visits_per_link: int = 2  # circling a block twice is fine, three times is a loop
    slowdown_factor: float = 3.0  # links are checked closed over [free flow, x this] arrival
    hard_to_judge_ahead_m: float = 30.0  # the next link counts when the cab is this close
    min_route_m: float = 200.0  # a route trimmed shorter than this (from the cab) is not shown
    continuation_length_m: float = 600.0  # how far "follow the road" is traced ahead
    max_straight_turn_deg: float = 50.0  # continuation: the straightest turn, if this gentle


@dataclass(frozen=True)
class SafetyConfig:
    """Everything the gate checks, in one value."""

    gps: GpsConfig = field(default_factory=GpsConfig)
    match: MatchCheckConfig = field(default_factory=MatchCheckConfig)
    demand: DemandCheckConfig = field(default_factory=DemandCheckConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    require_demand: bool = True  # DEMAND_MISSING when a tick has no demand at all
    require_bundle_status: bool = True  # BUNDLE_MISSING when no status is passed
