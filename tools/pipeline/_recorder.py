"""Recording a run: each step's outcome in memory (for the report and the display) and in the
runs database (``run_steps``), the run's own row, and its final status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.pipeline._evaluate import Eval
from tools.pipeline.hashing import git_state, sha256_json
from tools.pipeline.outcome import RunReport, StepEvent, StepOutcome, bundle_outcome, run_status
from tools.pipeline.runsdb import RunsDB
from tools.pipeline.spec import PipelineSpec, StepSpec
from tools.pipeline.status import RunStatus, StepStatus
from tools.pipeline.step import params_to_json


@dataclass(frozen=True)
class Recorded:
    """What a step left besides its status and reason (all optional)."""

    metrics: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    output_hashes: dict[str, str] | None = None
    produced_by: int | None = None
    duration_s: float | None = None
    error: str | None = None
    error_type: str | None = None


class Recorder:
    """The record of one run of ``spec``: in memory always, in ``db`` once the run is started."""

    def __init__(
        self,
        spec: PipelineSpec,
        db: RunsDB | None,
        progress: Callable[[StepEvent], None] | None,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.spec = spec
        self.db = db
        self.progress = progress
        self.clock = clock
        self.status: dict[str, StepStatus] = {}
        self.outcomes: dict[str, StepOutcome] = {}
        self.index = {s.name: i + 1 for i, s in enumerate(spec.steps)}
        self.run_id: int | None = None

    def start(self, options: dict[str, Any], repo_root: Path) -> None:
        """Open the run's row in the runs database (a real run, not a dry one)."""
        assert self.db is not None
        spec = self.spec
        git = git_state(repo_root)
        self.run_id = self.db.start_run(
            pipeline=spec.name,
            pipeline_path=str(spec.path),
            pipeline_sha256=sha256_json(spec.text),
            pipeline_text=spec.text,
            workdir=str(spec.workdir),
            started_at=self.clock().isoformat(),
            git_commit=git.commit,
            git_dirty=git.dirty,
            options=options,
        )

    def emit(self, step: str, status: StepStatus, reason: str, **kw: Any) -> None:
        if self.progress:
            self.progress(
                StepEvent(step, self.index[step], len(self.spec.steps), status, reason, **kw)
            )

    def settle(self, s: StepSpec, status: StepStatus, reason: str) -> None:
        """Record a step decided without running it."""
        self.record(s, status, reason, None)
        self.emit(s.name, status, reason)

    def record(
        self,
        s: StepSpec,
        status: StepStatus,
        reason: str,
        ev: Eval | None,
        rec: Recorded = Recorded(),
    ) -> None:
        self.status[s.name] = status
        self.outcomes[s.name] = StepOutcome(
            s.name,
            s.kind.name,
            status,
            reason,
            rec.duration_s,
            rec.metrics or {},
            rec.verdict,
            rec.error,
            rec.error_type,
        )
        if self.db is None or self.run_id is None:
            return
        self.db.record_step(
            self.run_id,
            {
                "step": s.name,
                "position": self.index[s.name],
                "kind": s.kind.name,
                "status": status,
                "reason": reason,
                "cache_key": ev.key if ev else None,
                "params": params_to_json(s.params),
                "input_hashes": ev.input_hashes if ev else {},
                "code_version": ev.code_hash if ev else None,
                "code_sources": ev.code_parts if ev else None,
                "outputs": {k: str(p) for k, p in s.outputs.items()},
                "output_hashes": rec.output_hashes,
                "metrics": rec.metrics,
                "verdict": rec.verdict,
                "produced_by_run": rec.produced_by,
                "duration_s": rec.duration_s,
                "error": rec.error,
            },
        )

    def report(self, dry_run: bool) -> RunReport:
        """The run's report, its status and bundle also written to its row."""
        steps = tuple(self.outcomes[s.name] for s in self.spec.steps if s.name in self.outcomes)
        status, error = run_status(steps, dry_run)
        bundle = bundle_outcome(steps)
        if self.db is not None and self.run_id is not None:
            self.db.finish_run(
                self.run_id,
                finished_at=self.clock().isoformat(),
                status=status,
                manifest=bundle.manifest,
                manifest_sha256=bundle.manifest_sha256,
                bundle_id=bundle.bundle_id,
                error=error,
            )
        return RunReport(
            self.run_id, status, steps, bundle.bundle_id, bundle.manifest_sha256, error
        )

    def interrupted(self, e: BaseException) -> None:
        """The run stopped on ``e`` (Ctrl-C, or the runner itself failed): say so in its row."""
        if self.db is not None and self.run_id is not None:
            self.db.finish_run(
                self.run_id,
                finished_at=self.clock().isoformat(),
                status=RunStatus.INTERRUPTED,
                manifest=None,
                manifest_sha256=None,
                bundle_id=None,
                error=f"{type(e).__name__}: {e}",
            )
