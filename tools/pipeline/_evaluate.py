"""Cache evaluation: a step's cache key, and the one-line reason it runs or is skipped.

The key is the sha256 of the step kind, its parameters (defaults included), the content hash of
every input and the step's code version. A step is current when the key equals the one stored
after its last successful execution in this workdir and its outputs still have the recorded
hashes (see :mod:`tools.pipeline.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.pipeline.hashing import code_version, sha256_json, sha256_path
from tools.pipeline.runsdb import CacheEntry, RunsDB
from tools.pipeline.spec import InputRef, PipelineSpec, StepSpec
from tools.pipeline.step import params_to_json


@dataclass
class Eval:
    """A step's cache evaluation."""

    run: bool
    reason: str
    input_hashes: dict[str, list[list[str]]] = field(default_factory=dict)
    key: str | None = None
    code_hash: str | None = None
    code_parts: dict[str, str] = field(default_factory=dict)
    cached: CacheEntry | None = None


def diff_reason(prev: dict[str, Any] | None, params: dict[str, Any], ev: Eval) -> str:
    if prev is None:
        return "cache record lost"
    changed_params = sorted(
        k
        for k in set(params) | set(prev["params"] or {})
        if params.get(k) != (prev["params"] or {}).get(k)
    )
    if changed_params:
        return "parameters changed: " + ", ".join(changed_params)
    prev_inputs = prev["input_hashes"] or {}
    changed_inputs = sorted(
        k
        for k in set(ev.input_hashes) | set(prev_inputs)
        if [h for _, h in ev.input_hashes.get(k, [])] != [h for _, h in prev_inputs.get(k, [])]
    )
    if changed_inputs:
        return "inputs changed: " + ", ".join(changed_inputs)
    prev_code = prev["code_sources"] or {}
    changed_code = sorted(
        k for k in set(ev.code_parts) | set(prev_code) if ev.code_parts.get(k) != prev_code.get(k)
    )
    if changed_code:
        return "code changed: " + ", ".join(changed_code)
    return "step definition changed"


def input_path(spec: PipelineSpec, r: InputRef) -> Path:
    """Where input ``r`` is: a file of the pipeline, or another step's final output."""
    if r.step is not None and r.output is not None:
        return spec.step(r.step).outputs[r.output]
    assert r.path is not None
    return r.path


class CacheEvaluator:
    """Evaluates the steps of one run against the step cache of ``db`` in ``spec``'s workdir,
    remembering the hash of every output known in this run (committed now or reused)."""

    def __init__(self, spec: PipelineSpec, db: RunsDB | None, *, force: bool) -> None:
        self.spec = spec
        self.db = db
        self.force = force
        self.workdir = str(spec.workdir)
        self.output_hash: dict[tuple[str, str], str] = {}
        self.code_cache: dict[str, tuple[str, dict[str, str]]] = {}

    def remember(self, step: str, hashes: dict[str, str]) -> None:
        """The outputs of ``step`` now have ``hashes``."""
        for k, h in hashes.items():
            self.output_hash[(step, k)] = h

    def _code(self, s: StepSpec) -> tuple[str, dict[str, str]]:
        if s.kind.name not in self.code_cache:
            self.code_cache[s.kind.name] = code_version(s.kind.sources)
        return self.code_cache[s.kind.name]

    def _input_hash(self, r: InputRef) -> str:
        if r.step is not None and r.output is not None:
            known = self.output_hash.get((r.step, r.output))
            if known is not None:
                return known
            p = self.spec.step(r.step).outputs[r.output]
            try:
                h = sha256_path(p)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"input @{r.step}.{r.output} ({p}) does not exist: run step {r.step} first"
                ) from None
            self.output_hash[(r.step, r.output)] = h
            return h
        assert r.path is not None
        try:
            return sha256_path(r.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"input {r.path} does not exist") from None

    def evaluate(self, s: StepSpec) -> Eval:
        """Whether ``s`` must run and why; raises FileNotFoundError for a missing input."""
        code_hash, code_parts = self._code(s)
        inputs: dict[str, list[list[str]]] = {}
        for k, refs in s.inputs.items():
            inputs[k] = [[r.describe(), self._input_hash(r)] for r in refs]
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
        if self.force:
            ev.reason = "forced"
        elif cached is None:
            ev.reason = "no previous successful run"
        elif cached.cache_key != key:
            prev = self.db.step_record(cached.run_id, s.name) if self.db else None
            ev.reason = diff_reason(prev, params, ev)
        else:
            self._check_outputs(s, cached, ev)
        return ev

    @staticmethod
    def _check_outputs(s: StepSpec, cached: CacheEntry, ev: Eval) -> None:
        """The key is unchanged: ``s`` is current unless an output is missing or modified."""
        for name, final in s.outputs.items():
            try:
                h = sha256_path(final)
            except FileNotFoundError:
                ev.reason = f"output {name} missing"
                return
            if h != cached.output_hashes.get(name):
                ev.reason = f"output {name} modified since it was written"
                return
        ev.run = False
        ev.reason = "up to date"
