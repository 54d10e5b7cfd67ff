"""The agent's background sync thread survives whatever a pull throws: it logs, counts, backs
off and carries on pulling and uploading (a real fleet server on loopback, a real agent)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.clock import ManualClock, SystemClock
from agent.gps import Fix, TraceReplay, read_csv_trace
from agent.runtime import Agent, AgentConfig, SyncSettings
from sync import Bundle, BundleStore, FleetRepository, PullConfig, PullResult, Updater
from sync._fixtures import sign_forged_index
from tests.agent.test_bundle_sync import _Serve
from tests.conftest import DRIVE_CSV


def _wait_for(cond: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Hold the drive until ``cond`` (the thread's progress); give up after ``limit_s``."""
    end = time.monotonic() + limit_s
    while not cond() and time.monotonic() < end:
        time.sleep(0.05)


def _drive(
    manhattan_bundle: Path,
    tmp_path: Path,
    hold_until: Callable[[Agent], bool],
    tamper: Callable[[FleetRepository, Agent], None],
) -> Agent:
    a = Bundle(manhattan_bundle)
    root = tmp_path / "fleet"
    repo = FleetRepository(root)
    repo.init(datetime.now(UTC))
    repo.publish(a.path, "manhattan", datetime.now(UTC))
    trusted = root / "root.json"
    trusted.write_bytes(repo.trusted_root_path().read_bytes())
    device = tmp_path / "device"
    serve_ = _Serve(root)
    with serve_ as url:
        token = serve_.storage.add_token("vehicle", "cab-3", time.time())
        up = Updater(BundleStore(device), PullConfig(url, "manhattan"), trusted.read_bytes())
        assert up.pull().bundle_id == a.bundle_id
        up.close()
        agent: Agent

        class HeldReplay(TraceReplay):
            def fixes(self) -> Iterator[Fix | None]:
                for i, f in enumerate(super().fixes()):
                    if i == 20:
                        _wait_for(lambda: hold_until(agent))
                    yield f

        sync = SyncSettings(
            url,
            token=token,
            area="manhattan",
            trusted_root=trusted,
            pull_interval_s=0.05,
            upload_interval_s=0.05,
            retry_max_s=0.2,
        )
        agent = Agent(
            AgentConfig(
                bundle_dir=device, data_dir=tmp_path / "data", vehicle_id="cab-3", sync=sync
            ),
            HeldReplay(read_csv_trace(DRIVE_CSV)[:40], ManualClock(), speed=1.0),
            SystemClock(),  # the sync thread's schedule runs on real time while the drive is held
        )
        tamper(repo, agent)
        summary = agent.run()
        assert summary.outbox_remaining == 0
        assert serve_.storage.count("cab-3") > 0
    assert agent.bundle.bundle_id == a.bundle_id  # the bundle it had, all along
    return agent


def test_signed_index_with_a_slash_in_the_bundle_id_does_not_stop_sync(
    manhattan_bundle: Path, tmp_path: Path
) -> None:
    """The attack of issue 13: a bundle id ``a/b`` raised ValueError and killed the thread."""

    def forge(repo: FleetRepository, agent: Agent) -> None:
        index = copy.deepcopy(repo.published()["manhattan"])
        index["bundle_id"] = index["files"]["manifest.yaml"]["sha256"] = "a/b"
        sign_forged_index(repo, "manhattan", index, datetime.now(UTC))

    uploaded: list[int] = []

    def pulled_twice_and_uploaded(agent: Agent) -> bool:
        st = agent.sync_status()
        # an upload that sent something: one can run before the first records reach the
        # outbox (the sync thread starts right after the first instruction), and while the
        # drive is held no new record comes, so the latest upload alone may show 0 (waiting
        # for it to show more held the drive until the 60 s limit every time)
        uploaded.append(int((st.get("last_upload") or {}).get("sent", 0)))
        return bool(st.get("pull_failures", 0) >= 2 and max(uploaded) > 0)

    agent = _drive(manhattan_bundle, tmp_path, pulled_twice_and_uploaded, forge)
    st = agent.sync_status()
    assert st["pull_failures"] >= 2, st  # it kept trying after the first refusal
    assert "bundle id" in st["pull_error"]
    assert max(uploaded) > 0  # and kept uploading


def test_any_exception_in_a_pull_is_counted_backed_off_and_survived(
    manhattan_bundle: Path, tmp_path: Path
) -> None:
    calls: list[float] = []

    def inject(repo: FleetRepository, agent: Agent) -> None:
        agent._sync_clients()  # made now (the sync thread would make them after the first tick)
        assert agent._updater is not None
        real = agent._updater.pull

        def flaky(verify: bool = False) -> PullResult:
            calls.append(time.monotonic())
            if len(calls) <= 3:
                raise RuntimeError(f"injected failure {len(calls)}")
            return real()

        agent._updater.pull = flaky  # type: ignore[method-assign]  # inject failures

    def recovered(agent: Agent) -> bool:
        return bool(agent.sync_status().get("last_pull"))

    agent = _drive(manhattan_bundle, tmp_path, recovered, inject)
    st: dict[str, Any] = agent.sync_status()
    assert len(calls) >= 4
    assert st["unexpected_errors"] == 3 and st["pull_failures"] == 3
    assert st["last_pull"]["status"] == "up_to_date" and st["pull_error"] == ""
    assert st["pull_consecutive_failures"] == 0
    # the status page reports the count
    assert agent.state.status()["sync"]["unexpected_errors"] == 3
