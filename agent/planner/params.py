"""The cruising planner's parameters (``params.yaml``'s ``planner`` section, parsed once)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

log = logging.getLogger("agent.planner")

#: the values of :attr:`PlannerParams.matching`
MATCHING = ("hail", "dispatch")

#: the read-out's spread margin the bundles nagashi builds ship (``route_spread_eps``; the
#: demo's and the pipeline's ``params.yaml``): docs/planner.md, "Offline cabs that spread"
ROUTE_SPREAD_EPS = 0.05

#: the layer length the bundles nagashi builds ship (``step_s``; the demo's and the pipeline's
#: ``params.yaml``): 20 s layers halve the value iteration against the planner's exact 10 s
#: and in the simulator earn the same (docs/planner.md, "20-second layers")
SHIPPED_STEP_S = 20.0


@dataclass(frozen=True)
class PlannerParams:
    """Cruising planner parameters. Money is in the demand table's currency (USD for NYC)."""

    #: links considered around the cab (issue 4: 3 km)
    radius_m: float = 3000.0
    #: planning horizon (issue 4: 30 to 60 minutes)
    horizon_s: float = 2700.0
    #: layer length; demand changes per 30-min slot and no-entry windows per minute, so 10 s
    #: resolves both while links shorter than a layer are handled by extrapolation
    step_s: float = 10.0
    #: cruising speed as a share of the free-flow speed of the tiles;
    #: :func:`speed_factor_from_demand` measures it from the trips of a demand table
    speed_factor: float = 1.0
    #: driving cost per metre and per second; 0 makes the objective revenue, as in issue 4
    cost_per_m: float = 0.0
    cost_per_s: float = 0.0
    #: mean time a hailing passenger waits at the curb before giving up (the simulator uses the
    #: same default): trip records only hold served trips, so it is an assumption, 5 minutes
    patience_s: float = 300.0
    #: other vacant cabs passing a link per hour (supply); 0 is a lone cab
    competing_vacant_per_h: float = 0.0
    #: value of a drop-off outside the planned links, as a share of the mean cell value
    outside_value_share: float = 0.0
    #: drop-offs: 0 (exact) uses every cell's drop-off probabilities; k > 0 keeps only the k
    #: most likely drop-off cells of each pickup cell (their probabilities scaled to the row's
    #: mass), an approximation that changes the plan (it is named in the plan's ``params``)
    dropoff_top_k: int = 0
    #: the route covers at least this distance and this time (unless the horizon ends first)
    route_min_m: float = 2000.0
    route_min_s: float = 300.0
    max_route_edges: int = 400
    #: the route enters a link at most this often (counting the cab's own) and makes no U-turn;
    #: 1: never a link twice (issue 15: a driver is not told to circle; where only a link the
    #: route already holds is left, the route ends there and the next tick plans on), within
    #: safety/'s ``RouteConfig.max_visits_per_link``; 0 reads out the bare policy
    route_max_visits: int = 1
    #: hysteresis (agent.planner.stability): a new route replaces the one shown only when its
    #: expected revenue is higher by this share of the shown route's
    route_switch_margin: float = 0.02
    #: commitment: within this many seconds (at the cab's speed) or metres of the shown route's
    #: next manoeuvre, a new route that does not make that same manoeuvre is refused
    route_commit_s: float = 8.0
    route_commit_m: float = 30.0
    #: without a live snapshot (offline, expired, refused), the route read-out takes at each
    #: junction one of the successors within this share of the best ``Q``, named by a hash of
    #: the cab's own salt and the link (agent.planner.readout.Spread): cabs that plan with the
    #: same values no longer herd (docs/planner.md, "Offline cabs that spread"); 0 reads out
    #: ``argmax Q`` everywhere. Bundles built by nagashi set :data:`ROUTE_SPREAD_EPS`
    route_spread_eps: float = 0.0
    #: how a passenger finds a cab: "hail" (she hails the first vacant cab to pass her link,
    #: the MDP of issue 4) or "dispatch" (an app sends the nearest vacant cab when she asks:
    #: the pickup term is the cab's share of the requests within ``dispatch_reach_s`` of its
    #: link, agent.planner.dispatch); "dispatch" names both in the plan's ``params``
    matching: str = "hail"
    #: dispatch: the requests a cab on a link may be sent to are those it reaches within this
    #: many seconds of cruising (its catchment), and its competitors the vacant cabs there
    dispatch_reach_s: float = 300.0

    def __post_init__(self) -> None:
        checks = {
            "radius_m": self.radius_m > 0,
            "step_s": 0 < self.step_s <= 120,
            "horizon_s": self.step_s <= self.horizon_s <= 4 * 3600,
            "speed_factor": 0 < self.speed_factor <= 2,
            "cost_per_m": self.cost_per_m >= 0,
            "cost_per_s": self.cost_per_s >= 0,
            "patience_s": self.patience_s > 0,
            "competing_vacant_per_h": self.competing_vacant_per_h >= 0,
            "outside_value_share": 0 <= self.outside_value_share <= 1,
            "dropoff_top_k": self.dropoff_top_k >= 0,
            "route_min_m": self.route_min_m >= 0,
            "route_min_s": self.route_min_s >= 0,
            "max_route_edges": self.max_route_edges >= 1,
            "route_max_visits": self.route_max_visits >= 0,
            "route_switch_margin": 0 <= self.route_switch_margin <= 1,
            "route_commit_s": 0 <= self.route_commit_s <= 60,
            "route_commit_m": 0 <= self.route_commit_m <= 500,
            "route_spread_eps": 0 <= self.route_spread_eps <= 1,
            "dispatch_reach_s": 0 < self.dispatch_reach_s <= 1800,
        }
        bad = [k for k, ok in checks.items() if not (ok and math.isfinite(float(getattr(self, k))))]
        if self.matching not in MATCHING:
            bad.append(f"matching ({' or '.join(MATCHING)}, got {self.matching!r})")
        if bad:
            raise ValueError(f"invalid planner parameters: {', '.join(bad)}")

    @property
    def hail_window_s(self) -> float:
        """``W``: how long a waiting hail stays available to this cab, seconds."""
        return 1.0 / (self.competing_vacant_per_h / 3600.0 + 1.0 / self.patience_s)

    def to_json(self) -> dict[str, Any]:
        """All fields; ``dropoff_top_k`` and ``route_spread_eps`` only when they are not 0,
        ``matching`` and ``dispatch_reach_s`` only under dispatch (plans keep the bytes they had
        before the options existed)."""
        out = asdict(self)
        if not self.dropoff_top_k:
            del out["dropoff_top_k"]
        if not self.route_spread_eps:
            del out["route_spread_eps"]
        if self.matching == "hail":
            del out["matching"], out["dispatch_reach_s"]
        return out

    @classmethod
    def from_mapping(
        cls, raw: object, *, base: PlannerParams | None = None, where: str = "params.yaml"
    ) -> PlannerParams:
        """The planner section of a ``params.yaml`` (the one parser: bundle, cruise, simulate),
        over ``base`` (default: the defaults). Unknown keys are ignored with a warning (a bundle
        from a newer planner must still load); a value of the wrong type or out of range is a
        ValueError of one line naming ``where``."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: planner must be a mapping")
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(str(k) for k in set(raw) - set(types))
        if unknown:
            log.warning("%s: unknown planner parameter(s) ignored: %s", where, ", ".join(unknown))
        values = {k: v for k, v in raw.items() if k in types}
        for k, v in values.items():
            if types[k] in ("str", str):
                if not isinstance(v, str):
                    raise ValueError(f"{where}: planner.{k} must be a string, got {v!r}")
                continue
            whole = types[k] in ("int", int)
            if isinstance(v, bool) or not isinstance(v, int if whole else int | float):
                kind = "a whole number" if whole else "a number"
                raise ValueError(f"{where}: planner.{k} must be {kind}, got {v!r}")
        try:
            return replace(base or cls(), **values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
