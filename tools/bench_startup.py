"""Agent start-up to first instruction on Manhattan, and steady RSS while replaying a drive.

Starts ``nagashi agent run`` as a child process (Python start, imports, bundle load, API, first
fix) on the Manhattan bundle and the recorded Midtown drive, and measures:

* ``startup_s``: from spawning the process to the API serving an instruction of a logged tick
  (polled every 10 ms), the driver's wait; ``first_tick_in_process_s``: from the loop's start to
  the first published instruction, as the agent itself measured it;
* ``steady_rss_mb``: the median resident set size over the second half of ``--seconds`` of
  replay at ``--speed`` (planning every 5 s of trace time), and ``peak_rss_mb``.

The agent's sources are byte-compiled first (not timed), as ``pip install`` leaves an
installed package: without it (``PYTHONDONTWRITEBYTECODE``, a fresh checkout) every start
compiles every module again. The peer, measured in the same run: a bare interpreter that
imports numpy and exits (``python_numpy_s``), the floor any Python agent pays.

Goals (issue 20): start-up within 0.5 s, steady RSS under 250 MB (issue 7).
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

from tiles.fileio import real_data_dir

REPO = Path(__file__).resolve().parent.parent
GOAL_STARTUP_S = 0.5
PACKAGES = ("tiles", "models", "safety", "sync", "agent", "tools")
GOAL_RSS_MB = 250.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle-dir", default=None, help="bundle (default: build the demo's)")
    p.add_argument("--shared-data", "--data", default=str(real_data_dir()))
    p.add_argument("--work-dir", default=str(Path.home() / ".cache" / "nagashi" / "demo"))
    p.add_argument("--seconds", type=float, default=20.0, help="wall seconds of replay for RSS")
    p.add_argument("--speed", type=float, default=10.0, help="replay speed while sampling RSS")


def _wait_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"tablet page: (http://127\.0\.0\.1:\d+)/", line)
        if m:
            return m.group(1)
    raise RuntimeError("the agent exited before serving its API")


def _drain(pipe: IO[str] | None, into: list[str] | None) -> None:
    if pipe is None:
        return
    for line in pipe:
        if into is not None:
            into.append(line)


def _bundle(args: argparse.Namespace) -> Path:
    """``--bundle-dir``, else the demo's Manhattan bundle (built on first use)."""
    from tools.field.demo import ensure_manhattan_bundle  # heavy: only when run

    if args.bundle_dir:
        return Path(args.bundle_dir)
    return ensure_manhattan_bundle(Path(args.shared_data).resolve(), Path(args.work_dir))


def _python_numpy_s() -> float:
    """The peer: the fastest of three bare ``python -c 'import numpy'``."""
    peer: list[float] = []
    for _ in range(3):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "import numpy"], cwd=REPO, check=True)
        peer.append(time.monotonic() - t)
    return min(peer)


def _wait_first_instruction(client: httpx.Client, url: str, proc: subprocess.Popen[str]) -> None:
    """Poll the API every 10 ms until it serves the instruction of a logged tick."""
    while True:
        ins = client.get(url + "/v1/instruction").json()
        if ins.get("tick_seq") is not None:
            return
        if proc.poll() is not None:
            raise RuntimeError("the agent exited before its first instruction")
        time.sleep(0.01)


def _sample_rss(proc: subprocess.Popen[str], seconds: float) -> list[tuple[float, float]]:
    """(monotonic s, RSS MB) every 0.5 s for ``seconds`` or until the agent exits."""
    p = psutil.Process(proc.pid)
    samples: list[tuple[float, float]] = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end and proc.poll() is None:
        samples.append((time.monotonic(), p.memory_info().rss / 2**20))
        time.sleep(0.5)
    return samples


@dataclass
class _Run:
    startup_s: float
    samples: list[tuple[float, float]]
    ticks: int
    summary: dict[str, Any]


def _run_agent(cmd: list[str], seconds: float) -> _Run:
    """Spawn the agent, time its first instruction, sample its RSS, SIGTERM it, read its
    JSON summary."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killer = threading.Timer(seconds + 120, proc.kill)
    killer.start()
    try:
        url = _wait_url(proc)
        # drain both pipes in threads, so the child never blocks on a full pipe
        collected: list[str] = []
        readers = [
            threading.Thread(target=_drain, args=(proc.stderr, None), daemon=True),
            threading.Thread(target=_drain, args=(proc.stdout, collected), daemon=True),
        ]
        for r in readers:
            r.start()
        with httpx.Client(timeout=5) as client:
            _wait_first_instruction(client, url, proc)
            startup_s = time.monotonic() - t0
            samples = _sample_rss(proc, seconds)
            ticks = int(client.get(url + "/v1/status").json()["ticks"])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        for r in readers:
            r.join(timeout=10)
        out = "".join(collected)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(out[out.index("{") :]) if "{" in out else {}
    return _Run(startup_s, samples, ticks, summary)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tools.field.demo import DRIVE_FIXTURE  # heavy: only when run

    bundle = _bundle(args)
    for pkg in PACKAGES:  # as installed: bytecode compiled once, not on every start
        compileall.compile_dir(REPO / pkg, quiet=1)
    python_numpy_s = _python_numpy_s()
    with tempfile.TemporaryDirectory(prefix="nagashi-bench-") as tmp:
        cmd = [
            sys.executable, "-m", "tools.cli", "agent", "run", "--bundle-dir", str(bundle),
            "--gps", str(DRIVE_FIXTURE), "--speed", str(args.speed), "--api", "127.0.0.1:0",
            "--data-dir", tmp, "--quiet", "--json",
        ]  # fmt: skip
        r = _run_agent(cmd, args.seconds)
    samples = r.samples
    half = [rss for t, rss in samples if t >= samples[0][0] + args.seconds / 2] or [
        rss for _, rss in samples
    ]
    steady = statistics.median(half)
    peak = max(rss for _, rss in samples)
    return {
        "bundle": bundle.name[:12],
        "startup_s": round(r.startup_s, 3),
        "python_numpy_s": round(python_numpy_s, 3),
        "ratio_startup_to_python_numpy": round(r.startup_s / python_numpy_s, 2),
        "first_tick_in_process_s": r.summary.get("first_instruction_s"),
        "steady_rss_mb": round(steady, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_samples": len(samples),
        "replay_speed": args.speed,
        "ticks_during_sampling": r.ticks,
        "goal_startup_s": GOAL_STARTUP_S,
        "goal_rss_mb": GOAL_RSS_MB,
        "meets_goals": r.startup_s < GOAL_STARTUP_S and steady < GOAL_RSS_MB,
    }
