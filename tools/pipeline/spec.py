"""The pipeline file: steps with declared inputs, outputs and parameters, checked and ordered.

A pipeline is YAML (``schema_version: 1``)::

    schema_version: 1
    name: manhattan                 # [a-z0-9_-]
    workdir: ../build/manhattan     # outputs live here (relative to this file)
    runs_db: ../build/runs.sqlite   # the runs database (default: <workdir>/runs.sqlite)
    steps:
      - name: tiles
        kind: import_tiles          # see ``nagashi pipeline kinds``
        inputs:
          osm: ../data/osm/nyc_manhattan_midtown.osm.pbf
        params: {tile_deg: 0.01}
        outputs: {tiles: tiles/tiles.sqlite}      # optional: default <step>/<file>
      - name: demand
        kind: build_demand
        inputs:
          tiles: "@tiles.tiles"     # output ``tiles`` of step ``tiles``: a dependency
          trips: ["a.csv", "b.csv"] # an input may be a list of paths

Paths are relative to the pipeline file (inputs) or to ``workdir`` (outputs). A reference
``@step.output`` makes the step depend on another; the steps are ordered by these references
(cycles and unknown names are errors with the key path).
"""

from __future__ import annotations

import dataclasses
import graphlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tiles.fileio import one_line_error
from tools.pipeline.errors import PipelineSpecError
from tools.pipeline.registry import step_kinds
from tools.pipeline.step import StepKind, parse_params

SCHEMA_VERSION = 1
MAX_PIPELINE_BYTES = 1 << 20
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_REF = re.compile(r"^@([a-z0-9][a-z0-9_-]*)\.([a-z0-9_]+)$")
_TOP_KEYS = {"schema_version", "name", "description", "workdir", "runs_db", "steps"}
_STEP_KEYS = {"name", "kind", "inputs", "params", "outputs", "description"}


@dataclass(frozen=True)
class InputRef:
    """One input path: a file/directory on disk, or an output of another step."""

    path: Path | None = None
    step: str | None = None
    output: str | None = None

    def describe(self) -> str:
        return f"@{self.step}.{self.output}" if self.step else str(self.path)


@dataclass(frozen=True, eq=False)
class StepSpec:
    name: str
    kind: StepKind
    inputs: Mapping[str, tuple[InputRef, ...]]
    params: Any  # the kind's parameters dataclass
    outputs: Mapping[str, Path]  # absolute final paths

    @property
    def depends_on(self) -> frozenset[str]:
        return frozenset(r.step for refs in self.inputs.values() for r in refs if r.step)


@dataclass(frozen=True, eq=False)
class PipelineSpec:
    name: str
    path: Path  # the pipeline file (absolute); inputs resolve against its directory
    text: str  # its exact text, recorded with every run (``runs reproduce`` re-reads it)
    workdir: Path
    runs_db: Path
    steps: tuple[StepSpec, ...]  # in dependency order
    description: str = ""

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise PipelineSpecError(
            f"no step {name!r} in pipeline {self.name} (steps: "
            + ", ".join(s.name for s in self.steps)
            + ")"
        )

    def dependants(self, name: str) -> set[str]:
        """Every step that depends on ``name``, directly or not."""
        out: set[str] = set()
        frontier = {name}
        while frontier:
            nxt = {s.name for s in self.steps if s.depends_on & frontier} - out
            out |= nxt
            frontier = nxt
        return out


def load_pipeline(
    path: str | Path,
    *,
    text: str | None = None,
    workdir: str | Path | None = None,
    runs_db: str | Path | None = None,
) -> PipelineSpec:
    """Read and check a pipeline file (``text`` given: parse it as if it were at ``path``).

    ``workdir`` and ``runs_db`` override the file's (e.g. a scratch directory for a test).
    """
    p = Path(path).resolve()
    if text is None:
        try:
            size = p.stat().st_size
            if size > MAX_PIPELINE_BYTES:
                raise PipelineSpecError(f"{p}: {size} bytes, over the {MAX_PIPELINE_BYTES} bound")
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise PipelineSpecError(f"cannot read pipeline {p}: {e.strerror or e}") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PipelineSpecError(f"{p}: not valid YAML ({one_line_error(e)})") from e
    spec = _parse(doc, p, text, workdir)
    if runs_db is not None:
        spec = dataclasses.replace(spec, runs_db=Path(runs_db).resolve())
    return spec


def _parse(doc: Any, path: Path, text: str, workdir_override: str | Path | None) -> PipelineSpec:
    if not isinstance(doc, dict):
        raise PipelineSpecError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise PipelineSpecError(f"{path}: {unknown[0]}: unknown key")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise PipelineSpecError(
            f"{path}: schema_version: expected {SCHEMA_VERSION}, got {doc.get('schema_version')!r}"
        )
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PipelineSpecError(f"{path}: name: expected [a-z0-9_-]+, got {name!r}")
    base = path.parent
    if workdir_override is not None:
        workdir = Path(workdir_override).resolve()
    else:
        wd = doc.get("workdir")
        if not isinstance(wd, str) or not wd:
            raise PipelineSpecError(f"{path}: workdir: expected a path")
        workdir = (base / wd).resolve()
    rdb = doc.get("runs_db")
    if rdb is None:
        runs_db = workdir / "runs.sqlite"
    elif isinstance(rdb, str) and rdb:
        runs_db = (base / rdb).resolve()
    else:
        raise PipelineSpecError(f"{path}: runs_db: expected a path")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PipelineSpecError(f"{path}: steps: expected a non-empty list")
    kinds = step_kinds()
    steps: dict[str, StepSpec] = {}
    for i, raw in enumerate(raw_steps):
        where = f"steps[{i}]"
        if not isinstance(raw, dict):
            raise PipelineSpecError(f"{where}: expected a mapping")
        unknown = sorted(set(raw) - _STEP_KEYS)
        if unknown:
            raise PipelineSpecError(f"{where}.{unknown[0]}: unknown key")
        sname = raw.get("name")
        if not isinstance(sname, str) or not _NAME.match(sname):
            raise PipelineSpecError(f"{where}.name: expected [a-z0-9_-]+, got {sname!r}")
        where = f"steps.{sname}"
        if sname in steps:
            raise PipelineSpecError(f"{where}: step defined twice")
        kind_name = raw.get("kind")
        if kind_name not in kinds:
            raise PipelineSpecError(
                f"{where}.kind: unknown step kind {kind_name!r} (known: "
                + ", ".join(sorted(kinds))
                + ")"
            )
        kind = kinds[kind_name]
        steps[sname] = StepSpec(
            name=sname,
            kind=kind,
            inputs=_parse_inputs(raw.get("inputs"), kind, base, where),
            params=parse_params(kind.params_type, raw.get("params"), f"{where}.params"),
            outputs=_parse_outputs(raw.get("outputs"), kind, workdir, sname, where),
        )
    _check_refs(steps)
    _check_output_clashes(steps)
    ordered = _toposort(steps)
    desc = doc.get("description", "")
    return PipelineSpec(
        name=name,
        path=path,
        text=text,
        workdir=workdir,
        runs_db=runs_db,
        steps=tuple(ordered),
        description=desc if isinstance(desc, str) else "",
    )


def _parse_inputs(
    raw: Any, kind: StepKind, base: Path, where: str
) -> dict[str, tuple[InputRef, ...]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineSpecError(f"{where}.inputs: expected a mapping")
    allowed = set(kind.inputs) | set(kind.optional_inputs)
    for k in raw:
        if k not in allowed:
            raise PipelineSpecError(
                f"{where}.inputs.{k}: unknown input of {kind.name} (known: "
                + ", ".join(sorted(allowed))
                + ")"
            )
    missing = [k for k in kind.inputs if k not in raw]
    if missing:
        raise PipelineSpecError(f"{where}.inputs.{missing[0]}: missing")
    out: dict[str, tuple[InputRef, ...]] = {}
    for k, v in raw.items():
        values = v if isinstance(v, list) else [v]
        refs: list[InputRef] = []
        for j, item in enumerate(values):
            w = f"{where}.inputs.{k}" + (f"[{j}]" if isinstance(v, list) else "")
            if not isinstance(item, str) or not item:
                raise PipelineSpecError(f"{w}: expected a path or @step.output, got {item!r}")
            if item.startswith("@"):
                m = _REF.match(item)
                if not m:
                    raise PipelineSpecError(f"{w}: expected @step.output, got {item!r}")
                refs.append(InputRef(step=m.group(1), output=m.group(2)))
            else:
                refs.append(InputRef(path=(base / item).resolve()))
        out[k] = tuple(refs)
    return out


def _parse_outputs(
    raw: Any, kind: StepKind, workdir: Path, step: str, where: str
) -> dict[str, Path]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineSpecError(f"{where}.outputs: expected a mapping")
    names = {o.name for o in kind.outputs}
    for k, v in raw.items():
        if k not in names:
            raise PipelineSpecError(
                f"{where}.outputs.{k}: {kind.name} has no such output (outputs: "
                + ", ".join(sorted(names))
                + ")"
            )
        if not isinstance(v, str) or not v or Path(v).is_absolute() or ".." in Path(v).parts:
            raise PipelineSpecError(f"{where}.outputs.{k}: expected a path inside workdir")
    return {
        o.name: (workdir / raw.get(o.name, f"{step}/{o.filename}")).resolve() for o in kind.outputs
    }


def _check_refs(steps: Mapping[str, StepSpec]) -> None:
    for s in steps.values():
        for k, refs in s.inputs.items():
            for r in refs:
                if r.step is None:
                    continue
                where = f"steps.{s.name}.inputs.{k}"
                if r.step not in steps:
                    raise PipelineSpecError(f"{where}: no step named {r.step!r}")
                if r.output not in steps[r.step].outputs:
                    raise PipelineSpecError(
                        f"{where}: step {r.step} has no output {r.output!r} (outputs: "
                        + ", ".join(sorted(steps[r.step].outputs))
                        + ")"
                    )


def _check_output_clashes(steps: Mapping[str, StepSpec]) -> None:
    seen: dict[Path, str] = {}
    for s in steps.values():
        for k, p in s.outputs.items():
            for q, who in seen.items():
                if p == q or p.is_relative_to(q) or q.is_relative_to(p):
                    raise PipelineSpecError(
                        f"steps.{s.name}.outputs.{k}: {p} overlaps the output of {who}"
                    )
            seen[p] = f"{s.name}.{k}"


def _toposort(steps: Mapping[str, StepSpec]) -> list[StepSpec]:
    """Dependency order, keeping the file's order among independent steps; cycles rejected."""
    position = {name: i for i, name in enumerate(steps)}
    graph = graphlib.TopologicalSorter({s.name: s.depends_on for s in steps.values()})
    try:
        graph.prepare()
    except graphlib.CycleError as e:
        cycle = ", ".join(dict.fromkeys(e.args[1]))
        raise PipelineSpecError(f"steps form a dependency cycle: {cycle}") from None
    done: list[StepSpec] = []
    ready: list[str] = []
    while graph.is_active():
        ready = sorted({*ready, *graph.get_ready()}, key=position.__getitem__)
        first = ready.pop(0)  # the first ready step in file order, as a reader expects
        done.append(steps[first])
        graph.done(first)
    return done
