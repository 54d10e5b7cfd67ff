"""The reproducible release pipeline: raw data to a published, gated bundle in one command.

``nagashi pipeline run pipeline.yaml`` runs the steps of a pipeline file in dependency order,
skipping those whose inputs, parameters and code are unchanged; every run is recorded in a
SQLite runs database (``nagashi runs ...``). See docs/pipeline.md.
"""

from tools.pipeline.errors import (
    GateRefusedError,
    IngestError,
    PipelineError,
    PipelineSpecError,
    ReproduceError,
    RunsDatabaseError,
    StepFailedError,
)
from tools.pipeline.ingest import IngestReport, TripStore, export_trips_csv, trip_key
from tools.pipeline.outcome import RunReport, StepEvent, StepOutcome
from tools.pipeline.runner import RunOptions, run_pipeline
from tools.pipeline.runsdb import RunsDB
from tools.pipeline.spec import PipelineSpec, StepSpec, load_pipeline
from tools.pipeline.status import RunStatus, StepStatus
from tools.pipeline.step import StepContext, StepKind, StepResult, Verdict

__all__ = [
    "GateRefusedError",
    "IngestError",
    "IngestReport",
    "PipelineError",
    "PipelineSpec",
    "PipelineSpecError",
    "ReproduceError",
    "RunOptions",
    "RunReport",
    "RunStatus",
    "RunsDB",
    "RunsDatabaseError",
    "StepContext",
    "StepEvent",
    "StepFailedError",
    "StepKind",
    "StepOutcome",
    "StepResult",
    "StepSpec",
    "StepStatus",
    "TripStore",
    "Verdict",
    "export_trips_csv",
    "load_pipeline",
    "run_pipeline",
    "trip_key",
]
