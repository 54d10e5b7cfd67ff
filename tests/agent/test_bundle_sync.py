"""Background bundle sync: the agent pulls a newly published bundle and switches to it."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
import yaml

from agent.clock import ManualClock
from agent.gps import Fix, TraceReplay, read_csv_trace
from agent.runtime import Agent, AgentConfig, SyncSettings
from agent.triplog import read_records
from sync import (
    Bundle,
    BundleInputs,
    BundleStore,
    FleetRepository,
    PullConfig,
    Updater,
    build_bundle,
)
from sync.logstore import SqliteLogStorage
from sync.manifest import compose_docs
from sync.server import create_app
from tests.conftest import DRIVE_CSV
from tools.field.replay import replay_log


def _bundle_b(a: Bundle, work: Path) -> Bundle:
    """Bundle A's data with new planner parameters (a shorter horizon), version bumped."""
    src = work / "inputs-b"
    (src / "demand").mkdir(parents=True)
    shutil.copyfile(a.tiles_path, src / "tiles.sqlite")
    for name in ("demand.npz", "demand.json"):
        shutil.copyfile(a.demand_dir / name, src / "demand" / name)
    shutil.copyfile(a.area_path, src / "area.geojson")
    params = yaml.safe_load(a.params_path.read_text())
    params["version"] = "planner-test-2"
    params.setdefault("planner", {})["horizon_s"] = 1800.0
    (src / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=True))
    manifest = dict(a.manifest)
    manifest["planner_parameters"] = {"version": "planner-test-2"}
    inputs = BundleInputs(
        src / "tiles.sqlite", src / "demand", src / "params.yaml", src / "area.geojson"
    )
    return build_bundle(compose_docs(manifest, []), inputs, work / "built")


class _Serve:
    def __init__(self, root: Path) -> None:
        self.storage = SqliteLogStorage(root / "fleet.sqlite")
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(root, storage=self.storage),
                host="127.0.0.1",
                port=0,
                log_level="warning",
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            self.thread.join(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.storage.close()


def test_agent_pulls_and_switches_bundles(manhattan_bundle: Path, tmp_path: Path) -> None:
    a = Bundle(manhattan_bundle)
    b = _bundle_b(a, tmp_path)
    root = tmp_path / "fleet"
    repo = FleetRepository(root)
    now = datetime.now(UTC)
    repo.init(now)
    repo.publish(a.path, "manhattan", now)
    trusted = root / "root.json"
    trusted.write_bytes(repo.trusted_root_path().read_bytes())
    device = tmp_path / "device"
    serve_ = _Serve(root)
    with serve_ as url:
        token = serve_.storage.add_token("vehicle", "cab-9", time.time())
        # provisioning: the cab gets bundle A the way it gets every bundle
        up = Updater(BundleStore(device), PullConfig(url, "manhattan"), trusted.read_bytes())
        assert up.pull().bundle_id == a.bundle_id
        up.close()
        repo.publish(b.path, "manhattan", datetime.now(UTC))  # the fleet ships B

        clock = ManualClock()
        agent: Agent

        class GatedReplay(TraceReplay):
            """Hold the drive after 30 fixes until the background pull has installed B."""

            def fixes(self) -> Iterator[Fix | None]:
                for i, f in enumerate(super().fixes()):
                    if i == 30:
                        for _ in range(600):
                            if agent.sync_status().get("last_pull", {}).get("status"):
                                break
                            time.sleep(0.1)
                    yield f

        source = GatedReplay(read_csv_trace(DRIVE_CSV)[:80], clock, speed=1.0)
        sync = SyncSettings(
            url, token=token, area="manhattan", trusted_root=trusted, pull_interval_s=3600
        )
        agent = Agent(
            AgentConfig(
                bundle_dir=device, data_dir=tmp_path / "data", vehicle_id="cab-9", sync=sync
            ),
            source,
            clock,
        )
        assert agent.bundle.bundle_id == a.bundle_id
        first = agent.bundle
        summary = agent.run()
        # the replaced bundle's tile database was closed (no connection leaks per switch);
        # the current one stays open for the API
        with pytest.raises(sqlite3.ProgrammingError):
            first.store.way_tags(1)
        assert isinstance(agent.bundle.store.way_tags(1), dict)
        assert summary.outbox_remaining == 0 and summary.flush_error == ""
        assert serve_.storage.count("cab-9") == len(list(read_records(tmp_path / "data" / "trips")))
    status = agent.sync_status()
    assert status["last_pull"] == {"status": "installed", "bundle": b.bundle_id}
    recs = list(read_records(tmp_path / "data" / "trips"))
    switch = [r for r in recs if r["kind"] == "bundle"]
    assert len(switch) == 1 and switch[0]["old"] == a.bundle_id and switch[0]["new"] == b.bundle_id
    ticks = [r for r in recs if r["kind"] == "tick"]
    ids = [t["bundle"]["id"] for t in ticks]
    k = ids.index(b.bundle_id)
    assert k > 0 and set(ids[:k]) == {a.bundle_id} and set(ids[k:]) == {b.bundle_id}
    assert ticks[k]["params"]["planner"]["horizon_s"] == 1800.0
    assert BundleStore(device).current_id() == b.bundle_id
    # the device store keeps A as the previous good bundle (the fallback of a damaged B):
    # replay on the device takes each tick's own bundle
    assert BundleStore(device).pointer().previous == a.bundle_id
    on_device = list(replay_log(tmp_path / "data" / "trips", device))
    assert not any(r.bundle_differs for r in on_device)
    assert all(r.identical for r in on_device)
    # given both bundles, replay takes each tick's own: all byte-identical
    both = tmp_path / "both"
    both.mkdir()
    for bundle in (a, b):
        (both / bundle.bundle_id).symlink_to(bundle.path)
    results = list(replay_log(tmp_path / "data" / "trips", both))
    assert len(results) == len(ticks) and all(r.identical for r in results)
    assert {r.bundle_used for r in results} == {a.bundle_id, b.bundle_id}
