"""Version manifests: composing is deterministic, strict, and errors name the key path."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import ManifestError, compose, diff, manifest_hash
from sync.manifest import compose_docs

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "manifests" / "base.yaml"
OVERLAYS = REPO / "manifests" / "overlays"


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)  # the example manifests are mappings
    return doc


def _base() -> dict[str, Any]:
    return _load(BASE)


def _overlay(area: str) -> dict[str, Any]:
    return _load(OVERLAYS / f"{area}.yaml")


@pytest.mark.parametrize("area", ["manhattan", "shibuya"])
def test_example_manifests_compose(area: str) -> None:
    c = compose(BASE, OVERLAYS / f"{area}.yaml")
    assert c.manifest["area"] == area
    assert "inputs" not in c.manifest and set(c.inputs) == {"tiles", "demand", "params", "area"}
    assert c.inputs["tiles"] == (REPO / "build" / area / "tiles.sqlite").resolve()
    assert c.sha256 == manifest_hash(yaml.safe_load(c.to_yaml()))  # the printed text rehashes
    assert len(c.sha256) == 64


def test_overlay_overrides_and_merges() -> None:
    c = compose(BASE, OVERLAYS / "shibuya.yaml")
    regs = c.manifest["regulation_patterns"]
    assert regs == {"A": {"version": 3}, "B": {"version": 3}}  # B overridden, A kept
    assert c.manifest["cost_features"] == _base()["cost_features"]


def _shuffled(doc: Any, rng: random.Random) -> Any:
    if isinstance(doc, dict):
        items = list(doc.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    return doc


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_compose_is_deterministic_whatever_the_key_order(seed: int) -> None:
    rng = random.Random(seed)
    ref = compose_docs(_base(), [_overlay("manhattan")])
    c = compose_docs(_shuffled(_base(), rng), [_shuffled(_overlay("manhattan"), rng)])
    assert c.to_yaml() == ref.to_yaml() and c.sha256 == ref.sha256


@settings(max_examples=30, deadline=None)
@given(version=st.text(min_size=1, max_size=20))
def test_hash_changes_with_any_version(version: str) -> None:
    ref = compose_docs(_base(), [_overlay("manhattan")])
    over = _overlay("manhattan")
    over["planner_parameters"] = {"version": version}
    c = compose_docs(_base(), [over])
    assert (c.sha256 == ref.sha256) == (version == ref.manifest["planner_parameters"]["version"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.update(colour="red"), "colour: unknown key"),
        (lambda o: o["road_network"].update(verison="x"), "road_network.verison: unknown key"),
        (lambda o: o["business_area"].pop("version"), "business_area.version: missing"),
        (lambda o: o.pop("road_network"), "road_network: missing"),
        (lambda o: o["road_network"].update(version=7), "road_network.version: expected"),
        (lambda o: o.update(regulation_patterns={"A": {"version": "3"}}), "regulation_patterns.A"),
        (lambda o: o["road_network"].update(source_sha256="abc"), "road_network.source_sha256"),
        (lambda o: o.update(area="Bad Area"), "area: expected an area name"),
        (lambda o: o.update(statistical_demand="v1"), "statistical_demand: expected a mapping"),
    ],
)
def test_compose_rejects_with_the_key_path(mutate: Any, message: str) -> None:
    over = copy.deepcopy(_overlay("manhattan"))
    mutate(over)
    with pytest.raises(ManifestError, match=message.replace(".", r"\.")):
        compose_docs(_base(), [over])


def test_base_without_schema_version_is_rejected() -> None:
    base = _base()
    base.pop("schema_version")
    over = _overlay("manhattan")
    over.pop("schema_version")
    with pytest.raises(ManifestError, match="schema_version: missing"):
        compose_docs(base, [over])


def test_unreadable_manifest_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        compose(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(ManifestError, match="not a readable YAML"):
        compose(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ManifestError, match="mapping at the top level"):
        compose(lst)


def test_diff_reports_changed_added_removed() -> None:
    a = compose_docs(_base(), [_overlay("manhattan")]).manifest
    b = copy.deepcopy(a)
    b["planner_parameters"]["version"] = "planner-2"
    b["regulation_patterns"]["C"] = {"version": 1}
    del b["description"]
    changes = diff(a, b)
    assert ("~", "planner_parameters.version", "planner-2026.12.1", "planner-2") in changes
    assert ("+", "regulation_patterns.C.version", None, 1) in changes
    assert ("-", "description", "nagashi fleet defaults", None) in changes
    assert len(changes) == 3
    assert diff(a, a) == []
