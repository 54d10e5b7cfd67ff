"""Version manifests: ``base.yaml`` plus an area overlay, composed deterministically and hashed.

A manifest names the version of every input of a bundle. The schema (``schema_version: 1``)::

    schema_version: 1
    area: manhattan                  # set by the overlay
    description: "..."               # optional
    road_network:       {version: str, source_sha256: 64 hex (OSM extract the tiles came from)}
    statistical_demand: {version: str}
    predicted_demand:   {version: str}            # "none": statistics only, no ONNX model
    regulation_patterns: {<pattern name>: {version: int}, ...}   # e.g. A: {version: 3}
    cost_features:      {version: str}            # driving-cost feature extraction queries
    business_area:      {version: str, name: str (optional)}
    planner_parameters: {version: str}
    fleet_supply:       {version: str}            # optional: the bundle ships supply.npz (the
                        # fleet's usual vacant passes, models.SupplyTable.version)
    inputs:             {tiles: path, demand: path, params: path, area: path,
                         supply: path}                                        # optional,
                        # build-side only, relative to the manifest file; never in a bundle

Composing deep-merges the overlay over the base (mappings merge, anything else is replaced).
Both documents are checked for unknown keys and wrong types, and the result for missing
versions; every error names its key path (``road_network.version``). The composed manifest is
printed as YAML with sorted keys; its hash is the sha256 of its canonical JSON form, so it does
not depend on YAML formatting.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sync._fs import read_bounded
from sync.errors import ManifestError
from tiles.fileio import one_line_error

SCHEMA_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20
NO_MODEL = "none"
INPUT_KEYS = ("tiles", "demand", "params", "area", "supply")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AREA = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# field spec: a type name, or a nested dict (a section with fixed keys).
_VERSION_STR = {"version": "str!"}
SCHEMA: dict[str, Any] = {
    "schema_version": "int!",
    "area": "area",
    "description": "str",
    "road_network": {"version": "str!", "source_sha256": "hex64!"},
    "statistical_demand": dict(_VERSION_STR),
    "predicted_demand": dict(_VERSION_STR),
    "regulation_patterns": ("map", {"version": "int!"}),
    "cost_features": dict(_VERSION_STR),
    "business_area": {"version": "str!", "name": "str"},
    "planner_parameters": dict(_VERSION_STR),
    "fleet_supply": dict(_VERSION_STR),
    "inputs": {k: "str" for k in INPUT_KEYS},
}
#: sections every composed manifest must have
REQUIRED_SECTIONS = (
    "road_network",
    "statistical_demand",
    "predicted_demand",
    "regulation_patterns",
    "cost_features",
    "business_area",
    "planner_parameters",
)


def _type_name(v: Any) -> str:
    return type(v).__name__ if v is not None else "null"


def _check(doc: Any, spec: Any, path: str, *, complete: bool, errors: list[str]) -> None:
    where = path or "(top level)"
    if isinstance(spec, dict):
        if not isinstance(doc, dict):
            errors.append(f"{where}: expected a mapping, got {_type_name(doc)}")
            return
        for k in doc:
            if not isinstance(k, str):
                errors.append(f"{where}: key {k!r} is not a string")
            elif k not in spec:
                errors.append(f"{path + '.' if path else ''}{k}: unknown key")
        for k, sub in spec.items():
            kp = f"{path}.{k}" if path else k
            if k in doc:
                _check(doc[k], sub, kp, complete=complete, errors=errors)
            elif complete and isinstance(sub, str) and sub.endswith("!"):
                errors.append(f"{kp}: missing")
        return
    if isinstance(spec, tuple):  # ("map", entry spec): free names, fixed entry shape
        if not isinstance(doc, dict):
            errors.append(f"{where}: expected a mapping, got {_type_name(doc)}")
            return
        for k, v in doc.items():
            if not isinstance(k, str) or not k:
                errors.append(f"{where}: key {k!r} is not a non-empty string")
                continue
            _check(v, spec[1], f"{path}.{k}", complete=complete, errors=errors)
        return
    kind = spec.rstrip("!")
    if kind == "int":
        if not isinstance(doc, int) or isinstance(doc, bool):
            errors.append(f"{where}: expected an integer, got {_type_name(doc)} {doc!r}")
    elif kind == "str":
        if not isinstance(doc, str) or not doc:
            hint = " (quote it)" if isinstance(doc, int | float) else ""
            errors.append(
                f"{where}: expected a non-empty string, got {_type_name(doc)} {doc!r}{hint}"
            )
    elif kind == "hex64":
        if not isinstance(doc, str) or not _HEX64.match(doc):
            errors.append(f"{where}: expected 64 lowercase hex digits (sha256), got {doc!r}")
    elif kind == "area":
        if not isinstance(doc, str) or not _AREA.match(doc):
            errors.append(f"{where}: expected an area name [a-z0-9_-], got {doc!r}")
    else:  # pragma: no cover - schema bug
        raise AssertionError(kind)


def validate(doc: Any, *, complete: bool, source: str = "manifest") -> None:
    """Check ``doc`` against the schema; ``complete`` also requires every version."""
    errors: list[str] = []
    _check(doc, SCHEMA, "", complete=complete, errors=errors)
    if isinstance(doc, dict):
        if "schema_version" in doc and doc["schema_version"] != SCHEMA_VERSION and not errors:
            errors.append(
                f"schema_version: {doc['schema_version']} is not supported "
                f"(this nagashi reads {SCHEMA_VERSION})"
            )
        if complete:
            for section in REQUIRED_SECTIONS:
                if section not in doc:
                    errors.append(f"{section}: missing")
            regs = doc.get("regulation_patterns")
            if isinstance(regs, dict) and not regs:
                errors.append("regulation_patterns: no pattern named (need at least one)")
    if errors:
        raise ManifestError(f"{source}: " + "; ".join(sorted(set(errors))))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse one manifest file (bounded, safe YAML); the mapping it holds."""
    p = Path(path)
    try:
        text = read_bounded(p, MAX_MANIFEST_BYTES).decode("utf-8")
        doc = yaml.safe_load(text)
    except FileNotFoundError as e:
        raise ManifestError(f"manifest not found: {p}") from e
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ManifestError(f"{p}: not a readable YAML manifest ({one_line_error(e)})") from e
    if not isinstance(doc, dict):
        raise ManifestError(f"{p}: expected a mapping at the top level")
    return doc


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_hash(doc: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a composed manifest (without its build-only inputs)."""
    return hashlib.sha256(canonical_json(without_inputs(doc))).hexdigest()


def without_inputs(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "inputs"}


def dump_yaml(doc: Mapping[str, Any]) -> str:
    """Deterministic YAML: sorted keys, block style, UTF-8."""
    return yaml.safe_dump(
        dict(doc), sort_keys=True, default_flow_style=False, allow_unicode=True, width=100
    )


@dataclass(frozen=True)
class Composed:
    """A composed manifest; ``inputs`` are absolute paths (build side only)."""

    manifest: dict[str, Any]  # without ``inputs``
    sha256: str
    inputs: dict[str, Path]

    def to_yaml(self) -> str:
        return dump_yaml(self.manifest)


def compose_docs(
    base: Mapping[str, Any],
    overlays: Sequence[Mapping[str, Any]],
    *,
    base_dir: Path | None = None,
    overlay_dirs: list[Path] | None = None,
    names: list[str] | None = None,
) -> Composed:
    """Compose parsed documents; ``*_dir`` resolve relative ``inputs`` paths."""
    labels = names or ["base", *[f"overlay {i + 1}" for i in range(len(overlays))]]
    validate(base, complete=False, source=labels[0])
    inputs: dict[str, Path] = {}
    over_dirs: list[Path | None] = list(overlay_dirs) if overlay_dirs else [None] * len(overlays)
    dirs: list[Path | None] = [base_dir, *over_dirs]
    docs = [base, *overlays]
    for i, over in enumerate(overlays):
        validate(over, complete=False, source=labels[i + 1])
    for doc, d in zip(docs, dirs, strict=True):
        for k, v in (doc.get("inputs") or {}).items():
            inputs[k] = (d / v).resolve() if d is not None else Path(v)
    merged: Any = dict(base)
    for over in overlays:
        merged = _merge(merged, over)
    merged.pop("inputs", None)
    validate(merged, complete=True, source="composed manifest")
    return Composed(manifest=merged, sha256=manifest_hash(merged), inputs=inputs)


def compose(base: str | Path, *overlays: str | Path) -> Composed:
    """``nagashi manifest compose base.yaml overlays/x.yaml``."""
    paths = [Path(base), *(Path(o) for o in overlays)]
    docs = [load_yaml(p) for p in paths]
    return compose_docs(
        docs[0],
        docs[1:],
        base_dir=paths[0].resolve().parent,
        overlay_dirs=[p.resolve().parent for p in paths[1:]],
        names=[str(p) for p in paths],
    )


def load_composed(path: str | Path) -> Composed:
    """A manifest that is already composed (one file), validated as complete."""
    return compose(path)


def _flatten(doc: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(doc, dict) and doc:
        for k in sorted(doc, key=str):
            _flatten(doc[k], f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = doc


def diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """Changes from ``a`` to ``b``: (op, key path, old, new) with op ``+``, ``-`` or ``~``."""
    fa: dict[str, Any] = {}
    fb: dict[str, Any] = {}
    _flatten(dict(a), "", fa)
    _flatten(dict(b), "", fb)
    out: list[tuple[str, str, Any, Any]] = []
    for key in sorted(set(fa) | set(fb)):
        if key not in fb:
            out.append(("-", key, fa[key], None))
        elif key not in fa:
            out.append(("+", key, None, fb[key]))
        elif fa[key] != fb[key]:
            out.append(("~", key, fa[key], fb[key]))
    return out
