"""Errors of the release pipeline (a family under :class:`tools.errors.ToolsError`).

Split by what the operator does next:

* :class:`PipelineSpecError` -- the pipeline YAML is wrong: fix the file.
* :class:`StepFailedError` -- a step raised: fix the cause and re-run (completed steps are kept).
* :class:`GateRefusedError` -- a release gate said no: nothing is published, and the message says
  why (the demand model lost, or the planner did not beat hotspot).
* :class:`RunsDatabaseError` -- the runs database is unusable or a run id is unknown.
* :class:`ReproduceError` -- a recorded run could not be reproduced (inputs changed, or different
  bytes came out).
* :class:`IngestError` -- a trip file could not be ingested.
"""

from __future__ import annotations

from tools.errors import ToolsError


class PipelineError(ToolsError):
    """Root of every error of :mod:`tools.pipeline`."""


class PipelineSpecError(PipelineError):
    """The pipeline YAML is malformed (unknown key, bad reference, cycle, bad parameter)."""


class StepFailedError(PipelineError):
    """One or more steps failed; their dependants did not run."""


class GateRefusedError(PipelineError):
    """A release gate refused to publish; the message says which gate and why."""


class RunsDatabaseError(PipelineError):
    """The runs database cannot be opened, or a run id does not exist."""


class ReproduceError(PipelineError):
    """A recorded run could not be reproduced bit for bit."""


class IngestError(PipelineError):
    """A trip file could not be ingested."""
