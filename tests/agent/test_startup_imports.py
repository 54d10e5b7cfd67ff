"""Start-up (issue 20): the modules loaded by the time the agent's first tick is published are
only those the first tick needs. ``nagashi agent run`` runs for real in a subprocess (the CLI's
parser, the bundle load, the agent, its first tick on the recorded Midtown drive), and
``sys.modules`` is read when the first instruction is published."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import DRIVE_CSV

#: loaded by nothing the first tick does: bundle sync and the live layer (the TUF client, its
#: signers, the HTTP client), building tiles and routing (scipy, sqlite-utils, pyosmium),
#: training and the ONNX model (the demo bundle ships statistics only), the numba kernel,
#: the web stack (the API's own thread imports it), GPX and NMEA decoding for a CSV trace,
#: numpy's masked arrays (np.quantile and np.unique import them: the demand check's floors
#: do without), importlib.metadata (the code version reads pyproject.toml in a source tree)
HEAVY = (
    "tuf", "securesystemslib", "boto3", "botocore", "cryptography", "httpx", "scipy",
    "sqlite_utils", "osmium", "onnxruntime", "onnx", "sklearn", "pandas", "matplotlib", "numba",
    "llvmlite", "dask", "starlette", "uvicorn", "xml.etree.ElementTree", "agent.gps.nmea",
    "agent.live", "sync.client", "sync.live", "numpy.ma", "importlib.metadata",
)  # fmt: skip

CHILD = """
import json, sys
import agent.runtime as rt
first = []
tick = rt.Agent._tick
def spy(self, inputs, track):
    tick(self, inputs, track)
    if not first:
        first.append(sorted(sys.modules))
rt.Agent._tick = spy
from tools.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": first[0] if first else None}))
"""


def _modules_at_first_tick(bundle: Path, tmp_path: Path) -> list[str]:
    drive = tmp_path / "drive.csv"
    drive.write_text("".join(DRIVE_CSV.read_text().splitlines(keepends=True)[:8]))
    argv = [
        "agent", "run", "--bundle-dir", str(bundle), "--gps", str(drive), "--speed", "0",
        "--no-api", "--quiet", "--data-dir", str(tmp_path / "data"),
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=True
    )
    doc = json.loads(out.stdout.splitlines()[-1])
    assert doc["rc"] == 0 and doc["modules"] is not None, out.stderr
    modules: list[str] = doc["modules"]
    return modules


def test_the_first_tick_loads_no_heavy_module(manhattan_bundle: Path, tmp_path: Path) -> None:
    modules = _modules_at_first_tick(manhattan_bundle, tmp_path)
    assert "agent.decide" in modules and "numpy" in modules  # it did tick
    loaded = sorted(m for m in HEAVY if m in modules)
    assert loaded == [], loaded


def test_the_sync_thread_starts_after_the_first_instruction(
    manhattan_bundle: Path, tmp_path: Path
) -> None:
    """The first tick does not share the interpreter with the sync thread: it starts once the
    first instruction is published (here it then fails to upload to a closed port, counted)."""
    import threading

    from agent.clock import ManualClock, SystemClock
    from agent.gps import TraceReplay, read_csv_trace
    from agent.instruction import Instruction
    from agent.runtime import Agent, AgentConfig, SyncSettings

    sync = SyncSettings(
        "http://127.0.0.1:9", token="t", live=False, upload_interval_s=0.05,
        shutdown_flush_attempts=1,
    )  # fmt: skip
    threads_at_first: list[list[str]] = []

    def on_instruction(ins: Instruction) -> None:
        if not threads_at_first:
            threads_at_first.append([t.name for t in threading.enumerate()])

    agent = Agent(
        AgentConfig(bundle_dir=manhattan_bundle, data_dir=tmp_path, sync=sync),
        TraceReplay(read_csv_trace(DRIVE_CSV)[:30], ManualClock(), speed=1.0),
        SystemClock(),
        on_instruction=on_instruction,
    )
    agent.run()
    assert threads_at_first and "agent-sync" not in threads_at_first[0]
    assert agent._sync_thread is not None  # and it did start after it
