"""What a pipeline run reports: progress events for the display, each step's outcome, and the
run's report with its status (ok, failed, refused by a release gate, dry run) and bundle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tools.pipeline.status import RunStatus, StepStatus


@dataclass(frozen=True)
class StepEvent:
    """Progress of one step, for the display."""

    step: str
    index: int  # 1-based position in the pipeline
    total: int
    status: StepStatus
    reason: str
    duration_s: float | None = None
    summary: str = ""


@dataclass(frozen=True)
class StepOutcome:
    name: str
    kind: str
    status: StepStatus
    reason: str
    duration_s: float | None
    metrics: dict[str, Any]
    verdict: dict[str, Any] | None
    error: str | None
    error_type: str | None


@dataclass(frozen=True)
class RunReport:
    run_id: int | None  # None for a dry run
    status: RunStatus
    steps: tuple[StepOutcome, ...]
    bundle_id: str | None = None
    manifest_sha256: str | None = None
    error: str | None = None

    def step(self, name: str) -> StepOutcome:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def names(self, status: StepStatus | str) -> list[str]:
        return [s.name for s in self.steps if s.status == status]


def run_status(steps: tuple[StepOutcome, ...], dry_run: bool) -> tuple[RunStatus, str | None]:
    """The status of a run whose steps ended as ``steps``, and its error line: failed when a
    step failed or was blocked, refused when a release gate said no to outputs that exist."""
    failed = [o for o in steps if o.status == StepStatus.FAILED]
    refused = [
        o
        for o in steps
        if o.verdict is not None
        and o.verdict.get("gate") == "release"
        and not o.verdict.get("passed")
        and o.status.produced_outputs
    ]
    if dry_run:
        status = RunStatus.DRY_RUN
    elif failed or any(o.status == StepStatus.BLOCKED for o in steps):
        status = RunStatus.FAILED
    elif refused:
        status = RunStatus.REFUSED
    else:
        status = RunStatus.OK
    error = "; ".join(f"{o.name}: {o.error}" for o in failed) or None
    if status == RunStatus.REFUSED:
        error = "; ".join(str(o.verdict["reason"]) for o in refused if o.verdict)
    return status, error


@dataclass(frozen=True)
class BundleOutcome:
    """The bundle a run built (or reused): from the metrics of its last bundle step."""

    bundle_id: str | None = None
    manifest: dict[str, Any] | None = None
    manifest_sha256: str | None = None


def bundle_outcome(steps: tuple[StepOutcome, ...]) -> BundleOutcome:
    found = BundleOutcome()
    for o in steps:
        if "manifest" in o.metrics and o.status.produced_outputs:
            found = BundleOutcome(
                o.metrics["bundle_id"], o.metrics.get("manifest"), o.metrics.get("manifest_sha256")
            )
    return found
