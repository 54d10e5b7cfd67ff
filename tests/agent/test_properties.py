"""Invariants (Hypothesis): NMEA round trips, and trip logs survive a cut at any byte."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gps import Fix
from agent.gps.nmea import decode_lines, format_sentences
from agent.triplog import ReadReport, TripLog, TripLogConfig, log_files, read_records
from tiles.geo import angle_diff_deg, haversine_m

fixes = st.builds(
    Fix,
    time_s=st.integers(946_684_800, 4_102_444_799).map(float),  # 2000..2099 (RMC dates)
    lon=st.floats(-179.999, 179.999),
    lat=st.floats(-89.9, 89.9),
    heading_deg=st.one_of(st.none(), st.floats(0.0, 359.9)),
    speed_mps=st.one_of(st.none(), st.floats(0.0, 80.0)),
    accuracy_m=st.one_of(st.none(), st.floats(1.0, 200.0)),
)


@given(fixes)
@settings(max_examples=300, deadline=None)
def test_nmea_roundtrip(f: Fix) -> None:
    (got,) = list(decode_lines(format_sentences(f)))
    assert got.time_s == f.time_s
    assert float(haversine_m(f.lon, f.lat, got.lon, got.lat)) < 0.5  # 4-decimal minutes
    if f.speed_mps is None:
        assert got.speed_mps is None
    else:
        assert got.speed_mps is not None and abs(got.speed_mps - f.speed_mps) < 0.006
    if f.heading_deg is None:
        assert got.heading_deg is None
    else:
        assert got.heading_deg is not None
        assert float(angle_diff_deg(got.heading_deg, f.heading_deg)) <= 0.051
    if f.accuracy_m is None:
        assert got.accuracy_m is None
    else:
        assert got.accuracy_m is not None and abs(got.accuracy_m - f.accuracy_m) <= 0.26


values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=64),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
records = st.lists(
    st.dictionaries(st.text(max_size=8), values, max_size=5), min_size=1, max_size=12
)


@given(records, st.floats(0.0, 1.0))
@settings(max_examples=60, deadline=None)
def test_log_roundtrip_and_cut_anywhere(recs: list[dict[str, Any]], cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = TripLogConfig(d, max_file_bytes=300, fsync=False)
        tl = TripLog(cfg)
        for r in recs:
            tl.append({**r, "kind": "tick"})
        tl.close()
        back = list(read_records(d))
        assert [b["seq"] for b in back] == list(range(len(recs)))
        for r, b in zip(recs, back, strict=True):
            for k, v in r.items():
                if k not in ("kind", "seq", "schema_version"):
                    assert b[k] == v  # unknown fields kept, exactly
        # power lost in the middle of the last file: complete records survive, numbering goes on
        last = log_files(d)[-1]
        data = last.read_bytes()
        last.write_bytes(data[: int(len(data) * cut)])
        report = ReadReport()
        survivors = [b["seq"] for b in read_records(d, report)]
        assert survivors == list(range(len(survivors)))
        tl2 = TripLog(cfg)
        assert tl2.next_seq == len(survivors)
        tl2.append({"kind": "stop"})
        tl2.close()
        assert [b["seq"] for b in read_records(d)] == list(range(len(survivors) + 1))
