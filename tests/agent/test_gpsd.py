"""gpsd input: a REAL gpsd (Debian's, started by gpsfake on loopback) replays a real receiver's
log; nagashi's gpsd client must give the fixes gpsd computed, and nagashi's own NMEA decoder
the same positions. Also the live NMEA stream's epoch timeout, and the --gps gpsd:// form."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from agent.clock import ManualClock, SystemClock
from agent.errors import GpsError
from agent.gps import Fix, open_source
from agent.gps.gpsd import GpsdSource, tpv_fix
from agent.gps.nmea import NmeaSocketSource, decode_lines
from tests.components import require

LOGS = Path(__file__).resolve().parent.parent / "data" / "nmea"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect_when_up(port: int, clock: SystemClock, proc: subprocess.Popen[bytes]) -> GpsdSource:
    for _ in range(100):
        if proc.poll() is not None:
            assert proc.stderr is not None  # started with stderr=PIPE
            raise AssertionError(f"gpsfake exited early: {proc.stderr.read()!r}")
        try:
            return GpsdSource("127.0.0.1", port, clock, connect_timeout_s=1.0, poll_s=0.5)
        except GpsError:
            clock.sleep(0.1)
    raise AssertionError("gpsd never listened")


def test_real_gpsd_replaying_a_real_log() -> None:
    require("gpsd")
    gpsfake = require("gpsfake")
    log = LOGS / "sirfstarv-nmea.log"  # SiRFstarV, 2019: after gpsd's week-rollover guard
    want = list(decode_lines(log.read_text().splitlines()))
    port = _free_port()
    # gpsfake waits for the first client, then feeds the log once at 0.05 s a sentence
    proc = subprocess.Popen(
        [gpsfake, "-1", "-q", "-c", "0.05", "-P", str(port), "-S", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    clock = SystemClock()
    guard = threading.Timer(60, clock.stop)  # bound the test if gpsd never reports
    guard.start()
    reports: dict[float, Fix] = {}  # gpsd may report an epoch more than once: keep its last
    try:
        src = _connect_when_up(port, clock, proc)
        for f in src.fixes():
            if f is not None:
                reports[f.time_s] = f
            if want[-1].time_s in reports or proc.poll() is not None:
                break
        src.close()
    finally:
        guard.cancel()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    got = sorted(reports.values(), key=lambda f: f.time_s)
    assert src.reports > 0
    by_time = {f.time_s: f for f in want}
    assert len(got) >= len(want) - 2  # the first epoch may pass before the WATCH is seen
    for f in got:
        ours = by_time[f.time_s]  # gpsd's time is one of the receiver's own
        assert f.lat == pytest.approx(ours.lat, abs=1e-7)
        assert f.lon == pytest.approx(ours.lon, abs=1e-7)
        assert f.speed_mps == pytest.approx(ours.speed_mps or 0.0, abs=0.01)
    # gpsd's eph (from the DOPs); its first report, on joining mid-epoch, may lack it
    assert all(f.accuracy_m is not None and f.accuracy_m > 0 for f in got[1:])


def test_tpv_reports() -> None:
    base = {
        "class": "TPV",
        "mode": 3,
        "time": "2019-02-05T02:09:37.000Z",
        "lat": 44.06,
        "lon": -121.3,
    }
    f = tpv_fix({**base, "speed": 0.057, "track": 359.11, "epx": 8.82, "epy": 12.604})
    assert f is not None and f.time_s == 1549332577.0
    # 95 % per axis -> one sigma horizontal
    assert f.accuracy_m == pytest.approx((8.82**2 + 12.604**2) ** 0.5 / 1.96)
    assert (f.speed_mps, f.heading_deg) == (0.057, 359.11)
    g = tpv_fix({**base, "eph": 17.1, "epx": 1.0, "epy": 1.0})
    assert g is not None and g.accuracy_m == pytest.approx(17.1 / 1.7308, rel=1e-3)
    assert g.speed_mps is None
    h = tpv_fix(base)
    assert h is not None and h.accuracy_m is None
    assert tpv_fix({**base, "mode": 1}) is None
    assert tpv_fix({k: v for k, v in base.items() if k != "time"}) is None
    assert tpv_fix({**base, "lat": "x"}) is None and tpv_fix({**base, "time": "x"}) is None


def test_gpsd_protocol_reconnects_and_reports_no_fix_on_loopback() -> None:
    """A loopback server speaking gpsd's JSON: the WATCH request, TPVs, a drop, a reconnect."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    watches: list[bytes] = []
    tpv = (
        '{"class":"TPV","mode":%d,"time":"2019-02-05T02:09:%02d.000Z","lat":44.06,'
        '"lon":-121.31,"eph":13.3}\n'
    )

    def serve() -> None:
        for first in (35, 40):
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b'{"class":"VERSION","release":"3.22"}\n')
                watches.append(conn.recv(200))
                conn.sendall(b"not json\n" + (tpv % (1, first)).encode())
                conn.sendall("".join(tpv % (3, first + i) for i in range(1, 4)).encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    clock = ManualClock()
    src = open_source(f"gpsd://127.0.0.1:{port}", clock)
    assert isinstance(src, GpsdSource) and src.description == f"gpsd://127.0.0.1:{port}"
    got: list[Fix | None] = []
    for f in src.fixes():
        got.append(f)
        if len([g for g in got if g is not None]) == 6:
            clock.stop()
    src.close()
    srv.close()
    t.join(5)
    assert watches == [b'?WATCH={"enable":true,"json":true}\n'] * 2
    assert [int(g.time_s) % 60 for g in got if g is not None] == [36, 37, 38, 41, 42, 43]
    assert got[0] is None and src.reconnects == 1 and src.malformed == 2
    with pytest.raises(GpsError, match="gpsd://HOST"):
        open_source("gpsd://", clock)
    with pytest.raises(GpsError, match="gpsd://HOST"):
        open_source("gpsd://host:port", clock)


def test_live_nmea_epoch_ends_after_the_timeout() -> None:
    """A u-blox epoch (RMC first) then silence: the fix comes after the epoch timeout, with
    its GGA's accuracy, not after the poll interval and not without accuracy."""
    lines = (LOGS / "ublox-neo-m8n.log").read_text().splitlines()
    first = lines.index(next(ln for ln in lines if ln.startswith("$GNRMC")))
    epoch = lines[first : first + 14]
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    release = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall("".join(ln + "\r\n" for ln in epoch).encode())
            release.wait(30)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    clock = ManualClock()
    src = NmeaSocketSource("127.0.0.1", port, clock, poll_s=20.0, epoch_timeout_s=0.2)
    try:
        item = next(iter(src.fixes()))
    finally:
        src.close()
        release.set()
        srv.close()
        t.join(5)
    want = list(decode_lines(epoch))
    assert item == want[0] and item.accuracy_m is not None
    with pytest.raises(GpsError, match="epoch timeout"):
        NmeaSocketSource("127.0.0.1", port, clock, epoch_timeout_s=0.0)
