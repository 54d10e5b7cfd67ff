"""Hostile or broken trace files (issue 13, item 8): every reader gives fixes or a GpsError,
never another exception, and the CLI turns a bad trace into one line and exit status 2."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.clock import ManualClock
from agent.errors import GpsError
from agent.gps import Fix, TraceReplay, open_source, read_csv_trace, read_gpx_trace

REPO = Path(__file__).resolve().parents[2]
HEADER = "time,lon,lat,heading,speed\n"

#: The files of the attack run, and their neighbours, each a broken trace (not a drive).
BAD_CSV = {
    "bare CR in a field": HEADER + "1433284200,-73.98,40.75,1\r2,3\n",
    "bare CR in the header": "time,lon,la\rt\n1433284200,-73.98,40.75\n",
    "NUL in the header": "time,lon,lat\x00\n1,2,3\n",
    "time inf": HEADER + "inf,-73.98,40.75,,\n",
    "time -inf": HEADER + "-inf,-73.98,40.75,,\n",
    "time 1e300": HEADER + "1e300,-73.98,40.75,,\n",
    "time NaN on the first fix": HEADER + "nan,-73.98,40.75,,\n1433284200,-73.98,40.75,,\n",
    "time NaN later": HEADER + "1433284200,-73.98,40.75,,\nnan,-73.98,40.75,,\n",
    "year 1 with an offset": HEADER + "0001-01-01T00:00:00+05:00,-73.98,40.75,,\n",
    "year 9999": HEADER + "9999-12-31T23:59:59Z,-73.98,40.75,,\n",
    "lon inf": HEADER + "1433284200,inf,40.75,,\n",
    "lat NaN": HEADER + "1433284200,-73.98,nan,,\n",
    "lat 91": HEADER + "1433284200,-73.98,91,,\n",
    "short row": HEADER + "1433284200,-73.98\n",
}


def _gpx(time: str, lon: str = "-73.98", lat: str = "40.75") -> str:
    return (
        '<?xml version="1.0"?><gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        f'<trkpt lon="{lon}" lat="{lat}"><time>{time}</time></trkpt>'
        "</trkseg></trk></gpx>"
    )


BAD_GPX = {
    "time inf": _gpx("inf"),
    "time 1e300": _gpx("1e300"),
    "time NaN": _gpx("nan"),
    "year 1 with an offset": _gpx("0001-01-01T00:00:00+05:00"),
    "lon NaN": _gpx("2015-06-02T22:30:00Z", lon="nan"),
    "unknown encoding": '<?xml version="1.0" encoding="x-nope"?><gpx/>',
    "not XML": "\x00\x01",
}


@pytest.mark.parametrize("name", sorted(BAD_CSV))
def test_broken_csv_is_a_gps_error(tmp_path: Path, name: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(BAD_CSV[name].encode())
    with pytest.raises(GpsError, match=r"CSV trace .*bad\.csv"):
        read_csv_trace(p)


@pytest.mark.parametrize("name", sorted(BAD_GPX))
def test_broken_gpx_is_a_gps_error(tmp_path: Path, name: str) -> None:
    p = tmp_path / "bad.gpx"
    p.write_bytes(BAD_GPX[name].encode())
    with pytest.raises(GpsError, match=r"bad\.gpx"):
        read_gpx_trace(p)


@pytest.mark.parametrize("t", [math.inf, -math.inf, math.nan, 1e300, -1.0])
def test_replay_refuses_unusable_times(t: float) -> None:
    """Fixes built in code (and by the NMEA reader) go through the same check."""
    good = Fix(1433284200.0, -73.98, 40.75, None, None, None)
    bad = Fix(t, -73.98, 40.75, None, None, None)
    for fixes in ([bad, good], [good, bad]):
        with pytest.raises(GpsError, match="time"):
            TraceReplay(fixes, ManualClock())


def _usable(fixes: list[Fix]) -> None:
    assert fixes
    for f in fixes:
        assert math.isfinite(f.time_s) and 0 <= f.time_s < 4_102_444_800
        assert -180 <= f.lon <= 180 and -90 <= f.lat <= 90


# Tokens an attacker (or a broken logger) puts in a field; mixed with arbitrary text.
_TOKENS = st.sampled_from(
    [
        "1433284200",
        "2015-06-02T22:30:00Z",
        "2015-06-02T22:30:00+09:00",
        "0001-01-01T00:00:00+05:00",
        "-73.98",
        "40.75",
        "inf",
        "-inf",
        "nan",
        "1e300",
        "-1e300",
        "",
        '"',
        '"a""b"',
        "\r",
        "\n",
        "\x00",
        "\ufeff",
        ",",
    ]
)
_FIELD = st.one_of(_TOKENS, st.text(max_size=12))
_CSV_TEXT = st.lists(st.lists(_FIELD, max_size=7).map(",".join), max_size=6).map(
    lambda rows: HEADER + "\n".join(rows)
)
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fuzz_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@_FUZZ
@given(data=st.one_of(st.binary(max_size=300), _CSV_TEXT.map(lambda s: s.encode())))
def test_fuzz_csv_reader(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    p = _fuzz_file(tmp_path_factory.mktemp("csv"), "t.csv", data)
    try:
        fixes = read_csv_trace(p)
    except GpsError:
        return
    _usable(fixes)


_GPX_TEXT = st.tuples(_FIELD, _FIELD, _FIELD).map(lambda t: _gpx(*t).encode(errors="replace"))


@_FUZZ
@given(data=st.one_of(st.binary(max_size=300), _GPX_TEXT))
def test_fuzz_gpx_reader(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    p = _fuzz_file(tmp_path_factory.mktemp("gpx"), "t.gpx", data)
    try:
        fixes = read_gpx_trace(p)
    except GpsError:
        return
    _usable(fixes)


_RMC = "$GPRMC,223000.00,A,4045.000,N,07359.000,W,10.0,90.0,020615,,,A*"
_NMEA_LINE = st.one_of(
    st.just(_RMC + "00"),
    st.lists(_FIELD, max_size=13).map(lambda fs: "$GPRMC," + ",".join(fs)),
    st.lists(_FIELD, max_size=15).map(lambda fs: "$GPGGA," + ",".join(fs)),
    st.text(max_size=40),
)


def _with_checksum(line: str) -> str:
    from agent.gps.nmea import checksum

    body = line[1:] if line.startswith("$") else line
    return f"${body}*{checksum(body)}"


_NMEA_TEXT = st.lists(
    st.tuples(_NMEA_LINE, st.booleans()).map(lambda t: _with_checksum(t[0]) if t[1] else t[0]),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode(errors="replace"))


@_FUZZ
@given(data=st.one_of(st.binary(max_size=300), _NMEA_TEXT))
def test_fuzz_nmea_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """A recorded NMEA log through ``open_source`` (as ``agent run --gps x.nmea`` opens it)."""
    p = _fuzz_file(tmp_path_factory.mktemp("nmea"), "t.nmea", data)
    clock = ManualClock()
    try:
        src = open_source(str(p), clock, speed=0)
        fixes = [f for f in src.fixes() if f is not None]
    except GpsError:
        return
    _usable(fixes)


# --------------------------------------------------------------------------- the CLI


def _agent_run(bundle: Path, gps: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = ["agent", "run", "--bundle-dir", str(bundle), "--gps", str(gps), "--no-api"]
    argv += ["--speed", "0", "--quiet", "--data-dir", str(data_dir)]
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "name,content",
    [
        ("cr.csv", BAD_CSV["bare CR in a field"]),
        ("inf.csv", BAD_CSV["time inf"]),
        ("big.csv", BAD_CSV["time 1e300"]),
        ("nan.csv", BAD_CSV["time NaN on the first fix"]),
        ("inf.gpx", BAD_GPX["time inf"]),
        ("void.nmea", "$GPRMC,223000.00,V,,,,,,,020615,,,N\n\r\x00garbage\n"),
    ],
)
def test_agent_run_on_a_broken_trace_is_one_line_exit_2(
    manhattan_bundle: Path, tmp_path: Path, name: str, content: str
) -> None:
    gps = tmp_path / name
    gps.write_bytes(content.encode())
    r = _agent_run(manhattan_bundle, gps, tmp_path / "data")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("nagashi: error: "), r.stderr
    assert len(lines) == 1, r.stderr
