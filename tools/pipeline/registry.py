"""The step kinds a pipeline YAML may name, collected from the step modules."""

from __future__ import annotations

import functools
import importlib

from tools.pipeline.step import StepKind

#: Modules defining step kinds; each has ``KINDS: tuple[StepKind, ...]``. They import the
#: packages they call lazily, inside the step functions, so listing kinds stays cheap.
STEP_MODULES: tuple[str, ...] = (
    "tools.pipeline.steps_data",
    "tools.pipeline.steps_demand",
    "tools.pipeline.steps_sim",
    "tools.pipeline.steps_release",
)


@functools.cache
def step_kinds() -> dict[str, StepKind]:
    kinds: dict[str, StepKind] = {}
    for name in STEP_MODULES:
        module = importlib.import_module(name)
        for kind in module.KINDS:
            if kind.name in kinds:
                raise RuntimeError(f"step kind {kind.name!r} defined twice")
            kinds[kind.name] = kind
    return kinds
