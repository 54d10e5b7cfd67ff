"""Bundle build (version checks, byte-identical rebuilds), verification and the device store."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import (
    Bundle,
    BundleInputError,
    BundleInputs,
    BundleStore,
    BundleVerifyError,
    HealthCheckError,
    build_bundle,
    default_health_check,
)
from sync._fixtures import base_manifest, composed, tiles_meta, write_inputs
from tests.sync.conftest import accept_all


@pytest.fixture
def inputs(tmp_path: Path, monaco_tiles: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    m = base_manifest(tiles_meta(monaco_tiles)["source_sha256"])
    return m, write_inputs(tmp_path / "in", monaco_tiles, m)


def _inputs(p: dict[str, Path]) -> BundleInputs:
    return BundleInputs(p["tiles"], p["demand"], p["params"], p["area"])


def test_rebuild_gives_the_same_bytes(tmp_path: Path, inputs: Any) -> None:
    m, p = inputs
    a = build_bundle(composed(m), _inputs(p), tmp_path / "a")
    b = build_bundle(composed(m), _inputs(p), tmp_path / "b")
    assert a.bundle_id == b.bundle_id == a.path.name
    files_a = sorted(x.relative_to(a.path) for x in a.path.rglob("*") if x.is_file())
    files_b = sorted(x.relative_to(b.path) for x in b.path.rglob("*") if x.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes()
    assert set(a.files) == {
        "tiles.sqlite",
        "demand/demand.npz",
        "demand/demand.json",
        "params.yaml",
        "area.geojson",
        "ATTRIBUTION.txt",
    }
    assert "OpenStreetMap contributors" in (a.path / "ATTRIBUTION.txt").read_text()
    assert "ODbL" in (a.path / "ATTRIBUTION.txt").read_text()
    again = build_bundle(composed(m), _inputs(p), tmp_path / "a")  # already there: kept
    assert again.bundle_id == a.bundle_id
    default_health_check(a)


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("statistical_demand", "stat-other", r"statistical_demand\.version \(demand\.json\)"),
        ("planner_parameters", "params-9", r"planner_parameters\.version \(params\.yaml\)"),
        ("business_area", "area-9", r"business_area\.version \(area\.geojson\)"),
        ("cost_features", "cost-9", r"cost_features\.version \(params\.yaml\)"),
        ("predicted_demand", "gbr-1", r"model spec missing"),
    ],
)
def test_build_refuses_a_version_mismatch(
    tmp_path: Path, inputs: Any, section: str, value: str, message: str
) -> None:
    m, p = inputs
    m[section]["version"] = value
    with pytest.raises(BundleInputError, match=message):
        build_bundle(composed(m), _inputs(p), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_build_refuses_tiles_of_another_network(
    tmp_path: Path, inputs: Any, shibuya_tiles: Path
) -> None:
    m, p = inputs
    p = dict(p, tiles=shibuya_tiles)
    with pytest.raises(BundleInputError, match=r"road_network\.source_sha256"):
        build_bundle(composed(m), _inputs(p), tmp_path / "out")


def test_build_refuses_demand_of_another_network(tmp_path: Path, inputs: Any) -> None:
    m, p = inputs
    doc = json.loads((p["demand"] / "demand.json").read_text())
    doc["network_sha256"] = "0" * 64
    (p["demand"] / "demand.json").write_text(json.dumps(doc))
    with pytest.raises(BundleInputError, match="demand table was built on network"):
        build_bundle(composed(m), _inputs(p), tmp_path / "out")


def test_model_files_follow_the_manifest_and_the_release_gate(tmp_path: Path, inputs: Any) -> None:
    m, p = inputs
    d = p["demand"]

    def spec(version: str, shipped: bool) -> None:
        doc = {"schema_version": 1, "version": version, "shipped": shipped}
        (d / "model.json").write_text(json.dumps(doc))

    # the model lost at the gate: statistics only, model.json (the decision) ships along
    spec("gbr-7", shipped=False)
    b = build_bundle(composed(m), _inputs(p), tmp_path / "none")
    assert "demand/model.json" in b.files and b.onnx_path is None
    default_health_check(b)
    m["predicted_demand"]["version"] = "gbr-7"
    with pytest.raises(BundleInputError, match="did not pass the release gate"):
        build_bundle(composed(m), _inputs(p), tmp_path / "out")
    spec("gbr-6", shipped=True)
    with pytest.raises(BundleInputError, match=r"predicted_demand\.version \(model\.json\)"):
        build_bundle(composed(m), _inputs(p), tmp_path / "out")
    spec("gbr-7", shipped=True)
    (d / "model.onnx").write_bytes(b"not really onnx")
    with pytest.raises(BundleInputError, match=r"features\.npz"):
        build_bundle(composed(m), _inputs(p), tmp_path / "out")
    (d / "features.npz").write_bytes(b"not really npz")
    b = build_bundle(composed(m), _inputs(p), tmp_path / "out")
    assert {"demand/model.onnx", "demand/model.json", "demand/features.npz"} <= set(b.files)
    assert b.onnx_path is not None and b.onnx_path.is_file()
    # models/ refuses this model spec when loading it: the health check says so
    with pytest.raises(HealthCheckError, match="demand does not load"):
        default_health_check(b)
    m["predicted_demand"]["version"] = "none"
    with pytest.raises(BundleInputError, match="ships model 'gbr-7'"):
        build_bundle(composed(m), _inputs(p), tmp_path / "out2")


def test_default_health_check_probes_a_real_onnx_model(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from sync import probe_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    ok = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    bad = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
                "c", TensorProto.FLOAT, [1], [np.nan])),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        "g", [x], [y],
    )  # fmt: skip
    for name, graph in (("ok", ok), ("nan", bad)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, tmp_path / f"{name}.onnx")
    probe_onnx(str(tmp_path / "ok.onnx"))
    with pytest.raises(HealthCheckError, match="NaN"):
        probe_onnx(str(tmp_path / "nan.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(HealthCheckError, match="does not load"):
        probe_onnx(str(tmp_path / "junk.onnx"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove", "extra", "manifest"])
def test_verify_detects_damage(tmp_path: Path, inputs: Any, damage: str) -> None:
    m, p = inputs
    b = build_bundle(composed(m), _inputs(p), tmp_path / "out")
    copy = tmp_path / "copy" / b.bundle_id
    shutil.copytree(b.path, copy)
    target = copy / "demand" / "demand.json"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[5] ^= 1
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-1])
    elif damage == "remove":
        target.unlink()
    elif damage == "extra":
        (copy / "demand" / "stray.bin").write_bytes(b"x")
    else:
        (copy / "manifest.yaml").write_text((copy / "manifest.yaml").read_text() + "\n")
    with pytest.raises(BundleVerifyError):
        Bundle(copy).verify()


def test_store_gc_keeps_current_and_last_good(tmp_path: Path, bundle_pair: Any) -> None:
    store = BundleStore(tmp_path / "dev")
    ids = []
    for name in ("v1", "v2", "v3"):
        b = bundle_pair[name]
        staged = store.staging_path(b.bundle_id)
        shutil.copytree(b.path, staged)
        store.install(staged, b.bundle_id)
        ids.append(b.bundle_id)
    store.activate(ids[0], trial=False)
    store.activate(ids[1], trial=True)  # v2 on trial, v1 last good
    (store.staging_dir / "abandoned").mkdir()
    store.gc()
    assert set(store.installed()) == {ids[0], ids[1]}
    assert not list(store.staging_dir.iterdir())
    assert store.rollback("test") == ids[0]
    assert store.pointer().current == ids[0] and ids[1] in store.pointer().rejected
    store.gc()
    assert store.installed() == [ids[0]]
    store.try_bundle(ids[0], accept_all)  # already current and good: nothing to do


def test_health_check_refuses_mismatched_demand_and_broken_tiles(
    tmp_path: Path, inputs: Any
) -> None:
    m, p = inputs
    b = build_bundle(composed(m), _inputs(p), tmp_path / "out")
    bad = tmp_path / "bad" / b.bundle_id
    shutil.copytree(b.path, bad)
    default_health_check(Bundle(bad))
    doc = json.loads((bad / "demand" / "demand.json").read_text())
    doc["network_sha256"] = "0" * 64  # demand of another network (health, not hashes)
    (bad / "demand" / "demand.json").write_text(json.dumps(doc))
    with pytest.raises(HealthCheckError, match="demand table is for network"):
        default_health_check(Bundle(bad))
    (bad / "tiles.sqlite").write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    with pytest.raises(HealthCheckError, match="tiles do not open"):
        default_health_check(Bundle(bad))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["install", "try", "activate", "commit", "rollback", "gc"]),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_store_invariants_under_any_sequence(
    tmp_path_factory: Any, bundle_pair: Any, ops: Any
) -> None:
    """Whatever happens, ``current`` and ``last_good`` name installed, intact bundles."""
    store = BundleStore(tmp_path_factory.mktemp("dev"))
    bundles = [bundle_pair[k] for k in ("v1", "v2", "v3")]

    def fails_for_v3(b: Bundle) -> None:
        if b.bundle_id == bundles[2].bundle_id:
            raise RuntimeError("no route")

    for op, k in ops:
        b = bundles[k]
        if op == "install":
            staged = store.staging_path(b.bundle_id)
            if not store.bundle_path(b.bundle_id).exists():
                shutil.copytree(b.path, staged, copy_function=os.link)
                store.install(staged, b.bundle_id)
        elif op in ("try", "activate") and store.bundle_path(b.bundle_id).exists():
            if op == "try":
                before = store.pointer()
                with contextlib.suppress(HealthCheckError):
                    store.try_bundle(b.bundle_id, fails_for_v3)
                after = store.pointer()
                if before.current == b.bundle_id and not before.trial:
                    assert after == before  # already current and committed: nothing to try
                elif k == 2:  # failed its check: rolled back and remembered
                    assert after.current != b.bundle_id and b.bundle_id in after.rejected
                else:
                    assert after.current == after.last_good == b.bundle_id and not after.trial
            else:
                store.activate(b.bundle_id, trial=True)
        elif op == "commit":
            store.commit()
        elif op == "rollback":
            store.rollback("test")
        elif op == "gc":
            store.gc()
        p = store.pointer()
        for bid in (p.current, p.last_good):
            if bid is not None:
                Bundle(store.bundle_path(bid)).verify()
        assert not p.trial or p.current is not None
        if not p.trial and p.current is not None:
            assert p.last_good == p.current
