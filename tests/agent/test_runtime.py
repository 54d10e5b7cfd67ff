"""The runtime loop on the recorded Midtown drive, and replay of every decision bit for bit."""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.bundle import load_bundle
from agent.decide import TickInputs, decide
from agent.gps import Fix, read_csv_trace
from agent.runtime import distance_to_line_m
from agent.triplog import read_records
from tests.agent.cflags import setup_py_same_bits
from tests.components import ARM64_ROOT, require
from tests.conftest import DRIVE_CSV, REPO
from tools.field.replay import replay_log, replay_tick


def test_the_loop_plans_logs_and_publishes(drive_run: dict[str, Any]) -> None:
    recs = drive_run["records"]
    summary = drive_run["summary"]
    kinds = Counter(r["kind"] for r in recs)
    assert kinds["start"] == 1 and kinds["stop"] == 1
    assert recs[0]["kind"] == "start" and recs[-1]["kind"] == "stop"
    ticks = [r for r in recs if r["kind"] == "tick"]
    assert len(ticks) == summary.ticks == kinds["tick"]
    assert summary.fixes == len(read_csv_trace(DRIVE_CSV))
    # at most every plan interval, plus re-plans on leaving the route (never within 1 s)
    assert ticks[0]["trigger"] == "first"
    times = [t["time_s"] for t in ticks]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1.0
    for t, gap in zip(ticks[1:], gaps, strict=True):
        assert (t["trigger"] == "interval") == (gap >= 5.0)
    assert 1493 / 5 - 5 <= len(ticks) <= 1493 / 1
    # every tick has what replay and the trial reports need
    for t in ticks:
        for key in ("fix", "bundle", "params", "safety", "instruction", "code", "track"):
            assert key in t, key
        assert t["bundle"]["id"] == drive_run["state"].bundle["id"]
        assert t["safety"]["ok"] == (t["instruction"]["kind"] == "route")
    # demand is logged once per distinct content per file, always with its hash
    assert all(t["demand_sha256"] for t in ticks)
    assert sum(t["demand"] is not None for t in ticks) >= 1
    # the 1 Hz track travels with the ticks
    tail = len(recs[-1]["track"])
    assert sum(len(t["track"]) for t in ticks) + tail == summary.fixes
    # guidance most of the time on this drive, and fallbacks with reasons otherwise
    by_kind = Counter(t["instruction"]["kind"] for t in ticks)
    assert by_kind["route"] > 0.8 * len(ticks)
    for t in ticks:
        if t["instruction"]["kind"] == "fallback":
            assert t["instruction"]["reason_codes"] and t["instruction"]["message"]
    # the page's instruction is the last tick's, the cab moved on with the last fix
    last, _, _, n_ticks = drive_run["state"].snapshot()
    assert last.tick_seq == ticks[-1]["seq"] and n_ticks == len(ticks)
    assert drive_run["shown"][-1].tick_seq == ticks[-1]["seq"]
    # no server configured: every record waits in the outbox
    assert summary.outbox_remaining == len(recs)
    assert kinds["meter"] == 2


def test_whole_drive_replays_bit_for_bit(drive_run: dict[str, Any], manhattan_bundle: Path) -> None:
    results = list(replay_log(drive_run["data"] / "trips", manhattan_bundle))
    assert len(results) == drive_run["summary"].ticks
    bad = [r.to_json() for r in results if not r.identical]
    assert bad == []
    assert all(not r.bundle_differs and not r.code_differs for r in results)
    assert any(r.demand_verified for r in results)


def _other_loops_env() -> dict[str, str]:
    """The environment of a process whose numpy runs none of the SIMD loops this one may pick
    beyond its baseline (another CPU's ``exp``, ``arctan2`` and sums), and whose OpenBLAS
    runs another core's kernels where this CPU has them."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    have = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    if not have:
        pytest.skip("numpy dispatches no SIMD loop beyond its baseline on this CPU")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(have)}
    if __cpu_features__.get("AVX2") and __cpu_features__.get("FMA3"):
        env["OPENBLAS_CORETYPE"] = "Haswell"  # its AVX2 kernels, not this CPU's own
    return env


def test_a_drive_replays_bit_for_bit_on_other_simd_loops(
    drive_run: dict[str, Any], manhattan_bundle: Path
) -> None:
    """A field engineer replays a cab's log on another machine: the logged figures whose last
    bits follow the CPU's SIMD (the match's confidence and heading, the expected revenue) are
    kept at fixed decimals, so every tick still replays byte-identical (before, 38 of 270 ticks
    of this drive differed)."""
    logs = str(drive_run["data"] / "trips")
    code = (
        "import sys; from tools.cli import main; "
        "sys.exit(main(['replay', '--json', '--log', sys.argv[1], '--bundle-dir', sys.argv[2]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, logs, str(manhattan_bundle)],
        capture_output=True,
        text=True,
        env=_other_loops_env(),
        cwd=REPO,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == drive_run["summary"].ticks
    bad = [(r["seq"], r["details"][:2]) for r in rows if not r["identical"]]
    assert bad == [] and done.returncode == 0, done.stderr[-2000:]


def _aarch64_planner_libs(out: Path) -> Path:
    """The planner's C pass and walk (``_vi.c``, ``_walk.c``) built by the aarch64 cross
    compiler with setup.py's flags into ``out``, under the names an aarch64 pip install gives
    them (without the Python module stub the installed ones carry, which nagashi never calls:
    it loads them with ctypes)."""
    cross = require("aarch64-gcc")
    require("aarch64-libc")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("_vi", "_walk"):
        cmd = [cross, "-shared", "-fPIC", *setup_py_same_bits(), "-DNAGASHI_NO_PYTHON",
               str(REPO / f"agent/planner/{name}.c"), "-o",
               str(out / f"{name}.cpython-311-aarch64-linux-gnu.so"), "-lm"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    return out


#: the replay on the aarch64 CPython: the first line says which planner parts ran
_AARCH64_REPLAY = """
import json, platform, sys
import agent.planner
if sys.argv[3]:
    agent.planner.__path__.insert(0, sys.argv[3])  # the cross-built C libraries
from agent.planner import kernel_c, walk_c
from tools.cli import main
print(json.dumps({"machine": platform.machine(), "pass": kernel_c.ready() and "c" or "numpy",
                  "walk": walk_c.which(), "status": [kernel_c.status(), walk_c.status()]}))
sys.stdout.flush()
sys.exit(main(["replay", "--json", "--log", sys.argv[1], "--bundle-dir", sys.argv[2]]))
"""


@pytest.mark.parametrize("parts", ["c", "numpy"])
def test_an_x86_drive_replays_bit_for_bit_on_aarch64(
    drive_run: dict[str, Any], manhattan_bundle: Path, tmp_path: Path, parts: str
) -> None:
    """The log of a drive recorded here (x86_64: the C pass and walk, numpy's x86 loops)
    replayed by an aarch64 CPython under qemu (numpy's aarch64 loops, ASIMD and SVE, and its
    aarch64 OpenBLAS): every tick byte-identical, with the planner's C pass and walk built for
    aarch64 (loaded and checked against numpy's ``cblas_dgemv`` and ``expm1`` there) and with
    the numpy pass and Python walk (``NAGASHI_KERNEL_C=0``). Before the log kept its
    CPU-dependent figures at fixed decimals, 20 of 270 ticks differed in the verdict's position
    on the link."""
    qemu = require("qemu-aarch64")
    python = require("aarch64-python")
    libs = str(_aarch64_planner_libs(tmp_path / "libs")) if parts == "c" else ""
    env = {**os.environ, "PYTHONPATH": f"{ARM64_ROOT}/site{os.pathsep}{REPO}"}
    env["PYTHONNOUSERSITE"] = "1"
    env.pop("NAGASHI_KERNEL_C", None)
    if parts == "numpy":
        env["NAGASHI_KERNEL_C"] = "0"
    logs = str(drive_run["data"] / "trips")
    cmd = [qemu, "-L", ARM64_ROOT, python, "-c", _AARCH64_REPLAY, logs, str(manhattan_bundle)]
    done = subprocess.run(
        [*cmd, libs],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert lines, done.stderr[-2000:]
    ran, rows = lines[0], lines[1:]
    assert ran["machine"] == "aarch64"
    assert (ran["pass"], ran["walk"]) == ((parts, "c") if parts == "c" else ("numpy", "python"))
    assert len(rows) == drive_run["summary"].ticks, done.stderr[-2000:]
    bad = [(r["seq"], r["details"][:2]) for r in rows if not r["identical"]]
    assert bad == [] and done.returncode == 0, done.stderr[-2000:]


def test_replay_says_what_differs(drive_run: dict[str, Any], manhattan_bundle: Path) -> None:
    lb = load_bundle(manhattan_bundle)
    tick = next(
        r
        for r in drive_run["records"]
        if r["kind"] == "tick" and r["instruction"]["kind"] == "route"
    )
    assert replay_tick(tick, lb).identical
    # a different decision in the log (as if another planner had made it)
    forged = copy.deepcopy(tick)
    plan = json.loads(forged["plan"])
    plan["expected_revenue"] += 1.0
    forged["plan"] = json.dumps(plan, sort_keys=True, separators=(",", ":")).encode()
    r = replay_tick(forged, lb)
    assert not r.identical and r.differing == ["plan"]
    assert any(d.startswith("plan.expected_revenue") for d in r.details)
    # logged with other code and another bundle: both named
    other = copy.deepcopy(tick)
    other["code"] = {"package": "0.0.9", "sha256": "0" * 64}
    other["bundle"]["id"] = "f" * 64
    r = replay_tick(other, lb)
    assert r.code_differs and r.bundle_differs
    # an input that no longer matches: the fix moved 200 m
    moved = copy.deepcopy(tick)
    moved["fix"]["lat"] += 0.0018
    r = replay_tick(moved, lb)
    assert not r.identical and "match" in r.differing


def test_decide_is_deterministic_and_never_raises_on_bad_fixes(manhattan_bundle: Path) -> None:
    lb = load_bundle(manhattan_bundle)
    f = read_csv_trace(DRIVE_CSV)[300]
    a = decide(lb, TickInputs(f.time_s, f, None, "en", "interval")).to_record(lb)
    b = decide(lb, TickInputs(f.time_s, f, None, "en", "interval")).to_record(lb)
    assert a == b
    for bad in (
        None,
        Fix(f.time_s, float("nan"), f.lat),
        Fix(f.time_s, 139.70, 35.66, 10.0, 5.0, 5.0),  # Tokyo: outside the bundle
        Fix(f.time_s - 3600, f.lon, f.lat, 10.0, 5.0, 5.0),  # an hour old
    ):
        r = decide(lb, TickInputs(f.time_s, bad, None, "ja", "interval"))
        assert r.instruction.kind == "fallback" and r.verdict.reasons
        assert r.instruction.message  # a calm message, in Japanese here
        assert r.to_record(lb)["safety"]["ok"] is False


def test_distance_to_line() -> None:
    line = ((-73.98, 40.75), (-73.97, 40.75))
    assert distance_to_line_m(-73.975, 40.75, line) == pytest.approx(0.0, abs=0.01)
    assert distance_to_line_m(-73.975, 40.7509, line) == pytest.approx(100.0, rel=0.01)
    assert distance_to_line_m(-73.975, 40.75, ()) == float("inf")


def test_leaving_the_route_replans_early(manhattan_bundle: Path, tmp_path: Path) -> None:
    """With a long plan interval, re-plans come from leaving the recommended route."""
    from agent.clock import ManualClock
    from agent.gps import TraceReplay
    from agent.runtime import Agent, AgentConfig

    clock = ManualClock()
    source = TraceReplay(read_csv_trace(DRIVE_CSV)[:600], clock, speed=1.0)
    config = AgentConfig(bundle_dir=manhattan_bundle, data_dir=tmp_path, plan_interval_s=60.0)
    Agent(config, source, clock).run()
    ticks = [r for r in read_records(tmp_path / "trips") if r["kind"] == "tick"]
    triggers = Counter(t["trigger"] for t in ticks)
    assert triggers["off_route"] >= 1
    for prev, t in itertools.pairwise(ticks):
        line = tuple(map(tuple, prev["instruction"]["geometry"]["coordinates"]))
        if t["trigger"] == "off_route":
            assert prev["instruction"]["kind"] == "route"
            assert distance_to_line_m(t["fix"]["lon"], t["fix"]["lat"], line) > 40.0
            assert t["time_s"] - prev["time_s"] >= 1.0


def test_cli_replay_and_errors(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agent.triplog import pack
    from tools.cli import main

    tick = next(r for r in drive_run["records"] if r["kind"] == "tick" and r["seq"] > 40)
    logs = str(drive_run["data"] / "trips")
    args = ["replay", "--log", logs, "--bundle-dir", str(manhattan_bundle)]
    assert main([*args, "--tick", str(tick["seq"])]) == 0
    assert f"tick #{tick['seq']}: byte-identical" in capsys.readouterr().out
    # a log whose decision was made differently: exit 1, and what differs
    forged = dict(tick)
    forged["safety"] = {**tick["safety"], "message": "Turn around"}
    bad = tmp_path / "forged.msgpack"
    bad.write_bytes(pack(forged))
    assert main(["replay", "--log", str(bad), "--bundle-dir", str(manhattan_bundle)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS in safety" in out and "safety.message" in out
    assert main([*args, "--tick", "999999"]) == 2
    assert "no tick with seq 999999" in capsys.readouterr().err
    assert main(["agent", "run", "--bundle-dir", str(tmp_path / "nope"), "--no-api"]) == 2
    assert "neither a bundle" in capsys.readouterr().err


def test_a_tampered_bundle_does_not_run(manhattan_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from agent.errors import BundleLoadError

    copy_dir = tmp_path / manhattan_bundle.name
    shutil.copytree(manhattan_bundle, copy_dir)
    params = copy_dir / "params.yaml"
    params.write_text(params.read_text() + "# edited on the device\n")
    load_bundle(copy_dir)  # opening alone does not hash every file...
    with pytest.raises(BundleLoadError, match=r"hash mismatch|bytes"):
        load_bundle(copy_dir, verify=True)  # ...the agent's start does
