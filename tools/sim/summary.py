"""Means and 95 % intervals over runs, paired gains, and the release gate (:func:`gate`):
nagashi passes when the 95 % interval of its *paired* difference in revenue per hour against
the reference (hotspot), over the same runs, lies above zero -- at every adoption level when
several were run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from tools.sim.result import RunResult

__all__ = [
    "BASELINES",
    "GATE_POLICY",
    "GATE_RULE",
    "METRICS",
    "gate",
    "json_finite",
    "mean_ci",
    "paired_gain",
    "summarise",
]

METRICS = (
    "revenue_per_h",
    "pickups_per_h",
    "occupied_share",
    "empty_km_per_pickup",
    "served_share",
    "occupied_time_share",
    "search_time_s",
    "wait_time_s",
    "expired_share",
    "fleet_revenue_per_h",
    "fleet_occupied_time_share",
)
GATE_RULE = (
    "the gate passes when the 95% interval of the gated policy's paired revenue/h difference "
    "against hotspot (same passengers, starting positions and seeds) lies above zero, at every "
    "adoption level run"
)
#: the policy the release gate judges: the agent as shipped, following its route read-out with
#: the fleet's live layer (``nagashi`` is the idealised whole-area policy, kept for comparison)
GATE_POLICY = "nagashi-live"
#: baselines every nagashi variant is also paired with when they run alongside (``paired_vs``)
BASELINES = ("random-destination", "random-walk", "random", "greedy")


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t confidence interval (NaN values are left out)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return (mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return (mean, mean - half, mean + half)


def summarise(results: dict[str, list[RunResult]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for policy, runs in results.items():
        row: dict[str, object] = {"seeds": len(runs)}
        for name in METRICS:
            mean, lo, hi = mean_ci([r.metrics()[name] for r in runs])
            row[name] = {"mean": _r(mean), "ci95": [_r(lo), _r(hi)]}
        row["dead_end_waits"] = int(sum(r.stuck for r in runs))
        row["trap_rescues"] = int(sum(r.trap_rescues for r in runs))
        out[policy] = row
    return out


def paired_gain(
    results: dict[str, list[RunResult]], a: str, b: str, metric: str = "revenue_per_h"
) -> dict[str, object]:
    """``metric`` of ``a`` over ``b`` on the same runs: the mean paired difference and its 95 %
    interval (``revenue_per_h_diff``), and the mean difference over ``b``'s mean."""
    ra = np.array([r.metrics()[metric] for r in results[a]])
    rb = np.array([r.metrics()[metric] for r in results[b]])
    diff = ra - rb
    mean, lo, hi = mean_ci(diff.tolist())
    base = float(rb.mean()) if rb.size else math.nan
    return {
        "revenue_per_h_diff": {"mean": _r(mean), "ci95": [_r(lo), _r(hi)]},
        "relative_gain": _r(mean / base) if base else None,
    }


def gate(doc: Mapping[str, Any], policy: str = GATE_POLICY) -> tuple[bool, str]:
    """The release gate on a simulation table (:meth:`Experiment.to_json`) for ``policy``: see
    ``GATE_RULE``."""
    paired = (doc.get("paired") or {}).get(policy)
    if paired is None or doc.get("reference") != "hotspot":
        return False, f"gate FAIL: the gate needs the {policy} policy against the hotspot reference"
    points: list[tuple[str, Mapping[str, Any]]] = [("", paired)]
    for pt in (doc.get("adoption") or {}).get(policy, []):
        points.append((f"adoption {pt['adoption']:g}: ", pt["paired"]))
    ok = True
    parts = []
    for label, pg in points:
        d = pg["revenue_per_h_diff"]
        lo, hi = d["ci95"]
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            return False, "gate FAIL: confidence intervals need at least two runs"
        ok = ok and lo > 0
        gain = pg.get("relative_gain")
        rel = f" ({100 * gain:+.1f}%)" if isinstance(gain, float) else ""
        parts.append(f"{label}{policy} - hotspot {d['mean']:+.2f}/h [{lo:+.2f}, {hi:+.2f}]{rel}")
    verdict = "PASS" if ok else "FAIL"
    return ok, f"gate {verdict}: " + "; ".join(parts) + f" ({GATE_RULE})"


def _r(x: float) -> float:
    return round(float(x), 4) if math.isfinite(x) else math.nan


def json_finite(x: Any) -> Any:
    """``x`` with every non-finite float (an undefined interval) as None, so it is valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_finite(v) for v in x]
    return x
