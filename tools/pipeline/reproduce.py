"""``runs reproduce``: re-run a recorded run from its record and check the same bundle comes out.

The record holds the pipeline file's exact text and where it was (its relative input paths
resolve from there), the hash of every input, and the code version of every step. Reproducing
checks the raw inputs still have their recorded hashes, re-runs every step except ``publish``
(forced, so nothing is taken from the cache; by default in the recorded workdir, since some
outputs record the paths of their inputs -- ``demand.json`` names its trip files -- and a bundle
built elsewhere can differ by those paths alone), and compares the new bundle
with the recorded one: bundles are content-addressed (the id is the hash of a manifest listing
every file's sha256), so the same id means the same bytes; the directory's own tree hash is
compared too. Code that changed since the record is reported (the git commit and the per-step
code versions), not refused: whether it changed the bundle is exactly what the check says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.pipeline.errors import ReproduceError
from tools.pipeline.hashing import git_state, sha256_path
from tools.pipeline.runner import REPO_ROOT, RunOptions, RunReport, StepEvent, run_pipeline
from tools.pipeline.runsdb import RunsDB
from tools.pipeline.spec import load_pipeline
from tools.pipeline.status import RunStatus, StepStatus

log = logging.getLogger(__name__)

#: step kinds a reproduction leaves out: they act on the world rather than build bytes
SIDE_EFFECT_KINDS = ("publish",)


@dataclass(frozen=True)
class ReproduceResult:
    run_id: int  # the run reproduced
    new_run_id: int | None
    bundle_id: str
    new_bundle_id: str | None
    same_bytes: bool
    code_changes: list[str] = field(default_factory=list)
    output_diffs: list[str] = field(default_factory=list)  # steps whose outputs differ

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "new_run_id": self.new_run_id,
            "bundle_id": self.bundle_id,
            "new_bundle_id": self.new_bundle_id,
            "same_bytes": self.same_bytes,
            "code_changes": self.code_changes,
            "output_diffs": self.output_diffs,
        }


def _check_raw_inputs(rec: dict[str, Any]) -> None:
    changed: list[str] = []
    for s in rec["steps"]:
        if not StepStatus(s["status"]).produced_outputs:
            continue
        for name, entries in (s["input_hashes"] or {}).items():
            for where, recorded in entries:
                if where.startswith("@"):
                    continue
                try:
                    now = sha256_path(where)
                except FileNotFoundError:
                    changed.append(f"{s['step']}.{name}: {where} is gone")
                    continue
                if now != recorded:
                    changed.append(f"{s['step']}.{name}: {where} changed")
    if changed:
        raise ReproduceError(
            f"run {rec['id']} cannot be reproduced, its inputs changed: " + "; ".join(changed)
        )


def reproduce_run(
    db_path: str | Path,
    run_id: int,
    workdir: str | Path | None = None,
    *,
    record_in: str | Path | None = None,
    jobs: int = 1,
    progress: Callable[[StepEvent], None] | None = None,
) -> tuple[ReproduceResult, RunReport]:
    with RunsDB(db_path, create=False) as db:
        rec = db.get_run(run_id)
    if not rec["bundle_id"]:
        raise ReproduceError(f"run {run_id} produced no bundle (status {rec['status']})")
    _check_raw_inputs(rec)
    spec = load_pipeline(
        rec["pipeline_path"],
        text=rec["pipeline_text"],
        workdir=workdir or rec["workdir"],
        runs_db=record_in or db_path,
    )
    if spec.runs_db.resolve() != Path(db_path).resolve():
        log.info("recording the reproduction in %s", spec.runs_db)
    # the steps the recorded run had in effect (ran, or current and skipped), side effects aside
    had = {s["step"] for s in rec["steps"] if StepStatus(s["status"]).produced_outputs}
    only = tuple(s.name for s in spec.steps if s.name in had)
    report = run_pipeline(
        spec,
        RunOptions(
            only=only,
            force=True,
            jobs=jobs,
            exclude_kinds=SIDE_EFFECT_KINDS,
            reproduce_of=run_id,
        ),
        progress=progress,
    )
    code_changes: list[str] = []
    git = git_state(REPO_ROOT)
    if git.commit != rec["git_commit"]:
        code_changes.append(f"git commit {rec['git_commit']} -> {git.commit}")
    recorded_steps = {s["step"]: s for s in rec["steps"]}
    with RunsDB(spec.runs_db) as db2:
        new = db2.get_run(report.run_id) if report.run_id is not None else None
    output_diffs: list[str] = []
    if new is not None:
        for s in new["steps"]:
            old = recorded_steps.get(s["step"])
            if old is None or s["status"] != StepStatus.RAN:
                continue
            if old["code_version"] and s["code_version"] != old["code_version"]:
                code_changes.append(f"step {s['step']}: code version changed")
            if old["output_hashes"] and s["output_hashes"] != old["output_hashes"]:
                output_diffs.append(s["step"])
    same = report.bundle_id == rec["bundle_id"]
    if same and report.bundle_id is not None:
        bundle_dirs = [
            Path(p) / report.bundle_id
            for s in spec.steps
            if s.kind.name == "build_bundle"
            for p in [s.outputs["bundles"]]
        ]
        for d in bundle_dirs:
            if not d.is_dir():
                same = False
    result = ReproduceResult(
        run_id=run_id,
        new_run_id=report.run_id,
        bundle_id=rec["bundle_id"],
        new_bundle_id=report.bundle_id,
        same_bytes=same and report.status == RunStatus.OK,
        code_changes=code_changes,
        output_diffs=output_diffs,
    )
    return result, report
