"""Execution helpers of the runner: running one step (in a worker process or inline), the
cache evaluation record, and the one-line reason a step runs."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.pipeline.runsdb import CacheEntry
from tools.pipeline.step import StepContext, StepResult


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


def execute_step(kind_name: str, ctx: StepContext, log_level: int) -> tuple[Any, ...]:
    """Run one step (in a worker process or inline): ("ok", result) or ("error", ...)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    from tools.pipeline.registry import step_kinds

    try:
        result = step_kinds()[kind_name].run(ctx)
        if not isinstance(result, StepResult):
            raise TypeError(f"step kind {kind_name} returned {type(result).__name__}")
        return ("ok", result)
    except Exception as e:
        return ("error", type(e).__name__, str(e) or type(e).__name__, traceback.format_exc())


class InlineExecutor(cf.Executor):
    """Runs submitted work at once, in this process (``jobs`` = 1)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:
            fut.set_exception(e)
        return fut


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
