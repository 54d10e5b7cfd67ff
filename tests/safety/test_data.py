"""Bundle status and demand checks (fake DemandTables until the real one lands)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models import TickDemand
from safety import BundleStatus, DemandCheckConfig, Reason, SafetyGate, check_bundle, check_demand
from safety.data import _quantile_linear
from tiles import Graph

from .helpers import NOW_S, fake_table, long_walk, ok_tick, tick_demand

CFG = DemandCheckConfig()
MONDAY_10H = 600.0


def test_bundle_status() -> None:
    assert check_bundle(BundleStatus(present=True), NOW_S) == ()
    assert check_bundle(None, NOW_S) == (Reason.BUNDLE_MISSING,)
    assert check_bundle(BundleStatus(present=False), NOW_S) == (Reason.BUNDLE_MISSING,)
    assert check_bundle(BundleStatus(True, hash_ok=False), NOW_S) == (Reason.BUNDLE_HASH,)
    assert check_bundle(BundleStatus(True, expires_at_s=NOW_S - 1), NOW_S) == (
        Reason.BUNDLE_EXPIRED,
    )
    assert check_bundle(BundleStatus(True, expires_at_s=NOW_S + 3600), NOW_S) == ()
    assert check_bundle(BundleStatus(True, expires_at_s=math.nan), NOW_S) == (
        Reason.BUNDLE_EXPIRED,
    )


def _demand(g: Graph, route: list[int]) -> tuple[TickDemand, object]:
    table = fake_table(g.n_edges_total)
    return tick_demand(table, route, MONDAY_10H), table


def test_statistical_demand_passes_against_its_own_table(manhattan: Graph) -> None:
    rng = np.random.default_rng(0)
    route = long_walk(manhattan, rng, 12)
    table = fake_table(manhattan.n_edges_total)
    d = tick_demand(table, route, MONDAY_10H)
    assert check_demand(d, table, MONDAY_10H, CFG) == ()
    a = int(manhattan.local([route[0]])[0])
    v = SafetyGate().check(ok_tick(manhattan, a, route, demand=d, table=table))
    assert Reason.DEMAND_OUT_OF_DISTRIBUTION not in v.reasons
    assert not any(r.family == "demand" for r in v.reasons)


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("pickups_per_h", math.nan, Reason.DEMAND_NAN),
        ("pickups_per_h", math.inf, Reason.DEMAND_NAN),
        ("fare_mean", math.nan, Reason.DEMAND_NAN),
        ("pickups_per_h", -0.5, Reason.DEMAND_NEGATIVE),
        ("trip_duration_s", -1.0, Reason.DEMAND_NEGATIVE),
        ("pickups_per_h", 1e4, Reason.DEMAND_OUT_OF_DISTRIBUTION),
        ("fare_mean", 5e3, Reason.DEMAND_OUT_OF_DISTRIBUTION),
        ("trip_duration_s", 1e6, Reason.DEMAND_OUT_OF_DISTRIBUTION),
    ],
)
def test_corrupted_model_output(manhattan: Graph, field: str, value: float, reason: Reason) -> None:
    rng = np.random.default_rng(1)
    route = long_walk(manhattan, rng, 12)
    table = fake_table(manhattan.n_edges_total)
    d = tick_demand(table, route, MONDAY_10H)
    arr = np.array(getattr(d, field), copy=True)
    arr.flat[3] = value
    bad = replace(d, **{field: arr}, source="onnx:test")
    r = check_demand(bad, table, MONDAY_10H, CFG)
    assert reason in r
    a = int(manhattan.local([route[0]])[0])
    v = SafetyGate().check(ok_tick(manhattan, a, route, demand=bad, table=table))
    assert not v.ok and reason in v.reasons and v.route == ()


def test_ood_bound_is_relative_to_the_link(manhattan: Graph) -> None:
    route = long_walk(manhattan, np.random.default_rng(2), 8)
    table = fake_table(manhattan.n_edges_total)
    d = tick_demand(table, route, MONDAY_10H)
    e = np.asarray(route, dtype=np.int64)
    link_max = table.pickups_per_h[:, :, e].max(axis=(0, 1))
    pos = table.pickups_per_h[table.pickups_per_h > 0]
    bound = CFG.ood_factor * np.maximum(link_max, np.quantile(pos, CFG.ood_floor_quantile))
    just_below = np.broadcast_to(bound * 0.999, d.pickups_per_h.shape).astype(np.float32)
    assert check_demand(replace(d, pickups_per_h=just_below), table, MONDAY_10H, CFG) == ()
    just_above = np.broadcast_to(bound * 1.01, d.pickups_per_h.shape).astype(np.float32)
    assert check_demand(replace(d, pickups_per_h=just_above), table, MONDAY_10H, CFG) == (
        Reason.DEMAND_OUT_OF_DISTRIBUTION,
    )
    lenient = DemandCheckConfig(max_ood_share=1.0)
    assert check_demand(replace(d, pickups_per_h=just_above), table, MONDAY_10H, lenient) == ()


def test_demand_missing_for_the_current_slot(manhattan: Graph) -> None:
    route = long_walk(manhattan, np.random.default_rng(3), 8)
    table = fake_table(manhattan.n_edges_total)
    d = tick_demand(table, route, MONDAY_10H)
    assert check_demand(d, table, MONDAY_10H + 29, CFG) == ()
    # the tick's demand was computed for 10:00-11:00; at 11:30 the current slot is absent
    assert check_demand(d, table, MONDAY_10H + 90, CFG) == (Reason.DEMAND_SLOT_MISSING,)
    # week wrap: Sunday 23:45 demand holds slots 10050 and (wrapped) Monday 00:00
    late = tick_demand(table, route, 7 * 1440 - 15)
    assert check_demand(late, table, 7 * 1440 - 15, CFG) == ()
    assert Reason.DEMAND_SLOT_MISSING not in check_demand(late, table, 10, CFG)  # next slot: 0


def test_demand_missing_or_malformed(manhattan: Graph) -> None:
    assert check_demand(None, None, MONDAY_10H, CFG) == (Reason.DEMAND_MISSING,)
    assert check_demand(None, None, MONDAY_10H, CFG, required=False) == ()
    route = long_walk(manhattan, np.random.default_rng(4), 8)
    table = fake_table(manhattan.n_edges_total)
    d = tick_demand(table, route, MONDAY_10H)
    short = replace(d, pickups_per_h=d.pickups_per_h[:, :-1])
    assert check_demand(short, table, MONDAY_10H, CFG) == (Reason.DEMAND_MALFORMED,)
    foreign = replace(d, edge_id=d.edge_id + np.int32(10**6))
    assert Reason.DEMAND_MALFORMED in check_demand(foreign, table, MONDAY_10H, CFG)
    as_text = replace(d, pickups_per_h=np.full(d.pickups_per_h.shape, "x"))
    assert check_demand(as_text, table, MONDAY_10H, CFG) == (Reason.DEMAND_MALFORMED,)


def test_demand_without_a_table_skips_only_the_distribution_check(manhattan: Graph) -> None:
    route = long_walk(manhattan, np.random.default_rng(5), 8)
    d = tick_demand(fake_table(manhattan.n_edges_total), route, MONDAY_10H)
    huge = replace(d, pickups_per_h=d.pickups_per_h * 1e6)
    assert check_demand(huge, None, MONDAY_10H, CFG) == ()
    nan = replace(d, pickups_per_h=d.pickups_per_h * np.nan)
    assert check_demand(nan, None, MONDAY_10H, CFG) == (Reason.DEMAND_NAN,)


_POSITIVE_F32 = st.floats(
    min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=True, width=32
)


@given(
    values=hnp.arrays(np.float32, st.integers(1, 60), elements=_POSITIVE_F32),
    q=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 0.99, 1.0])),
)
def test_the_quantile_is_numpys_linear_quantile_bit_for_bit(values: np.ndarray, q: float) -> None:
    """What the demand check's floors use instead of np.quantile (issue 20): the same value
    for positive float32 values (what the floors are taken over), infinities included."""
    with np.errstate(invalid="ignore"):  # inf - inf: NaN in both, as the assertion allows
        want = float(np.quantile(values, q))
        got = _quantile_linear(values.copy(), q)
    assert got == want or (math.isnan(got) and math.isnan(want)), (got, want)
