"""Execution helpers of the runner: running one step (in a worker process or inline) and what
that call gives back, a named result rather than a positional tuple."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tools.pipeline.step import StepContext, StepResult


@dataclass(frozen=True)
class StepSucceeded:
    """The step kind returned ``result``; its staged outputs are ready to be committed."""

    result: StepResult


@dataclass(frozen=True)
class StepRaised:
    """The step (or committing its outputs, or the worker running it) failed."""

    error_type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, e: BaseException) -> StepRaised:
        """The exception being handled, with its traceback."""
        return cls(type(e).__name__, str(e) or type(e).__name__, traceback.format_exc())


StepCall = StepSucceeded | StepRaised


def execute_step(kind_name: str, ctx: StepContext, log_level: int) -> StepCall:
    """Run one step (in a worker process or inline)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    from tools.pipeline.registry import step_kinds

    try:
        result = step_kinds()[kind_name].run(ctx)
        if not isinstance(result, StepResult):
            raise TypeError(f"step kind {kind_name} returned {type(result).__name__}")
        return StepSucceeded(result)
    except Exception as e:
        return StepRaised.of(e)


class InlineExecutor(cf.Executor):
    """Runs submitted work at once, in this process (``jobs`` = 1)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:
            fut.set_exception(e)
        return fut
