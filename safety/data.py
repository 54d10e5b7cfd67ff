"""Checks of the data the tick runs on: the bundle's status and the tick's demand."""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import numpy.typing as npt

from models import SLOT_MINUTES, DemandTable, TickDemand
from safety.config import DemandCheckConfig
from safety.inputs import BundleStatus
from safety.reasons import Reason


def check_bundle(status: BundleStatus | None, now_s: float) -> tuple[Reason, ...]:
    """BUNDLE_MISSING / BUNDLE_HASH / BUNDLE_EXPIRED from values sync/ passes in."""
    if status is None or not status.present:
        return (Reason.BUNDLE_MISSING,)
    reasons: list[Reason] = []
    if not status.hash_ok:
        reasons.append(Reason.BUNDLE_HASH)
    exp = status.expires_at_s
    if exp is not None and not (math.isfinite(now_s) and math.isfinite(exp) and now_s < exp):
        reasons.append(Reason.BUNDLE_EXPIRED)
    return tuple(reasons)


def _quantile_linear(values: npt.NDArray[np.float32], q: float) -> float:
    """``float(np.quantile(values, q))`` bit for bit (numpy's default 'linear' method, as numpy
    computes it for a Python float ``q``: the float64 virtual index, a float32 interpolation
    from the nearer neighbour) for a non-empty 1-D float32 array without NaN, without the
    ``numpy.ma`` import that np.quantile's ``np.unique`` makes on its first call (issue 20:
    ~45 ms on the first tick)."""
    n = values.size
    virtual = (n - 1) * q
    if virtual >= n - 1:  # at the last value: numpy interpolates it with itself (inf: NaN)
        lo = hi = values.max()
        gamma = virtual + 1  # from the index numpy gives it (-1)
    else:
        i = math.floor(virtual)
        gamma = virtual - i
        part = np.partition(values, (i, i + 1))
        lo, hi = part[i], part[i + 1]
    diff = hi - lo
    if gamma >= 0.5:
        return float(hi - diff * (1 - gamma))
    return float(lo + diff * gamma)


class _TableStats:
    """Per-link bounds derived once from a DemandTable (cached weakly per table)."""

    def __init__(self, table: DemandTable, cfg: DemandCheckConfig) -> None:
        rates = np.asarray(table.pickups_per_h, dtype=np.float32)
        self.link_max = rates.max(axis=(0, 1)) if rates.size else np.zeros(0, np.float32)
        q = float(cfg.ood_floor_quantile)
        pos = rates[rates > 0]
        self.floor = _quantile_linear(pos, q) if pos.size else 0.0
        self.fare = np.asarray(table.fare_mean, dtype=np.float32)
        self.duration = np.asarray(table.trip_duration_s, dtype=np.float32)
        fpos = self.fare[self.fare > 0]
        dpos = self.duration[self.duration > 0]
        self.fare_floor = _quantile_linear(fpos, q) if fpos.size else 0.0
        self.duration_floor = _quantile_linear(dpos, q) if dpos.size else 0.0


_STATS: weakref.WeakKeyDictionary[DemandTable, dict[DemandCheckConfig, _TableStats]] = (
    weakref.WeakKeyDictionary()
)
_STATS_LOCK = threading.Lock()


def _stats(table: DemandTable, cfg: DemandCheckConfig) -> _TableStats:
    with _STATS_LOCK:
        per = _STATS.setdefault(table, {})
        s = per.get(cfg)
        if s is None:
            s = _TableStats(table, cfg)
            per[cfg] = s
        return s


def _share_above(values: npt.NDArray[np.float32], bound: npt.NDArray[np.float32]) -> float:
    if values.size == 0:
        return 0.0
    return float(np.count_nonzero(values > bound) / values.size)


def check_demand(
    demand: TickDemand | None,
    table: DemandTable | None,
    minute_of_week: float,
    cfg: DemandCheckConfig,
    *,
    required: bool = True,
) -> tuple[Reason, ...]:
    """Reasons the tick's demand cannot be planned on (empty when it can).

    NaN/inf and negative values in rates, fares and durations; the current 30-minute slot
    absent; values out of distribution against ``table`` (skipped when no table is given).
    """
    if demand is None:
        return (Reason.DEMAND_MISSING,) if required else ()
    edge = np.asarray(demand.edge_id)
    rates = np.asarray(demand.pickups_per_h)
    slots = np.asarray(demand.slot_minute_of_week)
    fare = np.asarray(demand.fare_mean)
    dur = np.asarray(demand.trip_duration_s)
    k, n = slots.shape[0] if slots.ndim == 1 else -1, edge.shape[0] if edge.ndim == 1 else -1
    if (
        k < 0
        or n < 0
        or rates.shape != (k, n)
        or fare.shape != (n,)
        or dur.shape != (n,)
        or not np.issubdtype(edge.dtype, np.integer)
        or not all(np.issubdtype(a.dtype, np.number) for a in (rates, fare, dur, slots))
    ):
        return (Reason.DEMAND_MALFORMED,)
    reasons: list[Reason] = []
    values = (rates, fare, dur)
    if not all(np.isfinite(a).all() for a in values):
        reasons.append(Reason.DEMAND_NAN)
    with np.errstate(invalid="ignore"):
        if any((a < 0).any() for a in values):
            reasons.append(Reason.DEMAND_NEGATIVE)
    current = int(math.floor(minute_of_week / SLOT_MINUTES) * SLOT_MINUTES) % (7 * 1440)
    if not np.any(slots % (7 * 1440) == current):
        reasons.append(Reason.DEMAND_SLOT_MISSING)
    if table is not None:
        if n and (edge.min() < 0 or edge.max() >= table.n_edges):
            return (*reasons, Reason.DEMAND_MALFORMED)
        s = _stats(table, cfg)
        e = edge.astype(np.int64)
        f = np.float32(cfg.ood_factor)
        rate_bound = f * np.maximum(s.link_max[e], np.float32(s.floor))
        fare_bound = f * np.maximum(s.fare[e], np.float32(s.fare_floor))
        dur_bound = f * np.maximum(s.duration[e], np.float32(s.duration_floor))
        with np.errstate(invalid="ignore"):
            share = max(
                _share_above(rates, rate_bound[None, :]),
                _share_above(fare, fare_bound),
                _share_above(dur, dur_bound),
            )
        if share > cfg.max_ood_share:
            reasons.append(Reason.DEMAND_OUT_OF_DISTRIBUTION)
    return tuple(reasons)
