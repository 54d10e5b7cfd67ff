"""The named states of a pipeline run and of its steps, shared by the runner, the display, the
runs database and ``runs reproduce``. They are ``StrEnum`` members, so they are stored and
printed as the plain words they always were (``"ran"``, ``"skipped"`` ...)."""

from __future__ import annotations

from enum import StrEnum


class StepStatus(StrEnum):
    RUNNING = "running"  # only in progress events
    RAN = "ran"  # executed now; outputs committed and cached
    SKIPPED = "skipped"  # current: outputs of an earlier run reused
    FAILED = "failed"
    BLOCKED = "blocked"  # an upstream step failed or was blocked
    NOT_SELECTED = "not_selected"  # left out by --only or an excluded kind
    WOULD_RUN = "would_run"  # dry run: would execute
    UP_TO_DATE = "up_to_date"  # dry run: current

    @property
    def produced_outputs(self) -> bool:
        """Whether the step's outputs exist after the run (executed now or reused)."""
        return self in (StepStatus.RAN, StepStatus.SKIPPED)


#: what a real (not dry) run records per step
RECORDED_STEP_STATUSES = (
    StepStatus.RAN,
    StepStatus.SKIPPED,
    StepStatus.FAILED,
    StepStatus.BLOCKED,
    StepStatus.NOT_SELECTED,
)


class RunStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    REFUSED = "refused"  # a release gate said no
    INTERRUPTED = "interrupted"
    DRY_RUN = "dry_run"
