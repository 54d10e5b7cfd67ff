"""Issue 19, staged rollouts: 50 cabs (real bundle stores, TUF pulls over a real server on
loopback, health reports over the API), the operator's ``nagashi fleet rollout`` commands.

A bundle failing health on a tenth of the cabs (one of them in the first stage) halts at its
first stage: the cab that failed rolled back by itself, the stage's other cabs go back when the
rollout is withdrawn, and no cab outside the stage ever installs it. A good bundle goes
5 % -> 25 % -> 100 % and is then the area's published bundle."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sync import Bundle, BundleStore, LogClient, PullConfig, Updater, pull_reporting_health
from sync.cohorts import rollout_target_path, stage_hash
from sync.errors import HealthCheckError, UpdateRejectedError
from sync.logstore import SqliteLogStorage
from sync.server import create_app
from tests.sync.conftest import Fleet, run_server
from tools.cli import main

CABS = [f"cab-{i:02d}" for i in range(50)]


def _fleet(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["fleet", "rollout", *args]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def _stage_members(root: Path, n: int) -> list[str]:
    """The cabs of the running rollout's stage, from its signed salt and threshold."""
    r = json.loads((root / "rollouts.json").read_text())["monaco/_all"]
    members = sorted(c for c in CABS if stage_hash(r["salt"], c) <= r["threshold"])
    assert len(members) == n
    return members


@pytest.mark.slow  # 50 cabs, about 350 TUF pulls: ~1 minute on the 2-core machine
def test_a_bad_bundle_halts_at_its_first_stage_and_a_good_one_reaches_everyone(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    tokens = {c: storage.add_token("vehicle", c, 0.0) for c in CABS}
    v1, v2, v3 = (fleet.bundles[k].bundle_id for k in ("v1", "v2", "v3"))
    failing: set[str] = set()  # the cabs on which v2's health check fails (chosen below)

    def health(cab: str) -> Callable[[Bundle], None]:
        def check(bundle: Bundle) -> None:
            bundle.verify()
            if bundle.bundle_id == v2 and cab in failing:
                raise RuntimeError("first ticks' safety verdicts failed (simulated)")

        return check

    root_args = ["--root", str(fleet.root)]
    with run_server(create_app(fleet.root, storage=storage)) as url:
        clients = {c: LogClient(url, tokens[c]) for c in CABS}

        def updater(c: str) -> Updater:
            return Updater(
                BundleStore(tmp_path / "cabs" / c),
                PullConfig(url, "monaco", vehicle_id=c),
                fleet.trusted_root,
                health_check=health(c),
            )

        updaters = {CABS[0]: updater(CABS[0])}

        def pull_all() -> dict[str, str]:
            outcome = {}
            for c in CABS:
                try:
                    outcome[c] = pull_reporting_health(updaters[c], clients[c], c).status
                except HealthCheckError:
                    outcome[c] = "rolled_back"
            return outcome

        def current() -> dict[str, str | None]:
            return {c: BundleStore(tmp_path / "cabs" / c).pointer().current for c in CABS}

        # every cab starts on v1: one pulls it, the others get a copy of its store
        first = pull_reporting_health(updaters[CABS[0]], clients[CABS[0]], CABS[0])
        assert first.status == "installed"
        for c in CABS[1:]:
            shutil.copytree(tmp_path / "cabs" / CABS[0], tmp_path / "cabs" / c, symlinks=True)
            updaters[c] = updater(c)
        assert set(pull_all().values()) == {"up_to_date"}
        assert set(current().values()) == {v1}

        # ---- a bad bundle: 5 %, 25 %, 100 %; it fails on a tenth, one of them in stage 1
        start = ["start", *root_args, "--bundle", str(fleet.bundles["v2"].path), "--area",
                 "monaco", "--stages", "5%,25%,100%", "--min-stage-minutes", "0"]  # fmt: skip
        doc = _fleet(capsys, *start)
        assert doc["stage"] == 1 and doc["members"] == math.ceil(50 * 0.05) == 3
        stage1 = _stage_members(fleet.root, 3)
        others = [c for c in CABS if c not in stage1]
        failing.update([stage1[0], *others[:4]])  # 5 of 50
        outcome = pull_all()
        assert outcome[stage1[0]] == "rolled_back"
        assert [outcome[c] for c in stage1[1:]] == ["installed", "installed"]
        assert {outcome[c] for c in others} == {"up_to_date"}  # outside the stage: untouched
        now = current()
        assert [now[c] for c in stage1] == [v1, v2, v2]

        acted = _fleet(capsys, "evaluate", *root_args)["actions"]
        assert [(a["state"], a["failed"]) for a in acted] == [("halted", [stage1[0]])]
        outcome = pull_all()  # the stage's healthy cabs go back to the published bundle
        assert [outcome[c] for c in stage1[1:]] == ["installed", "installed"]
        assert set(current().values()) == {v1}
        for c in others:  # never installed, never tried
            assert not (tmp_path / "cabs" / c / "bundles" / v2).exists()
        status = _fleet(capsys, "status", *root_args)["rollouts"]
        assert [(s["bundle_id"], s["state"], s["stage"]) for s in status] == [(v2, "halted", 1)]

        # ---- a good bundle reaches everyone, stage by stage
        start[start.index("--bundle") + 1] = str(fleet.bundles["v3"].path)
        assert _fleet(capsys, *start)["members"] == 3
        seen = []
        for want in (3, 13, 50):
            pull_all()
            on_v3 = sorted(c for c, b in current().items() if b == v3)
            assert len(on_v3) == want
            assert on_v3 == _stage_members(fleet.root, want)  # exactly the stage's cabs
            acted = _fleet(capsys, "evaluate", *root_args)["actions"]
            seen += [(a["state"], a["stage"]) for a in acted]
        assert seen == [("running", 2), ("running", 3), ("done", 3)]
        assert set(current().values()) == {v3}
        assert fleet.repo.published()["monaco"]["bundle_id"] == v3
        reports = storage.health_reports(v3)
        assert {c: ok for c, (ok, _) in reports.items()} == dict.fromkeys(CABS, True)

        for u in updaters.values():
            u.close()
        for cl in clients.values():
            cl.close()
    storage.close()


def test_a_rollout_document_changed_on_the_way_is_refused(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever controls the network or the file server cannot put a cab in a stage: the
    rollout document is a signed target, a changed byte refuses the pull, nothing changes."""
    storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    for c in CABS[:4]:
        storage.add_token("vehicle", c, 0.0)
    storage.close()
    _fleet(capsys, "start", "--root", str(fleet.root), "--bundle", str(fleet.bundles["v2"].path),
           "--area", "monaco", "--stages", "50%,100%")  # fmt: skip
    path = rollout_target_path("monaco", None)
    dirname, _, base = path.rpartition("/")
    (stored,) = (fleet.root / "repo" / "targets" / dirname).glob(f"*.{base}")
    doc = json.loads(stored.read_bytes())
    doc["threshold"] = 2**64 - 1  # everyone in the stage
    stored.write_text(json.dumps(doc, sort_keys=True, indent=1))
    with run_server(create_app(fleet.root)) as url:
        store = BundleStore(tmp_path / "cab")
        u = Updater(store, PullConfig(url, "monaco", vehicle_id=CABS[0]), fleet.trusted_root)
        with pytest.raises(UpdateRejectedError):
            u.pull()
        u.close()
    assert store.pointer().current is None
