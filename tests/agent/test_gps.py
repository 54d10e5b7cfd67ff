"""GPS sources: CSV/GPX traces, replay pacing on an injected clock, NMEA from a file and TCP."""

from __future__ import annotations

import math
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from agent.clock import ManualClock
from agent.errors import GpsError
from agent.gps import (
    Fix,
    TraceReplay,
    open_source,
    read_csv_trace,
    read_gpx_trace,
    write_csv_trace,
    write_gpx_trace,
)
from agent.gps.nmea import NmeaDecoder, NmeaSocketSource, decode_lines, format_sentences
from tiles import TileStore, match_fix
from tiles.geo import haversine_m

DATA = Path(__file__).resolve().parent.parent / "data"
CSV = DATA / "midtown_drive.csv"
GPX = DATA / "midtown_drive.gpx"


def test_fixture_csv_and_gpx_hold_the_same_drive() -> None:
    a = read_csv_trace(CSV)
    b = read_gpx_trace(GPX)
    assert len(a) == len(b) > 600
    assert [f.time_s for f in a] == [f.time_s for f in b]
    d = haversine_m([f.lon for f in a], [f.lat for f in a], [f.lon for f in b], [f.lat for f in b])
    assert float(np.max(d)) < 0.02
    for fa, fb in zip(a, b, strict=True):
        if fa.speed_mps is not None and fb.speed_mps is not None:
            assert fa.speed_mps == pytest.approx(fb.speed_mps, abs=0.01)
        if fa.heading_deg is not None:
            assert fb.heading_deg == pytest.approx(fa.heading_deg, abs=0.05)
    assert all(f.accuracy_m is not None for f in a)
    assert np.all(np.diff([f.time_s for f in a]) == 1.0)


def test_fixture_follows_real_streets(manhattan_tiles: Path) -> None:
    fixes = read_csv_trace(CSV)
    store = TileStore(manhattan_tiles)
    g = store.all()
    dists = [match_fix(g, f.lon, f.lat, f.heading_deg, f.speed_mps).best.distance_m for f in fixes]
    assert float(np.percentile(dists, 95)) < 12.0
    assert max(dists) < 25.0
    # it moves: several kilometres, city speeds, stops at lights
    steps = haversine_m(
        [f.lon for f in fixes[:-1]],
        [f.lat for f in fixes[:-1]],
        [f.lon for f in fixes[1:]],
        [f.lat for f in fixes[1:]],
    )
    assert 4000 < float(steps.sum()) < 12000
    speeds = np.array([f.speed_mps or 0.0 for f in fixes])
    assert speeds.max() < 13.0 and (speeds == 0).sum() > 20


def test_replay_paces_on_the_trace_clock() -> None:
    fixes = read_csv_trace(CSV)[:101]
    clock = ManualClock(start_s=5.0)
    src = TraceReplay(fixes, clock, speed=10.0)
    seen = []
    for f in src.fixes():
        assert f is not None  # a replay yields every fix of its trace, never a gap
        seen.append((f.time_s, src.now()))
    assert len(seen) == 101
    assert clock.slept_s == pytest.approx(10.0)
    for t, now in seen:
        assert now == pytest.approx(t)


def test_replay_as_fast_as_possible_and_stop() -> None:
    fixes = read_csv_trace(CSV)[:50]
    clock = ManualClock()
    assert len(list(TraceReplay(fixes, clock, speed=0).fixes())) == 50
    assert clock.slept_s == 0
    src = TraceReplay(fixes, clock, speed=1.0)
    it = src.fixes()
    next(it)
    clock.stop()
    assert list(it) == []


def test_csv_errors_are_clear(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("when,lon,lat\n1,2,3\n")
    with pytest.raises(GpsError, match="lacks column"):
        read_csv_trace(p)
    p.write_text(
        "time,lon,lat,heading,speed\n2015-06-02T22:30:01Z,-73.98,40.75,,\n"
        "2015-06-02T22:30:00Z,-73.98,40.75,,\n"
    )
    with pytest.raises(GpsError, match="backwards"):
        read_csv_trace(p)
    p.write_text("time,lon,lat,heading,speed\n2015-06-02T22:30:00,-73.98,40.75,,\n")
    with pytest.raises(GpsError, match="line 2"):
        read_csv_trace(p)
    with pytest.raises(GpsError, match="limit"):
        read_csv_trace(CSV, max_bytes=1000)
    with pytest.raises(GpsError, match="not found"):
        read_csv_trace(tmp_path / "none.csv")


def test_gpx_roundtrip_derives_missing_motion(tmp_path: Path) -> None:
    fixes = [Fix(1000.0 + i, -73.98 + i * 1e-4, 40.75, None, None, None) for i in range(5)]
    p = write_gpx_trace(fixes, tmp_path / "t.gpx", name="t")
    back = read_gpx_trace(p)
    assert len(back) == 5
    assert back[2].speed_mps == pytest.approx(8.43, abs=0.05)  # 1e-4 deg lon at 40.75 N
    assert back[2].heading_deg == pytest.approx(90.0, abs=0.1)
    q = write_csv_trace(back, tmp_path / "t.csv")
    assert read_csv_trace(q)[2].speed_mps == pytest.approx(back[2].speed_mps, abs=0.01)


def test_nmea_roundtrip_and_bad_sentences() -> None:
    fixes = read_csv_trace(CSV)[100:130]
    lines: list[str] = []
    for f in fixes:
        lines.extend(format_sentences(f))
    lines.insert(3, "$GPRMC,223000.00,V,,,,,,,020615,,,N*53")  # void: skipped
    lines.insert(5, lines[4][:-2] + "00")  # wrong checksum: skipped
    lines.insert(6, "garbage")
    got = list(decode_lines(lines))
    assert len(got) == len(fixes)
    for a, b in zip(fixes, got, strict=True):
        assert b.time_s == a.time_s
        assert float(haversine_m(a.lon, a.lat, b.lon, b.lat)) < 0.3
        if a.speed_mps is not None:
            assert b.speed_mps == pytest.approx(a.speed_mps, abs=0.01)
        assert b.accuracy_m == pytest.approx(a.accuracy_m or math.nan, abs=0.3)
    dec = NmeaDecoder()
    assert dec.feed("$GPRMC,1*00") is None and dec.skipped == 1


def test_nmea_file_source_via_open_source(tmp_path: Path) -> None:
    fixes = read_csv_trace(CSV)[:20]
    p = tmp_path / "drive.nmea"
    p.write_text("\n".join(s for f in fixes for s in format_sentences(f)) + "\n")
    clock = ManualClock()
    src = open_source(str(p), clock, speed=2.0)
    assert len(list(src.fixes())) == 20
    assert clock.slept_s == pytest.approx(9.5)
    assert isinstance(open_source(str(CSV), clock), TraceReplay)
    with pytest.raises(GpsError, match="unknown trace format"):
        open_source(str(tmp_path / "x.kml"), clock)
    with pytest.raises(GpsError, match="tcp://HOST:PORT"):
        open_source("tcp://nohost", clock)


def test_nmea_tcp_source_on_loopback_reconnects() -> None:
    fixes = read_csv_trace(CSV)[200:240]
    payloads = [
        "".join(s + "\r\n" for f in part for s in format_sentences(f)).encode()
        for part in (fixes[:25], fixes[25:])
    ]
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        for payload in payloads:  # two connections: the first one drops after 25 fixes
            conn, _ = srv.accept()
            with conn:
                # in uneven chunks, as a serial bridge would send them
                for i in range(0, len(payload), 97):
                    conn.sendall(payload[i : i + 97])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    clock = ManualClock()
    src = NmeaSocketSource("127.0.0.1", port, clock, poll_s=0.5, reconnect_s=0.1)
    got: list[Fix] = []
    silent = 0
    for f in src.fixes():
        if f is None:
            silent += 1
            continue
        got.append(f)
        if len(got) == len(fixes):
            clock.stop()
    src.close()
    srv.close()
    t.join(timeout=5)
    assert [f.time_s for f in got] == [f.time_s for f in fixes]
    assert src.reconnects == 1 and silent >= 1
    with pytest.raises(GpsError, match="cannot connect"):
        NmeaSocketSource("127.0.0.1", port, clock, connect_timeout_s=0.5)
