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

from tools.pipeline._exec import Eval, InlineExecutor, diff_reason, execute_step
from tools.pipeline._staging import (
    clean_stale,
    commit_outputs,
    remove,
    staging_path,
    workdir_lock,
)
from tools.pipeline.errors import PipelineSpecError
from tools.pipeline.hashing import code_version, git_state, sha256_json, sha256_path
from tools.pipeline.runsdb import CacheEntry, RunsDB
from tools.pipeline.spec import InputRef, PipelineSpec, StepSpec
from tools.pipeline.status import RunStatus, StepStatus
from tools.pipeline.step import StepContext, StepResult, params_to_json

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
        self.progress = progress
        self.clock = clock
        self.workdir = str(spec.workdir)
        self.status: dict[str, StepStatus] = {}
        self.outcomes: dict[str, StepOutcome] = {}
        self.output_hash: dict[tuple[str, str], str] = {}
        self.code_cache: dict[str, tuple[str, dict[str, str]]] = {}
        self.index = {s.name: i + 1 for i, s in enumerate(spec.steps)}
        self.run_id: int | None = None
        selected = set(options.only) if options.only else {s.name for s in spec.steps}
        for name in options.only:
            spec.step(name)  # unknown names are errors
        self.selected = {
            s.name
            for s in spec.steps
            if s.name in selected and s.kind.name not in options.exclude_kinds
        }

    # ---------------------------------------------------------------- evaluation

    def _emit(self, step: str, status: StepStatus, reason: str, **kw: Any) -> None:
        if self.progress:
            self.progress(
                StepEvent(step, self.index[step], len(self.spec.steps), status, reason, **kw)
            )

    def _code(self, s: StepSpec) -> tuple[str, dict[str, str]]:
        if s.kind.name not in self.code_cache:
            self.code_cache[s.kind.name] = code_version(s.kind.sources)
        return self.code_cache[s.kind.name]

    def _input_hash(
        self, s: StepSpec, ref_step: str | None, out: str | None, path: Path | None
    ) -> str:
        if ref_step is not None and out is not None:
            known = self.output_hash.get((ref_step, out))
            if known is not None:
                return known
            p = self.spec.step(ref_step).outputs[out]
            try:
                h = sha256_path(p)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"input @{ref_step}.{out} ({p}) does not exist: run step {ref_step} first"
                ) from None
            self.output_hash[(ref_step, out)] = h
            return h
        assert path is not None
        try:
            return sha256_path(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"input {path} does not exist") from None

    def _path(self, r: InputRef) -> Path:
        if r.step is not None and r.output is not None:
            return self.spec.step(r.step).outputs[r.output]
        assert r.path is not None
        return r.path

    def evaluate(self, s: StepSpec) -> Eval:
        code_hash, code_parts = self._code(s)
        inputs: dict[str, list[list[str]]] = {}
        for k, refs in s.inputs.items():
            inputs[k] = [
                [r.describe(), self._input_hash(s, r.step, r.output, r.path)] for r in refs
            ]
        params = params_to_json(s.params)
        key = sha256_json(
            {
                "kind": s.kind.name,
                "params": params,
                "inputs": {k: [h for _, h in v] for k, v in inputs.items()},
                "code": code_hash,
            }
        )
        ev = Eval(True, "", inputs, key, code_hash, code_parts)
        cached = self.db.cached(self.workdir, s.name) if self.db else None
        ev.cached = cached
        if self.opt.force:
            ev.reason = "forced"
        elif cached is None:
            ev.reason = "no previous successful run"
        elif cached.cache_key != key:
            prev = self.db.step_record(cached.run_id, s.name) if self.db else None
            ev.reason = diff_reason(prev, params, ev)
        else:
            for name, final in s.outputs.items():
                try:
                    h = sha256_path(final)
                except FileNotFoundError:
                    ev.reason = f"output {name} missing"
                    break
                if h != cached.output_hashes.get(name):
                    ev.reason = f"output {name} modified since it was written"
                    break
            else:
                ev.run = False
                ev.reason = "up to date"
        return ev

    # ---------------------------------------------------------------- recording

    def _record(
        self,
        s: StepSpec,
        status: StepStatus,
        reason: str,
        ev: Eval | None,
        *,
        metrics: dict[str, Any] | None = None,
        verdict: dict[str, Any] | None = None,
        output_hashes: dict[str, str] | None = None,
        produced_by: int | None = None,
        duration_s: float | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        self.status[s.name] = status
        self.outcomes[s.name] = StepOutcome(
            s.name,
            s.kind.name,
            status,
            reason,
            duration_s,
            metrics or {},
            verdict,
            error,
            error_type,
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
                "output_hashes": output_hashes,
                "metrics": metrics,
                "verdict": verdict,
                "produced_by_run": produced_by,
                "duration_s": duration_s,
                "error": error,
            },
        )

    # ---------------------------------------------------------------- main loop

    def execute(self) -> RunReport:
        spec, opt = self.spec, self.opt
        if not opt.dry_run:
            spec.workdir.mkdir(parents=True, exist_ok=True)
            clean_stale(spec)
            assert self.db is not None
            git = git_state(REPO_ROOT)
            self.run_id = self.db.start_run(
                pipeline=spec.name,
                pipeline_path=str(spec.path),
                pipeline_sha256=sha256_json(spec.text),
                pipeline_text=spec.text,
                workdir=self.workdir,
                started_at=self.clock().isoformat(),
                git_commit=git.commit,
                git_dirty=git.dirty,
                options={
                    "only": list(opt.only),
                    "force": opt.force,
                    "jobs": opt.jobs,
                    "exclude_kinds": list(opt.exclude_kinds),
                    "reproduce_of": opt.reproduce_of,
                },
            )
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
                    for name in sorted(order.get_ready(), key=self.index.__getitem__):
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
        return self._report()

    def _start(self, s: StepSpec, executor: cf.Executor) -> _Running | None:
        """Decide step ``s`` (all it depends on is done): record it at once and return None, or
        submit it to ``executor`` and return what is running."""
        if s.name not in self.selected:
            self._settle(s, StepStatus.NOT_SELECTED, "not selected")
            return None
        deps = s.depends_on
        bad = sorted(d for d in deps if self.status[d] in (StepStatus.FAILED, StepStatus.BLOCKED))
        if bad:
            self._settle(s, StepStatus.BLOCKED, "blocked: " + ", ".join(bad) + " failed")
            return None
        upstream_runs = sorted(d for d in deps if self.status[d] == StepStatus.WOULD_RUN)
        if self.opt.dry_run and upstream_runs:
            reason = "upstream " + ", ".join(upstream_runs) + " would run (its outputs may change)"
            self._settle(s, StepStatus.WOULD_RUN, reason)
            return None
        try:
            ev = self.evaluate(s)
        except FileNotFoundError as e:
            reason = str(e).strip("'\"")
            self._record(
                s, StepStatus.FAILED, reason, None, error=reason, error_type="FileNotFoundError"
            )
            self._emit(s.name, StepStatus.FAILED, reason)
            return None
        if not ev.run:
            assert ev.cached is not None
            for k, h in ev.cached.output_hashes.items():
                self.output_hash[(s.name, k)] = h
            status = StepStatus.UP_TO_DATE if self.opt.dry_run else StepStatus.SKIPPED
            self._record(
                s,
                status,
                ev.reason,
                ev,
                metrics=ev.cached.metrics,
                verdict=ev.cached.verdict,
                output_hashes=ev.cached.output_hashes,
                produced_by=ev.cached.run_id,
            )
            self._emit(s.name, status, ev.reason)
            return None
        if self.opt.dry_run:
            self._record(s, StepStatus.WOULD_RUN, ev.reason, ev)
            self._emit(s.name, StepStatus.WOULD_RUN, ev.reason)
            return None
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
            inputs={k: tuple(self._path(r) for r in refs) for k, refs in s.inputs.items()},
            outputs=staged,
            params=s.params,
            scratch=scratch,
            pipeline_dir=self.spec.path.parent,
        )
        self._emit(s.name, StepStatus.RUNNING, ev.reason)
        t0 = _monotonic()
        try:
            fut = executor.submit(
                execute_step, s.kind.name, ctx, logging.getLogger().getEffectiveLevel()
            )
        except (cf.BrokenExecutor, RuntimeError) as e:  # a worker died: the pool is gone
            fut = cf.Future()
            fut.set_exception(e)
        return _Running(fut, s, ev, staged, scratch, token, t0)

    def _settle(self, s: StepSpec, status: StepStatus, reason: str) -> None:
        """Record a step decided without running it."""
        self._record(s, status, reason, None)
        self._emit(s.name, status, reason)

    def _finish(self, job: _Running) -> None:
        s, ev, staged, token = job.step, job.ev, job.staged, job.token
        duration = round(_monotonic() - job.t0, 3)
        fut, scratch = job.future, job.scratch
        try:
            out = fut.result()
        except Exception as e:  # a worker died (BrokenProcessPool) or the call itself failed
            out = ("error", type(e).__name__, str(e) or type(e).__name__, traceback.format_exc())
        shutil.rmtree(scratch, ignore_errors=True)
        if out[0] == "ok":
            result: StepResult = out[1]
            try:
                commit_outputs(s, staged, token)
                hashes = {k: sha256_path(p) for k, p in s.outputs.items()}
            except (OSError, FileNotFoundError) as e:
                out = ("error", type(e).__name__, str(e), traceback.format_exc())
            else:
                for k, h in hashes.items():
                    self.output_hash[(s.name, k)] = h
                verdict = result.verdict.to_json() if result.verdict else None
                assert ev.key is not None
                if self.db is not None and self.run_id is not None:
                    self.db.store_cache(
                        self.workdir,
                        s.name,
                        CacheEntry(ev.key, hashes, result.metrics, verdict, self.run_id),
                        self.clock().isoformat(),
                    )
                self._record(
                    s,
                    StepStatus.RAN,
                    ev.reason,
                    ev,
                    metrics=result.metrics,
                    verdict=verdict,
                    output_hashes=hashes,
                    produced_by=self.run_id,
                    duration_s=duration,
                )
                self._emit(
                    s.name, StepStatus.RAN, ev.reason, duration_s=duration, summary=result.summary
                )
                return
        for p in staged.values():
            remove(p)
        _, etype, msg, tb = out
        log.debug("step %s failed:\n%s", s.name, tb)
        self._record(
            s, StepStatus.FAILED, ev.reason, ev, duration_s=duration, error=msg, error_type=etype
        )
        self._emit(s.name, StepStatus.FAILED, f"{etype}: {msg}", duration_s=duration)

    def _report(self) -> RunReport:
        steps = tuple(self.outcomes[s.name] for s in self.spec.steps if s.name in self.outcomes)
        failed = [o for o in steps if o.status == StepStatus.FAILED]
        refused = [
            o
            for o in steps
            if o.verdict is not None
            and o.verdict.get("gate") == "release"
            and not o.verdict.get("passed")
            and o.status.produced_outputs
        ]
        if self.opt.dry_run:
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
        bundle_id = manifest_sha = None
        manifest: dict[str, Any] | None = None
        for o in steps:
            if "manifest" in o.metrics and o.status.produced_outputs:
                bundle_id = o.metrics["bundle_id"]
                manifest = o.metrics.get("manifest")
                manifest_sha = o.metrics.get("manifest_sha256")
        if self.db is not None and self.run_id is not None:
            self.db.finish_run(
                self.run_id,
                finished_at=self.clock().isoformat(),
                status=status,
                manifest=manifest,
                manifest_sha256=manifest_sha,
                bundle_id=bundle_id,
                error=error,
            )
        return RunReport(self.run_id, status, steps, bundle_id, manifest_sha, error)


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
            if db is not None and run.run_id is not None:
                db.finish_run(
                    run.run_id,
                    finished_at=clock().isoformat(),
                    status="interrupted",
                    manifest=None,
                    manifest_sha256=None,
                    bundle_id=None,
                    error=f"{type(e).__name__}: {e}",
                )
            raise
    finally:
        if db is not None:
            db.close()
