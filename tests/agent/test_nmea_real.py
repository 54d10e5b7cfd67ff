"""The NMEA decoder on real receivers' logs (gpsd's test captures, see tests/data/nmea/README.md).

The oracle is an independent parser, pynmeagps: every time stamp with a valid RMC or GGA must
come out as one fix at the receiver's own time and position, and every fix of an epoch that
carried a GGA HDOP or a GST error must have an accuracy.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynmeagps import NMEAReader

from agent.gps import DEFAULT_UERE_M, Fix
from agent.gps.nmea import NmeaDecoder, checksum, decode_lines

LOGS = Path(__file__).resolve().parent.parent / "data" / "nmea"
ALL = sorted(p.name for p in LOGS.glob("*.log"))
WITH_FIXES = [n for n in ALL if not n.startswith("garmin")]  # the Garmin capture is demo mode


def lines_of(name: str) -> list[str]:
    return (LOGS / name).read_text(encoding="utf-8").splitlines()


def oracle(lines: list[str]) -> dict[float, dict[str, Any]]:
    """Per time stamp: what the receiver said, parsed by pynmeagps."""
    out: dict[float, dict[str, Any]] = {}
    day: date | None = None
    for line in lines:
        if not line.startswith("$") or line[3:6] not in ("RMC", "GGA", "GST", "ZDA"):
            continue
        m: Any = NMEAReader.parse(line)
        tod = m.time
        if m.msgID == "RMC" and m.date:
            day = m.date
        if m.msgID == "ZDA":
            day = date(m.year, m.month, m.day)
        if not tod:
            continue
        e = out.setdefault(
            tod.hour * 3600 + tod.minute * 60 + tod.second + tod.microsecond / 1e6, {}
        )
        if m.msgID == "RMC" and m.status == "A":
            e["pos"], e["day"], e["speed"] = (m.lat, m.lon), m.date, m.spd
        elif m.msgID == "GGA" and m.quality not in ("", 0, 7, 8):
            e.setdefault("gga", (m.lat, m.lon, m.HDOP))
        elif m.msgID == "GST" and m.stdLat != "" and m.stdLong != "":
            e["gst"] = math.hypot(m.stdLat, m.stdLong)
        if "day" not in e and day is not None:
            e["day"] = day
    return out


def expected_fixes(lines: list[str]) -> list[tuple[float, float, float, dict[str, Any]]]:
    exp = []
    for sod, e in sorted(oracle(lines).items()):
        pos = e.get("pos") or (e["gga"][:2] if "gga" in e else None)
        if pos is None or "day" not in e:
            continue
        d = e["day"]
        t = datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() + sod
        exp.append((t, pos[0], pos[1], e))
    return exp


@pytest.mark.parametrize("name", WITH_FIXES)
def test_real_log_positions_times_and_accuracy(name: str) -> None:
    lines = lines_of(name)
    got = list(decode_lines(lines))
    exp = expected_fixes(lines)
    assert len(exp) >= 5
    assert [f.time_s for f in got] == [t for t, *_ in exp]
    for f, (_, lat, lon, e) in zip(got, exp, strict=True):
        assert f.lat == pytest.approx(lat, abs=1e-7) and f.lon == pytest.approx(lon, abs=1e-7)
        if "gst" in e:  # the receiver's own error estimate wins
            assert f.accuracy_m == pytest.approx(e["gst"], rel=1e-9)
        elif "gga" in e and e["gga"][2] != "":
            assert f.accuracy_m == pytest.approx(e["gga"][2] * DEFAULT_UERE_M, rel=1e-9)
        if "speed" in e and e["speed"] != "":
            assert f.speed_mps == pytest.approx(e["speed"] * 1852 / 3600, rel=1e-9)


def test_every_real_fix_with_gga_gsa_or_gst_has_an_accuracy() -> None:
    total = with_acc = 0
    for name in ALL:
        dec = NmeaDecoder()
        fixes = [f for line in lines_of(name) if (f := dec.feed(line)) is not None]
        last = dec.flush()
        fixes += [last] if last is not None else []
        assert dec.bad_checksum == 0, name
        total += len(fixes)
        with_acc += sum(f.accuracy_m is not None for f in fixes)
    # the one fix without: the MTK capture starts with an epoch that has only its RMC
    assert (total, with_acc) == (32, 31)


def test_ublox_sends_rmc_first_and_still_gets_accuracy() -> None:
    lines = lines_of("ublox-neo-m8n.log")
    assert next(ln for ln in lines if ln.startswith("$GNRMC")) in lines[:10]
    got = list(decode_lines(lines))
    assert len(got) == 6 and all(f.accuracy_m is not None for f in got)
    assert got[0].accuracy_m == pytest.approx(0.91 * DEFAULT_UERE_M)


def test_garmin_demo_mode_is_void_and_a_truncated_checksum_is_rejected() -> None:
    lines = lines_of("garmin-geko201.log")
    dec = NmeaDecoder()
    assert [dec.feed(ln) for ln in lines] == [None] * len(lines) and dec.flush() is None
    assert dec.void == 4  # RMC status V, GGA quality 8 (simulator)
    assert dec.feed("$GPBOD,,T,,M,,*") is None and dec.bad_checksum == 1  # gpsd rejects it


def _epochs(lines: list[str], first: str) -> list[list[str]]:
    """Split a log into its epochs, each starting with the ``first`` sentence type."""
    out: list[list[str]] = []
    for ln in lines:
        if ln.startswith("$"):
            if ln[3:6] == first or not out:
                out.append([])
            out[-1].append(ln)
    return out


@given(st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None)
def test_order_within_an_epoch_does_not_matter(rnd: random.Random) -> None:
    # GSA and VTG carry no time stamp: they must follow one of their epoch's timed sentences
    lines = lines_of("septentrio-polarx2.log")
    want = list(decode_lines(lines))
    shuffled: list[str] = []
    for ep in _epochs(lines, "GST"):
        timed = [ln for ln in ep if ln[3:6] in ("GST", "GGA", "RMC", "ZDA")]
        rest = [ln for ln in ep if ln not in timed]
        rnd.shuffle(timed)
        rnd.shuffle(rest)
        shuffled += timed[:1] + rest + timed[1:]
    assert list(decode_lines(shuffled)) == want


def test_gga_only_receiver_is_dated_by_zda_or_the_last_rmc() -> None:
    lines = lines_of("mt3339.log")
    want = list(decode_lines(lines))
    no_rmc = [ln for ln in lines if "RMC" not in ln]
    got = list(decode_lines(no_rmc))
    assert [(f.time_s, f.lat, f.lon, f.accuracy_m) for f in got] == [
        (f.time_s, f.lat, f.lon, f.accuracy_m) for f in want
    ]
    assert all(f.speed_mps is None for f in got)  # this receiver sends no VTG
    # date from the first RMC only, then GGA alone
    first_rmc = next(i for i, ln in enumerate(lines) if "RMC" in ln)
    later = lines[: first_rmc + 1] + [ln for ln in lines[first_rmc + 1 :] if ln[3:6] == "GGA"]
    assert [f.time_s for f in decode_lines(later)] == [f.time_s for f in want]


def test_gga_only_receiver_without_any_date() -> None:
    lines = [ln for ln in lines_of("mt3339.log") if ln[3:6] in ("GGA", "GSA")]
    dec = NmeaDecoder()
    for ln in lines:
        dec.feed(ln)
    dec.flush()
    assert dec.undated == 8  # dropped and counted: a time of day is not a time
    # a live stream dates them by its clock's day (here: the capture's own day, 2015-04-13)
    now = datetime(2015, 4, 13, 20, 27, 0, tzinfo=UTC).timestamp()
    got = list(decode_lines(lines, now=lambda: now))
    assert [f.time_s for f in got] == [f.time_s for f in decode_lines(lines_of("mt3339.log"))]
    # just after midnight, a fix stamped 20:26 belongs to the day before
    after_midnight = datetime(2015, 4, 14, 0, 1, tzinfo=UTC).timestamp()
    assert next(iter(decode_lines(lines, now=lambda: after_midnight))).time_s == got[0].time_s


def test_speed_and_course_from_vtg_without_rmc() -> None:
    lines = lines_of("septentrio-polarx2.log")
    want = list(decode_lines(lines))
    got = list(decode_lines([ln for ln in lines if "RMC" not in ln]))
    assert [(f.time_s, f.speed_mps, f.heading_deg) for f in got] == [
        (f.time_s, f.speed_mps, f.heading_deg) for f in want
    ]
    assert got[0].heading_deg == pytest.approx(339.1)


def test_accuracy_from_gsa_when_gga_has_no_hdop() -> None:
    lines = [
        ln if ln[3:6] != "GGA" else _with_field(ln, 8, "") for ln in lines_of("ublox-neo-m8n.log")
    ]
    got = list(decode_lines(lines))
    assert [f.accuracy_m for f in got][:5] == pytest.approx([0.91 * DEFAULT_UERE_M] * 4 + [5.1])


def _with_field(line: str, i: int, value: str) -> str:
    body = line[1:].split("*")[0].split(",")
    body[i] = value
    s = ",".join(body)
    return f"${s}*{checksum(s)}"


def test_checksums_the_way_gpsd_takes_them() -> None:
    lines = lines_of("mt3339.log")
    want = list(decode_lines(lines))
    # no checksum at all: accepted
    assert list(decode_lines([ln.split("*")[0] for ln in lines])) == want
    # lower-case hex: accepted
    assert list(decode_lines([ln[:-2] + ln[-2:].lower() for ln in lines])) == want
    # a wrong checksum on every RMC: rejected and counted; GGA and ZDA still give the fixes
    dec = NmeaDecoder()
    bad = [ln[:-2] + ("00" if ln[-2:] != "00" else "01") if "RMC" in ln else ln for ln in lines]
    got = [f for ln in bad if (f := dec.feed(ln)) is not None] + [dec.flush()]
    assert dec.bad_checksum == 8 and dec.skipped >= 8
    assert [f.time_s for f in got if f] == [f.time_s for f in want]
    assert all(f.speed_mps is None for f in got if f)  # the speed was in the rejected RMCs


def test_midnight_rollover_advances_the_date() -> None:
    # the MTK capture's RMC, re-stamped a second before midnight, then GGA-only after it
    rmc = _with_field(_with_field(lines_of("mtk-3329.log")[8], 1, "235959.000"), 9, "311221")
    gga = _with_field(lines_of("mtk-3329.log")[9], 1, "000000.000")
    a, b = list(decode_lines([rmc, gga]))
    assert b.time_s - a.time_s == pytest.approx(1.0)
    assert datetime.fromtimestamp(b.time_s, UTC).date() == date(2022, 1, 1)


real_lines = st.sampled_from([ln for n in ALL for ln in lines_of(n) if ln.startswith("$")])


@st.composite
def mangled(draw: st.DrawFn) -> str:
    line = draw(real_lines)
    chars = list(line)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        c = draw(st.characters(codec="utf-8"))
        if op == "insert":
            chars.insert(i, c)
        elif chars and i < len(chars):
            if op == "delete":
                del chars[i]
            else:
                chars[i] = c
    s = "".join(chars)
    if draw(st.booleans()):  # keep the checksum right so the fields get parsed
        s = "$" + s.lstrip("$").split("*")[0]
        s = f"{s}*{checksum(s[1:])}"
    return s


@given(st.lists(st.one_of(st.text(max_size=120), mangled(), real_lines), max_size=60))
@settings(max_examples=400, deadline=None)
def test_fuzz_no_exception(lines: list[str]) -> None:
    dec = NmeaDecoder(now=lambda: 1.7e9)
    fixes: list[Fix | None] = [dec.feed(ln) for ln in lines] + [dec.flush()]
    for f in fixes:
        if f is not None:
            assert math.isfinite(f.time_s) and -90 <= f.lat <= 90 and -180 <= f.lon <= 180
            assert f.accuracy_m is None or math.isfinite(f.accuracy_m)


def test_coordinates_are_read_by_their_minutes_and_bounded() -> None:
    # Hypothesis found it: a 4-digit longitude "2118.8515" read as 211° 8.85' (off the globe);
    # the minutes are the two digits before the point, whatever precedes them
    from agent.gps.nmea import _coord

    assert _coord("2118.8515", "W", 3) == pytest.approx(-(21 + 18.8515 / 60))
    assert _coord("02118.8515", "W", 3) == _coord("2118.8515", "W", 3)
    assert _coord("4404.1305", "N", 2) == pytest.approx(44 + 4.1305 / 60)
    for bad, hemi, digits in (
        ("18100.0000", "E", 3),
        ("9100.0000", "N", 2),
        ("12345678.0", "E", 3),
        ("4460.0000", "N", 2),
        ("44x4.1", "N", 2),
        ("1.5", "N", 2),
    ):
        with pytest.raises(ValueError):
            _coord(bad, hemi, digits)


def test_formatted_minutes_that_round_to_60_carry_into_the_degrees() -> None:
    # Hypothesis found it: 1.9999999999999858 was written as 01°60.0000', which no receiver sends
    from agent.gps.nmea import _coord, _ddmm

    assert _ddmm(1.9999999999999858, 2) == "0200.0000"
    assert _coord(_ddmm(1.9999999999999858, 2), "N", 2) == 2.0
    assert _ddmm(73.98551, 3) == "07359.1306"
