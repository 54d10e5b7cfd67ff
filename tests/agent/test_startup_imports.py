"""Start-up (issue 20): the modules loaded by the time the agent's first tick is published are
only those the first tick needs. ``nagashi agent run`` runs for real in a subprocess (the CLI's
parser, the bundle load, the agent, its first tick on the recorded Midtown drive), and
``sys.modules`` is read when the first instruction is published."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.triplog import read_records
from sync import BundleStore
from sync.live import SnapshotArchive, SnapshotClient, TrustSource
from tests.agent.test_live import AREA, Fleet, _rebuild, _serve
from tests.agent.test_live import fleet as fleet  # the fixture, shared
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
    # imported where first used since issue 20's import-time pass: the opening_hours library
    # (this first tick reads no dated no-entry window), composing manifests (the build side's),
    # the bundle store (a bundle directory here), the supply prior (the demo bundle ships none),
    # the route hysteresis (no route was shown before the first tick)
    "opening_hours", "sync.manifest", "sync.store", "models.supply", "agent.planner.stability",
)  # fmt: skip

#: with ``--sync-server``: the live layer is made (its restored snapshot is on the first tick)
#: and the bundle store opened (bundle sync), not the clients of bundle sync, log upload and
#: live requests (tuf, securesystemslib and the boto3 its signers import, httpx), made in the
#: sync and live threads after the first tick
HEAVY_WITH_SYNC = tuple(m for m in HEAVY if m not in ("agent.live", "sync.live", "sync.store"))

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


def _modules_at_first_tick(bundle: Path, tmp_path: Path, *more: str) -> list[str]:
    drive = tmp_path / "drive.csv"
    drive.write_text("".join(DRIVE_CSV.read_text().splitlines(keepends=True)[:8]))
    argv = [
        "agent", "run", "--bundle-dir", str(bundle), "--gps", str(drive), "--speed", "0",
        "--no-api", "--quiet", "--data-dir", str(tmp_path / "data"), *more,
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


def test_with_a_fleet_server_the_first_tick_loads_no_sync_client(
    fleet: Fleet,  # the fixture imported above
    tmp_path: Path,
) -> None:
    """``--sync-server`` after a restart: the snapshot a run before archived is on the first
    tick (read back from the archive, no tuf, no httpx), and the sync clients wait for the
    sync thread, after the first instruction."""
    data = tmp_path / "data"
    token = tmp_path / "token"
    token.write_text(fleet.tokens["cab-3"])
    with _serve(fleet.root) as (url, live):
        _rebuild(live)
        before = SnapshotClient(  # the run before this one: it accepted and archived one
            url,
            AREA,
            fleet.tokens["cab-3"],
            TrustSource(BundleStore(fleet.device).tuf_dir),
            archive=SnapshotArchive(data / "live"),
            network=fleet.network,
        )
        try:
            got = before.fetch()
        finally:
            before.close()
        assert got.status == "accepted", got
        modules = _modules_at_first_tick(
            fleet.device, tmp_path, "--sync-server", url, "--token-file", str(token),
            "--area", AREA, "--trusted-root", str(fleet.trusted), "--vehicle", "cab-3",
        )  # fmt: skip
    assert "agent.live" in modules and "agent.decide" in modules  # the live layer was made
    loaded = sorted(m for m in HEAVY_WITH_SYNC if m in modules)
    assert loaded == [], loaded
    first = next(r for r in read_records(data / "trips") if r["kind"] == "tick")
    assert first["live"]["version"] == got.version and first["live"]["reason"] == ""
