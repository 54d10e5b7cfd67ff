"""Run a pipeline like a build system: in dependency order, in parallel, skipping what is current.

For every step the runner computes a *cache key*: the sha256 of the step kind, its parameters
(defaults included), the content hash of every input and the step's code version (the hash of
the sources that implement it). The step is skipped when the key equals the one stored after
its last successful execution in this workdir and its outputs still have the recorded hashes;
otherwise it runs, and the reason is shown (no previous run, parameters changed, input changed,
code changed, output missing or modified, forced). Because dependants hash their inputs' bytes,
a step that re-ran but produced identical outputs does not make its dependants run again.

Execution: independent steps run in parallel in worker processes (``jobs`` > 1, a
``concurrent.futures.ProcessPoolExecutor``), or in this process (``jobs`` = 1). A step writes its
outputs to temporary paths beside the final ones; only when it returned are they renamed into
place, so a crash never leaves a partial output that looks complete. A failed step leaves every
completed output (its own previous outputs included) intact and stops only its dependants; the
next run resumes where it stopped, since the steps that succeeded are then current.

The pieces: the cache evaluation in :mod:`tools.pipeline._evaluate`, the record of the run in
:mod:`tools.pipeline._recorder`, the report's types in :mod:`tools.pipeline.outcome`, running
one step in :mod:`tools.pipeline._exec`, output staging in :mod:`tools.pipeline._staging`; this
module holds the options and the loop that hands ready steps out.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import graphlib
import logging
import multiprocessing
import secrets
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.pipeline._evaluate import CacheEvaluator, Eval, input_path
from tools.pipeline._exec import InlineExecutor, StepCall, StepRaised, StepSucceeded, execute_step
from tools.pipeline._recorder import Recorded, Recorder
from tools.pipeline._staging import (
    clean_stale,
    commit_outputs,
    remove,
    staging_path,
    workdir_lock,
)
from tools.pipeline.errors import PipelineSpecError
from tools.pipeline.hashing import sha256_path
from tools.pipeline.outcome import RunReport, StepEvent, StepOutcome
from tools.pipeline.runsdb import CacheEntry, RunsDB
from tools.pipeline.spec import PipelineSpec, StepSpec
from tools.pipeline.status import StepStatus
from tools.pipeline.step import StepContext, StepResult

__all__ = [
    "REPO_ROOT",
    "RunOptions",
    "RunReport",
    "StepEvent",
    "StepOutcome",
    "run_pipeline",
    "utc_now",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class RunOptions:
    """How to run a pipeline."""

    only: tuple[str, ...] = ()  # run just these steps (the others' outputs must exist)
    force: bool = False  # run the selected steps even when they are current
    jobs: int = 1  # worker processes for independent steps (1: in this process)
    dry_run: bool = False  # say what would run and why; run nothing, record nothing
    exclude_kinds: tuple[str, ...] = ()  # step kinds left out (``runs reproduce``: publish)
    reproduce_of: int | None = None  # recorded with the run

    def to_json(self) -> dict[str, Any]:
        """As recorded with the run (``dry_run`` is never recorded: a dry run records nothing)."""
        return {
            "only": list(self.only),
            "force": self.force,
            "jobs": self.jobs,
            "exclude_kinds": list(self.exclude_kinds),
            "reproduce_of": self.reproduce_of,
        }


@dataclass
class _Running:
    """A step submitted to the executor, and what to clean up or commit when it ends."""

    future: cf.Future[Any]
    step: StepSpec
    ev: Eval
    staged: dict[str, Path]  # output name -> staging path
    scratch: Path
    token: str  # the staging token
    t0: float  # monotonic start


class _Run:
    def __init__(
        self,
        spec: PipelineSpec,
        options: RunOptions,
        db: RunsDB | None,
        progress: Callable[[StepEvent], None] | None,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.spec = spec
        self.opt = options
        self.db = db
        self.rec = Recorder(spec, db, progress, clock)
        self.cache = CacheEvaluator(spec, db, force=options.force)
        selected = set(options.only) if options.only else {s.name for s in spec.steps}
        for name in options.only:
            spec.step(name)  # unknown names are errors
        self.selected = {
            s.name
            for s in spec.steps
            if s.name in selected and s.kind.name not in options.exclude_kinds
        }

    @property
    def run_id(self) -> int | None:
        return self.rec.run_id

    # ---------------------------------------------------------------- main loop

    def execute(self) -> RunReport:
        spec, opt = self.spec, self.opt
        if not opt.dry_run:
            spec.workdir.mkdir(parents=True, exist_ok=True)
            clean_stale(spec)
            self.rec.start(opt.to_json(), REPO_ROOT)
        executor: cf.Executor
        if opt.jobs > 1 and not opt.dry_run:
            executor = cf.ProcessPoolExecutor(
                max_workers=opt.jobs, mp_context=multiprocessing.get_context("spawn")
            )
        else:
            executor = InlineExecutor()
        # the ready set: a step is handed out once all it depends on is done; steps that finish
        # at once (skipped, blocked, not selected) are marked done before the next wait
        order = graphlib.TopologicalSorter({s.name: s.depends_on for s in spec.steps})
        order.prepare()
        running: dict[cf.Future[Any], _Running] = {}
        try:
            with executor:
                while order.is_active():
                    for name in sorted(order.get_ready(), key=self.rec.index.__getitem__):
                        job = self._start(self.spec.step(name), executor)
                        if job is None:
                            order.done(name)
                        else:
                            running[job.future] = job
                    if not running:
                        continue
                    done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        job = running.pop(fut)
                        self._finish(job)
                        order.done(job.step.name)
        finally:
            for job in running.values():
                job.future.cancel()
                for p in job.staged.values():
                    remove(p)
                shutil.rmtree(job.scratch, ignore_errors=True)
        return self.rec.report(opt.dry_run)

    # ---------------------------------------------------------------- deciding a step

    def _start(self, s: StepSpec, executor: cf.Executor) -> _Running | None:
        """Decide step ``s`` (all it depends on is done): record it at once and return None, or
        submit it to ``executor`` and return what is running."""
        if s.name not in self.selected:
            self.rec.settle(s, StepStatus.NOT_SELECTED, "not selected")
            return None
        status = self.rec.status
        deps = s.depends_on
        bad = sorted(d for d in deps if status[d] in (StepStatus.FAILED, StepStatus.BLOCKED))
        if bad:
            self.rec.settle(s, StepStatus.BLOCKED, "blocked: " + ", ".join(bad) + " failed")
            return None
        upstream_runs = sorted(d for d in deps if status[d] == StepStatus.WOULD_RUN)
        if self.opt.dry_run and upstream_runs:
            reason = "upstream " + ", ".join(upstream_runs) + " would run (its outputs may change)"
            self.rec.settle(s, StepStatus.WOULD_RUN, reason)
            return None
        try:
            ev = self.cache.evaluate(s)
        except FileNotFoundError as e:
            reason = str(e).strip("'\"")
            failed = Recorded(error=reason, error_type="FileNotFoundError")
            self.rec.record(s, StepStatus.FAILED, reason, None, failed)
            self.rec.emit(s.name, StepStatus.FAILED, reason)
            return None
        if not ev.run:
            assert ev.cached is not None
            self._reuse(s, ev, ev.cached)
            return None
        if self.opt.dry_run:
            self.rec.record(s, StepStatus.WOULD_RUN, ev.reason, ev)
            self.rec.emit(s.name, StepStatus.WOULD_RUN, ev.reason)
            return None
        return self._submit(s, ev, executor)

    def _reuse(self, s: StepSpec, ev: Eval, cached: CacheEntry) -> None:
        """``s`` is current: its outputs of an earlier run stand, with that run's metrics."""
        self.cache.remember(s.name, cached.output_hashes)
        status = StepStatus.UP_TO_DATE if self.opt.dry_run else StepStatus.SKIPPED
        kept = Recorded(
            metrics=cached.metrics,
            verdict=cached.verdict,
            output_hashes=cached.output_hashes,
            produced_by=cached.run_id,
        )
        self.rec.record(s, status, ev.reason, ev, kept)
        self.rec.emit(s.name, status, ev.reason)

    def _submit(self, s: StepSpec, ev: Eval, executor: cf.Executor) -> _Running:
        """Stage ``s``'s outputs and scratch folder and hand it to ``executor``."""
        token = secrets.token_hex(6)
        staged: dict[str, Path] = {}
        for name, final in s.outputs.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            st = staging_path(final, token)
            if s.kind.output_decl(name).is_dir:
                st.mkdir()
            staged[name] = st
        scratch = self.spec.workdir / ".scratch" / f"{s.name}-{token}"
        scratch.mkdir(parents=True)
        ctx = StepContext(
            step=s.name,
            inputs={
                k: tuple(input_path(self.spec, r) for r in refs) for k, refs in s.inputs.items()
            },
            outputs=staged,
            params=s.params,
            scratch=scratch,
            pipeline_dir=self.spec.path.parent,
        )
        self.rec.emit(s.name, StepStatus.RUNNING, ev.reason)
        t0 = _monotonic()
        try:
            fut = executor.submit(
                execute_step, s.kind.name, ctx, logging.getLogger().getEffectiveLevel()
            )
        except (cf.BrokenExecutor, RuntimeError) as e:  # a worker died: the pool is gone
            fut = cf.Future()
            fut.set_exception(e)
        return _Running(fut, s, ev, staged, scratch, token, t0)

    # ---------------------------------------------------------------- a step ended

    def _finish(self, job: _Running) -> None:
        duration = round(_monotonic() - job.t0, 3)
        try:
            out: StepCall = job.future.result()
        except Exception as e:  # a worker died (BrokenProcessPool) or the call itself failed
            out = StepRaised.of(e)
        shutil.rmtree(job.scratch, ignore_errors=True)
        if isinstance(out, StepSucceeded):
            failure = self._commit(job, out.result, duration)
            if failure is None:
                return
        else:
            failure = out
        for p in job.staged.values():
            remove(p)
        s = job.step
        log.debug("step %s failed:\n%s", s.name, failure.traceback)
        failed = Recorded(duration_s=duration, error=failure.message, error_type=failure.error_type)
        self.rec.record(s, StepStatus.FAILED, job.ev.reason, job.ev, failed)
        reason = f"{failure.error_type}: {failure.message}"
        self.rec.emit(s.name, StepStatus.FAILED, reason, duration_s=duration)

    def _commit(self, job: _Running, result: StepResult, duration: float) -> StepRaised | None:
        """Rename the staged outputs of a step that returned into place, cache and record it;
        what went wrong if the outputs could not be committed."""
        s, ev = job.step, job.ev
        try:
            commit_outputs(s, job.staged, job.token)
            hashes = {k: sha256_path(p) for k, p in s.outputs.items()}
        except (OSError, FileNotFoundError) as e:
            return StepRaised(type(e).__name__, str(e), traceback.format_exc())
        self.cache.remember(s.name, hashes)
        verdict = result.verdict.to_json() if result.verdict else None
        assert ev.key is not None
        run_id = self.rec.run_id
        if self.db is not None and run_id is not None:
            self.db.store_cache(
                str(self.spec.workdir),
                s.name,
                CacheEntry(ev.key, hashes, result.metrics, verdict, run_id),
                self.rec.clock().isoformat(),
            )
        ran = Recorded(
            metrics=result.metrics,
            verdict=verdict,
            output_hashes=hashes,
            produced_by=run_id,
            duration_s=duration,
        )
        self.rec.record(s, StepStatus.RAN, ev.reason, ev, ran)
        self.rec.emit(
            s.name, StepStatus.RAN, ev.reason, duration_s=duration, summary=result.summary
        )
        return None


def _monotonic() -> float:
    return time.monotonic()


def run_pipeline(
    spec: PipelineSpec,
    options: RunOptions | None = None,
    *,
    progress: Callable[[StepEvent], None] | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
) -> RunReport:
    """Run (or, with ``dry_run``, plan) ``spec``; every real run is recorded in its runs DB."""
    opt = options or RunOptions()
    if opt.jobs < 1:
        raise PipelineSpecError(f"--jobs must be at least 1, got {opt.jobs}")
    db = RunsDB(spec.runs_db) if not opt.dry_run or spec.runs_db.is_file() else None
    try:
        run = _Run(spec, opt, db, progress, clock)
        lock = contextlib.nullcontext() if opt.dry_run else workdir_lock(spec.workdir)
        try:
            with lock:
                return run.execute()
        except BaseException as e:  # interrupted (Ctrl-C) or the runner itself failed
            run.rec.interrupted(e)
            raise
    finally:
        if db is not None:
            db.close()
