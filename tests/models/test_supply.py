"""The supply prior (models.supply.SupplyTable): rates of known passes, scaling, the file."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models
from models import DemandDataError
from models.supply import SLOTS_PER_WEEK, SupplyTable

passes = st.lists(
    st.tuples(st.integers(0, 50), st.floats(0.0, 10079.99, allow_nan=False)),
    max_size=80,
)
FUNCTION_FIXTURE = [HealthCheck.function_scoped_fixture]


def table_of(rows: list[tuple[int, float]], days: float = 2.0, cabs: int = 10) -> SupplyTable:
    return SupplyTable.from_passes(
        [e for e, _ in rows],
        [m for _, m in rows],
        days_per_slot=days,
        cabs=cabs,
        meta={"source": "test"},
    )


def test_the_package_exports_it_lazily() -> None:
    assert models.SupplyTable is SupplyTable
    assert "SupplyTable" in models.__all__


@settings(max_examples=60, deadline=None)
@given(rows=passes, days=st.floats(0.25, 30.0))
def test_rates_are_the_passes_per_observed_hour(rows: list[tuple[int, float]], days: float) -> None:
    table = table_of(rows, days)
    counts = Counter((e, int(m // 30)) for e, m in rows)
    probe = np.arange(0, 55)  # 51..54 were never seen
    for slot in {s for _, s in counts} | {0, 335}:
        got = table.rates(probe, slot * 30 + 29.5)
        want = np.array([counts.get((int(e), slot), 0) / (days * 0.5) for e in probe])
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.dtype == np.float64
    assert table.meta["records"] == len(rows) and table.meta["source"] == "test"
    assert list(table.edge_id) == sorted({e for e, _ in rows})


def test_a_known_pass_and_the_slot_convention() -> None:
    # Monday 08:10 and 08:20 on link 7, one pass on link 3 on Sunday 23:59; 4 days observed
    table = table_of([(7, 490.0), (7, 500.0), (3, 10079.0)], days=4.0, cabs=3)
    assert table.rates([7, 3, 99], 8 * 60 + 15).tolist() == [1.0, 0.0, 0.0]  # 2 / (4 x 0.5 h)
    assert table.rates([7], 8 * 60 + 30).tolist() == [0.0]  # the next slot
    assert table.rates([3], -1.0).tolist() == [0.5]  # minutes wrap to the week
    assert table.rates([3], 10079.0 + 7 * 1440).tolist() == [0.5]
    assert table.passes_per_h.shape == (SLOTS_PER_WEEK, 2)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(DemandDataError, match="minute of week"):
            table.rates([7], bad)


def test_days_per_slot_may_differ_and_unobserved_slots_must_be_empty() -> None:
    days = np.full(SLOTS_PER_WEEK, 2.0)
    days[16] = 8.0
    days[17] = 0.0
    table = SupplyTable.from_passes(
        [5, 5], [16 * 30 + 1, 15 * 30], days_per_slot=days, cabs=1, meta={}
    )
    assert table.rates([5], 16 * 30).tolist() == [0.25]  # 1 / (8 x 0.5)
    assert table.rates([5], 15 * 30).tolist() == [1.0]  # 1 / (2 x 0.5)
    assert table.meta["days_per_slot"][17] == 0.0
    with pytest.raises(DemandDataError, match="slot 17"):
        SupplyTable.from_passes([5], [17 * 30], days_per_slot=days, cabs=1, meta={})


@pytest.mark.parametrize(
    ("edges", "minutes", "days", "cabs", "match"),
    [
        ([1, 2], [0.0], 1.0, 1, "edge ids against"),
        ([-1], [0.0], 1.0, 1, "negative edge id"),
        ([1.5], [0.0], 1.0, 1, "not integers"),
        ([1], [float("nan")], 1.0, 1, "NaN"),
        ([1], [0.0], -1.0, 1, "days per slot"),
        ([1], [0.0], [1.0, 2.0], 1, "shape"),
        ([1], [0.0], 1.0, 0, "cabs"),
    ],
)
def test_bad_passes_are_refused(
    edges: list[float], minutes: list[float], days: object, cabs: int, match: str
) -> None:
    with pytest.raises(DemandDataError, match=match):
        SupplyTable.from_passes(edges, minutes, days_per_slot=days, cabs=cabs, meta={})  # type: ignore[arg-type]  # days of a wrong shape on purpose


@settings(max_examples=40, deadline=None)
@given(rows=passes, cabs=st.integers(1, 5000), to=st.integers(1, 5000))
def test_scaled_is_proportional_to_the_fleet(
    rows: list[tuple[int, float]], cabs: int, to: int
) -> None:
    table = table_of(rows, cabs=cabs)
    bigger = table.scaled(to)
    assert bigger.cabs == to and bigger.meta["scaled_from_cabs"] == cabs
    np.testing.assert_allclose(
        bigger.passes_per_h, table.passes_per_h * (to / cabs), rtol=1e-6, atol=1e-30
    )
    back = bigger.scaled(cabs)
    np.testing.assert_allclose(back.passes_per_h, table.passes_per_h, rtol=1e-5)
    with pytest.raises(DemandDataError, match="cabs"):
        table.scaled(0)


@settings(max_examples=30, deadline=None, suppress_health_check=FUNCTION_FIXTURE)
@given(rows=passes, cabs=st.integers(1, 5000))
def test_save_load_round_trip(tmp_path: Path, rows: list[tuple[int, float]], cabs: int) -> None:
    table = table_of(rows, cabs=cabs)
    path = table.save(tmp_path / "supply.npz")
    back = SupplyTable.load(path)
    assert back.cabs == cabs and back.slot_minutes == 30
    assert back.meta == table.meta
    np.testing.assert_array_equal(back.edge_id, table.edge_id)
    np.testing.assert_array_equal(back.passes_per_h, table.passes_per_h)
    assert back.edge_id.dtype == np.int64 and back.passes_per_h.dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["supply.npz"]  # no temp file left
    assert back.version == table.version


def test_the_version_names_the_rates_not_the_meta() -> None:
    a = table_of([(1, 10.0), (2, 20.0)])
    assert a.version.startswith("supply-") and len(a.version) == len("supply-") + 12
    assert table_of([(1, 10.0), (2, 20.0)]).version == a.version
    relabelled = SupplyTable(a.edge_id, 30, a.passes_per_h, a.cabs, {"source": "other"})
    assert relabelled.version == a.version
    assert table_of([(1, 10.0), (2, 50.0)]).version != a.version  # another slot
    assert a.scaled(20).version != a.version


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # stubs: a **dict may fill allow_pickle
    return buf.getvalue()


def _meta(**over: object) -> np.ndarray:
    doc = {"schema_version": 1, "slot_minutes": 30, "cabs": 4, "meta": {}, **over}
    return np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)


GOOD = {
    "edge_id": np.array([1, 4], dtype="<i8"),
    "passes_per_h": np.zeros((SLOTS_PER_WEEK, 2), dtype="<f4"),
    "meta_json": _meta(),
}


def _broken() -> list[tuple[str, bytes]]:
    good = _npz(**GOOD)
    nan = np.zeros((SLOTS_PER_WEEK, 2), dtype="<f4")
    nan[3, 1] = np.nan
    return [
        ("not a npz", b"hello, this is no zip"),
        ("truncated", good[: len(good) // 2]),
        ("empty", b""),
        ("no meta", _npz(edge_id=GOOD["edge_id"], passes_per_h=GOOD["passes_per_h"])),
        ("bad json", _npz(**{**GOOD, "meta_json": np.frombuffer(b"{nope", dtype=np.uint8)})),
        ("schema", _npz(**{**GOOD, "meta_json": _meta(schema_version=9)})),
        ("cabs", _npz(**{**GOOD, "meta_json": _meta(cabs=0)})),
        ("cabs text", _npz(**{**GOOD, "meta_json": _meta(cabs="4")})),
        ("slot", _npz(**{**GOOD, "meta_json": _meta(slot_minutes=15)})),
        ("meta list", _npz(**{**GOOD, "meta_json": _meta(meta=[1])})),
        ("shape", _npz(**{**GOOD, "passes_per_h": np.zeros((48, 2), dtype="<f4")})),
        ("nan", _npz(**{**GOOD, "passes_per_h": nan})),
        ("negative", _npz(**{**GOOD, "passes_per_h": -GOOD["passes_per_h"] - 1})),
        ("unsorted", _npz(**{**GOOD, "edge_id": np.array([4, 1], dtype="<i8")})),
        ("float ids", _npz(**{**GOOD, "edge_id": np.array([1.0, 4.0])})),
        ("pickled", _npz(**{**GOOD, "edge_id": np.array([object(), 1], dtype=object)})),
    ]


@pytest.mark.parametrize(("name", "data"), _broken(), ids=[n for n, _ in _broken()])
def test_a_malformed_file_is_refused_in_one_line(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / "supply.npz"
    path.write_bytes(data)
    with pytest.raises(DemandDataError) as err:
        SupplyTable.load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_the_good_file_of_the_malformed_cases_loads(tmp_path: Path) -> None:
    path = tmp_path / "supply.npz"
    path.write_bytes(_npz(**GOOD))
    assert SupplyTable.load(path).edge_id.tolist() == [1, 4]


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DemandDataError, match="no supply table"):
        SupplyTable.load(tmp_path / "nope.npz")


@settings(max_examples=40, deadline=None, suppress_health_check=FUNCTION_FIXTURE)
@given(data=st.binary(max_size=400), cut=st.integers(0, 2000))
def test_damaged_bytes_are_refused_not_crashed(tmp_path: Path, data: bytes, cut: int) -> None:
    good = _npz(**GOOD)
    path = tmp_path / "supply.npz"
    # random bytes, or the good file with a stretch overwritten
    blob = data if cut % 2 else good[:cut] + data + good[cut + len(data) :]
    path.write_bytes(blob)
    try:
        table = SupplyTable.load(path)
    except DemandDataError as e:
        assert "\n" not in str(e)
    else:  # a change that left a consistent file (zip members have CRCs) is a valid table
        assert table.passes_per_h.shape == (SLOTS_PER_WEEK, table.edge_id.size)
