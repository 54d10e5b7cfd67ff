"""A live NMEA receiver that falls silent: the agent stops guiding (stale fix), never freezes."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from agent.clock import SystemClock
from agent.gps import Fix, read_csv_trace
from agent.gps.nmea import NmeaSocketSource, format_sentences
from agent.instruction import Instruction
from agent.runtime import Agent, AgentConfig
from agent.triplog import read_records
from tests.conftest import DRIVE_CSV


def test_silent_receiver_turns_guidance_into_a_stale_fallback(
    manhattan_bundle: Path, tmp_path: Path
) -> None:
    recorded = read_csv_trace(DRIVE_CSV)[300:306]
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    release = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            for f in recorded:  # live fixes stamped with the wall clock, then silence
                live = Fix(time.time(), f.lon, f.lat, f.heading_deg, f.speed_mps, f.accuracy_m)
                conn.sendall("".join(s + "\r\n" for s in format_sentences(live)).encode())
                time.sleep(0.2)
            release.wait(60)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    clock = SystemClock()
    source = NmeaSocketSource("127.0.0.1", port, clock, poll_s=0.2)
    seen: list[Instruction] = []
    agent: Agent

    def on_instruction(ins: Instruction) -> None:
        seen.append(ins)
        if "GPS_STALE" in ins.reason_codes:
            agent.stop()

    agent = Agent(
        AgentConfig(bundle_dir=manhattan_bundle, data_dir=tmp_path, plan_interval_s=1.0),
        source,
        clock,
        on_instruction=on_instruction,
    )
    guard = threading.Timer(60, agent.stop)  # only if the agent never reports the stale fix
    guard.start()
    try:
        agent.run()
    finally:
        guard.cancel()
        release.set()
        srv.close()
        t.join(5)
    assert seen[-1].kind == "fallback" and "GPS_STALE" in seen[-1].reason_codes
    assert seen[-1].message  # the calm message, not the old route
    ticks = [r for r in read_records(tmp_path / "trips") if r["kind"] == "tick"]
    assert ticks[-1]["trigger"] == "no_fix"
    assert ticks[-1]["fix"]["time_s"] < ticks[-1]["time_s"] - 5.0  # judged as it aged
