"""What a step kind is: declared inputs, outputs and parameters, the code that implements it.

A step kind (``import_tiles``, ``build_demand``, ...) is a :class:`StepKind`: a function from a
:class:`StepContext` (input paths, temporary output paths, a frozen parameters dataclass) to a
:class:`StepResult` (metrics, optionally a gate verdict). The runner hands the function output
paths in a temporary location and renames them into place only when the function returned, so
a step never has to care about partial outputs or about being skipped.

``sources`` names the packages and modules whose source code is the step's *code version*: a
change to any of them re-runs the step (and, through changed outputs, its dependants).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.pipeline.errors import PipelineSpecError


@dataclass(frozen=True)
class OutputDecl:
    """One output of a step kind: its name and default file (or directory) name."""

    name: str
    filename: str
    is_dir: bool = False


@dataclass(frozen=True)
class Verdict:
    """A release gate's decision, recorded with the run and shown to the operator."""

    gate: str  # "demand" or "planner"
    passed: bool
    reason: str  # one line: why

    def to_json(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "reason": self.reason}


@dataclass(frozen=True)
class StepResult:
    """What a step reports besides its output files."""

    metrics: dict[str, Any] = field(default_factory=dict)  # JSON-able
    verdict: Verdict | None = None
    summary: str = ""  # one line for the progress display


@dataclass(frozen=True)
class StepContext:
    """Everything a step function may use. Inputs are read-only; outputs are temporary paths."""

    step: str
    inputs: Mapping[str, tuple[Path, ...]]
    outputs: Mapping[str, Path]
    params: Any  # the kind's frozen parameters dataclass
    scratch: Path  # a private empty directory, removed after the step
    pipeline_dir: Path  # the pipeline file's directory: relative path parameters resolve here

    def input(self, name: str) -> Path:
        paths = self.inputs.get(name, ())
        if len(paths) != 1:
            raise PipelineSpecError(
                f"step {self.step}: input {name!r} needs exactly one path, got {len(paths)}"
            )
        return paths[0]

    def optional_input(self, name: str) -> Path | None:
        paths = self.inputs.get(name, ())
        return paths[0] if paths else None

    def input_list(self, name: str) -> tuple[Path, ...]:
        return tuple(self.inputs.get(name, ()))

    def output(self, name: str) -> Path:
        return self.outputs[name]


@dataclass(frozen=True)
class StepKind:
    name: str
    run: Callable[[StepContext], StepResult]
    params_type: type[Any]  # a frozen dataclass with documented defaults
    inputs: tuple[str, ...]  # required input names
    outputs: tuple[OutputDecl, ...]
    sources: tuple[str, ...]  # packages/modules whose code is this step's code version
    optional_inputs: tuple[str, ...] = ()
    description: str = ""

    def output_decl(self, name: str) -> OutputDecl:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Check (and normalise) a YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(value, a, where)
            except PipelineSpecError as e:
                errors.append(str(e))
        raise PipelineSpecError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise PipelineSpecError(f"{where}: expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_check_value(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise PipelineSpecError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise PipelineSpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise PipelineSpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PipelineSpecError(f"{where}: expected a string, got {value!r}")
        return value
    raise PipelineSpecError(f"{where}: unsupported parameter type {tp!r}")


def parse_params(params_type: type[Any], raw: Any, where: str) -> Any:
    """Build a kind's parameters dataclass from YAML, rejecting unknown keys and bad types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineSpecError(f"{where}: expected a mapping of parameters")
    hints = typing.get_type_hints(params_type)
    names = {f.name for f in dataclasses.fields(params_type)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise PipelineSpecError(
            f"{where}.{unknown[0]}: unknown parameter (known: {', '.join(sorted(names))})"
        )
    values = {k: _check_value(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    try:
        return params_type(**values)
    except (TypeError, ValueError) as e:
        raise PipelineSpecError(f"{where}: {e}") from e


def params_to_json(params: Any) -> dict[str, Any]:
    """The parameters as plain JSON (tuples become lists), defaults included."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def params_defaults(params_type: type[Any]) -> dict[str, Any]:
    """Each parameter's default (``"(required)"`` for those without one), for listings."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params_type):
        if f.default is not dataclasses.MISSING:
            v = f.default
            out[f.name] = list(v) if isinstance(v, tuple) else v
        else:
            out[f.name] = "(required)"
    return out
