"""``nagashi pipeline run|kinds|ingest``: the release pipeline (see docs/pipeline.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
from typing import TYPE_CHECKING, Any

from tools.errors import ToolsError

if TYPE_CHECKING:
    from tools.pipeline.outcome import RunReport, StepEvent
    from tools.pipeline.status import StepStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pipe = sub.add_parser("pipeline", help="run the release pipeline: raw data to a gated bundle")
    psub = pipe.add_subparsers(dest="pipeline_command", metavar="ACTION")
    psub.required = True

    run = psub.add_parser("run", help="run a pipeline file (skips steps that are up to date)")
    run.add_argument("pipeline", help="pipeline YAML (e.g. pipelines/manhattan.yaml)")
    run.add_argument(
        "--only", action="append", default=[], metavar="STEP", help="run only STEP (repeatable)"
    )
    run.add_argument("--jobs", type=int, default=1, help="independent steps run in parallel")
    run.add_argument("--dry-run", action="store_true", help="print what would run and why")
    run.add_argument("--force", action="store_true", help="run the selected steps even if current")
    run.add_argument("--workdir", help="override the pipeline's workdir")
    run.add_argument("--runs-db", help="override the pipeline's runs database")
    run.add_argument("--json", action="store_true", help="print the run report as JSON")
    run.set_defaults(func=cmd_pipeline_run)

    kinds = psub.add_parser("kinds", help="list the step kinds, their inputs, outputs, params")
    kinds.add_argument("--json", action="store_true")
    kinds.set_defaults(func=cmd_pipeline_kinds)

    ingest = psub.add_parser("ingest", help="add trip files to a trips database (idempotent)")
    ingest.add_argument("--db", required=True, help="trips database (SQLite, created if absent)")
    ingest.add_argument("--label", default="train", help="data set: train, valid or eval")
    ingest.add_argument("files", nargs="+", help="TLC trip CSV files (either format)")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(func=cmd_pipeline_ingest)


@functools.cache
def _marks() -> dict[StepStatus, str]:
    """What the display shows for each step status."""
    from tools.pipeline.status import StepStatus

    return {
        StepStatus.RUNNING: "running",
        StepStatus.RAN: "done",
        StepStatus.SKIPPED: "skipped",
        StepStatus.FAILED: "FAILED",
        StepStatus.BLOCKED: "blocked",
        StepStatus.WOULD_RUN: "would run",
        StepStatus.UP_TO_DATE: "up to date",
        StepStatus.NOT_SELECTED: "-",
    }


def _progress(ev: StepEvent) -> None:
    took = f" {ev.duration_s:.1f} s" if ev.duration_s is not None else ""
    tail = ev.summary or ev.reason
    mark = _marks().get(ev.status, ev.status)
    print(
        f"[{ev.index}/{ev.total}] {ev.step:<14} {mark:<10}{took}  {tail}",
        file=sys.stderr,
        flush=True,
    )


def _dry_line(ev: StepEvent) -> None:
    from tools.pipeline.status import StepStatus

    shown = (
        StepStatus.WOULD_RUN,
        StepStatus.UP_TO_DATE,
        StepStatus.BLOCKED,
        StepStatus.FAILED,
        StepStatus.NOT_SELECTED,
    )
    if ev.status in shown:
        print(f"{ev.step:<14} {_marks()[ev.status]:<11} {ev.reason}")


def report_json(report: RunReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "status": report.status,
        "bundle_id": report.bundle_id,
        "manifest_sha256": report.manifest_sha256,
        "error": report.error,
        "steps": [
            {
                "step": s.name,
                "kind": s.kind,
                "status": s.status,
                "reason": s.reason,
                "duration_s": s.duration_s,
                "verdict": s.verdict,
                "error": s.error,
            }
            for s in report.steps
        ],
    }


def raise_for_status(report: RunReport) -> None:
    """Turn a run that did not succeed into one clear line (and a non-zero exit)."""
    from tools.pipeline.errors import GateRefusedError, StepFailedError
    from tools.pipeline.status import RunStatus, StepStatus

    where = f" (run {report.run_id})" if report.run_id is not None else ""
    if report.status == RunStatus.REFUSED:
        raise GateRefusedError(f"{report.error}{where}")
    if report.status == RunStatus.FAILED:
        blocked = report.names(StepStatus.BLOCKED)
        tail = f"; not run: {', '.join(blocked)}" if blocked else ""
        raise StepFailedError(f"{report.error}{tail}{where}")


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from tools.pipeline import RunOptions, load_pipeline, run_pipeline
    from tools.pipeline.status import StepStatus

    spec = load_pipeline(args.pipeline, workdir=args.workdir, runs_db=args.runs_db)
    opts = RunOptions(only=tuple(args.only), force=args.force, jobs=args.jobs, dry_run=args.dry_run)
    if args.dry_run:
        report = run_pipeline(spec, opts, progress=None if args.json else _dry_line)
    else:
        report = run_pipeline(spec, opts, progress=None if args.json else _progress)
    if args.json:
        print(json.dumps(report_json(report), indent=2, sort_keys=True, ensure_ascii=False))
    elif not args.dry_run:
        ran = len(report.names(StepStatus.RAN))
        skipped = len(report.names(StepStatus.SKIPPED))
        print(
            f"run {report.run_id}: {report.status}; {ran} ran, {skipped} skipped"
            + (f"; bundle {report.bundle_id}" if report.bundle_id else "")
        )
        for s in report.steps:
            if s.verdict:
                v = s.verdict
                print(f"  gate {v['gate']}: {'pass' if v['passed'] else 'FAIL'}: {v['reason']}")
    raise_for_status(report)
    return 0


def cmd_pipeline_kinds(args: argparse.Namespace) -> int:
    from tools.pipeline.registry import step_kinds
    from tools.pipeline.step import params_defaults

    out: list[dict[str, Any]] = []
    for k in step_kinds().values():
        out.append(
            {
                "kind": k.name,
                "description": k.description,
                "inputs": list(k.inputs),
                "optional_inputs": list(k.optional_inputs),
                "outputs": {o.name: o.filename for o in k.outputs},
                "params": params_defaults(k.params_type),
                "code": list(k.sources),
            }
        )
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    for d in out:
        print(f"{d['kind']}: {d['description']}")
        print(
            f"  inputs: {', '.join(d['inputs'])}"
            + (f" (optional: {', '.join(d['optional_inputs'])})" if d["optional_inputs"] else "")
        )
        print(f"  outputs: {', '.join(f'{k} ({v})' for k, v in d['outputs'].items())}")
        if d["params"]:
            print(f"  params: {', '.join(f'{k}={v}' for k, v in d['params'].items())}")
    return 0


def cmd_pipeline_ingest(args: argparse.Namespace) -> int:
    from tools.pipeline import TripStore

    now = dt.datetime.now(dt.UTC)
    reports = []
    if not args.files:
        raise ToolsError("no trip files given")
    with TripStore(args.db) as store:
        for f in args.files:
            reports.append(store.ingest(f, args.label, now=now).to_json())
        counts = store.counts_by_label()
    if args.json:
        print(json.dumps({"files": reports, "trips_by_label": counts}, indent=2, sort_keys=True))
        return 0
    for r in reports:
        print(
            f"{r['path']}: {r['rows_read']} rows, {r['usable']} usable, "
            f"{r['new_trips']} new, {r['merged_trips']} already present"
        )
    print("trips: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0
