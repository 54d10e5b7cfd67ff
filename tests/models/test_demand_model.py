"""The ONNX predicted-demand model: training, device inference and its typed failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import DemandDataError, DemandTable, ModelOutputError, TickDemand
from models.features import FEATURES, STATIC_FEATURES
from models.predict import DemandModel, InferenceConfig, open_demand, statistical_tick
from tiles import TileStore

TUE_18H = 1 * 1440 + 18 * 60


@pytest.fixture(scope="module")
def near_links(manhattan_tiles: Path) -> np.ndarray:
    with TileStore(manhattan_tiles) as store:
        g = store.radius_graph(-73.9855, 40.7580, 1500.0)
        return g.edge_id[g.cruise_allowed()].astype(np.int64)


def test_model_json_names_its_features_and_matches_sklearn(trained_model_dir: Path) -> None:
    doc = json.loads((trained_model_dir / "model.json").read_text())
    assert doc["features"] == list(FEATURES)
    assert doc["input"] == {"name": "X", "dtype": "float32", "shape": [None, len(FEATURES)]}
    assert doc["output"]["name"] == "rate" and doc["output_is_log"] is False
    t = doc["training"]
    assert 1 <= t["n_estimators_selected"] <= 20
    assert t["onnx_parity_max_rel_diff"] < 1e-4
    reuven = next(f for f in t["train_files"] if f["mode"] == "windows")
    assert reuven["windows_used"] == [0, 1] and len(reuven["windows"]) == 4
    # what the model learns from: yellow-cab street hails only here (no app pickups)
    assert [f["format"] for f in t["train_files"]] == ["gcp8", "tlc2015"]
    assert doc["target"].startswith("street hails per hour")
    static = np.load(trained_model_dir / "features.npz")["static"]
    assert static.shape[1] == len(STATIC_FEATURES)


def test_training_again_gives_the_same_bytes(
    trained_model_dir: Path, manhattan_tiles: Path, tmp_path: Path
) -> None:
    """Same inputs and configuration: the same model.onnx bytes and model version (replay and
    `nagashi runs reproduce` depend on it)."""
    from models.train import TrainConfig, train_model
    from tests.conftest import TRIPS
    from tests.models.conftest import TRAIN_WINDOWS

    out = tmp_path / "again"
    with TileStore(manhattan_tiles) as store:
        train_model(
            store,
            [TRIPS["gcp_train"], TRIPS["reuven_2015_06"]],
            [TRIPS["gcp_valid"]],
            out,
            train_windows=TRAIN_WINDOWS,
            config=TrainConfig(n_estimators_max=20),
        )
    assert (out / "model.onnx").read_bytes() == (trained_model_dir / "model.onnx").read_bytes()
    a = json.loads((out / "model.json").read_text())
    b = json.loads((trained_model_dir / "model.json").read_text())
    assert a["version"] == b["version"]


def test_tick_from_model_and_from_statistics(
    trained_model_dir: Path, near_links: np.ndarray
) -> None:
    table, model = open_demand(trained_model_dir)
    assert model is not None
    tick = model.tick(near_links, TUE_18H, horizon_min=60)
    stat = statistical_tick(table, near_links, TUE_18H, horizon_min=60)
    assert tick.source == f"onnx:{model.version}"
    assert stat.source == f"statistical:{table.version}"
    assert tick.pickups_per_h.shape == stat.pickups_per_h.shape == (3, near_links.size)
    assert np.array_equal(tick.slot_minute_of_week, stat.slot_minute_of_week)
    assert np.all(np.isfinite(tick.pickups_per_h)) and np.all(tick.pickups_per_h > 0)
    # a correction of statistics, not a different world: totals within a factor of 3
    ratio = tick.pickups_per_h.sum() / stat.pickups_per_h.sum()
    assert 1 / 3 < ratio < 3
    # what the trip log stores comes back exactly
    back = TickDemand.from_record(tick.to_record())
    assert np.array_equal(back.pickups_per_h, tick.pickups_per_h)
    assert back.source == tick.source


def test_thread_count_is_configurable_and_does_not_change_answers(
    trained_model_dir: Path, near_links: np.ndarray
) -> None:
    one = DemandModel(trained_model_dir)
    two = DemandModel(trained_model_dir, config=InferenceConfig(intra_op_threads=2))
    mins = [TUE_18H, TUE_18H + 30]
    np.testing.assert_allclose(one.rates(near_links, mins), two.rates(near_links, mins), rtol=1e-6)


def test_edges_outside_the_network_are_rejected(trained_model_dir: Path) -> None:
    model = DemandModel(trained_model_dir)
    with pytest.raises(DemandDataError, match="outside"):
        model.rates([model.table.n_edges], [TUE_18H])


# --- broken files --------------------------------------------------------------------------


def test_missing_model_file(model_copy: Path) -> None:
    (model_copy / "model.onnx").unlink()
    with pytest.raises(DemandDataError, match="missing"):
        DemandModel(model_copy)


def test_truncated_model_file(model_copy: Path) -> None:
    p = model_copy / "model.onnx"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DemandDataError, match="does not load"):
        DemandModel(model_copy)


def test_corrupt_model_json(model_copy: Path) -> None:
    p = model_copy / "model.json"
    p.write_text(p.read_text()[:100])
    with pytest.raises(DemandDataError, match="corrupt"):
        DemandModel(model_copy)


def test_feature_spec_mismatch(model_copy: Path) -> None:
    p = model_copy / "model.json"
    doc = json.loads(p.read_text())
    doc["features"] = doc["features"][::-1]
    p.write_text(json.dumps(doc))
    with pytest.raises(DemandDataError, match="feature spec"):
        DemandModel(model_copy)


def test_static_features_of_another_network(model_copy: Path) -> None:
    static = np.load(model_copy / "features.npz")["static"]
    np.savez(model_copy / "features.npz", static=static[:-5])
    with pytest.raises(DemandDataError, match="shape"):
        DemandModel(model_copy)


def _write_graph(
    path: Path,
    n_in: int,
    body: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    in_name: str = "X",
    out_name: str = "rate",
) -> None:
    graph = helper.make_graph(
        body,
        "broken",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [None, n_in])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [None, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _first_column_times(k: float) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """rate = X[:, 0:1] * k (X[:, 0] is the highway code, >= 0)."""
    nodes = [
        helper.make_node("Gather", ["X", "idx"], ["col"], axis=1),
        helper.make_node("Mul", ["col", "k"], ["rate"]),
    ]
    inits = [
        helper.make_tensor("idx", TensorProto.INT64, [1], [0]),
        helper.make_tensor("k", TensorProto.FLOAT, [1], [k]),
    ]
    return nodes, inits


def test_wrong_input_width(model_copy: Path) -> None:
    nodes, inits = _first_column_times(1.0)
    _write_graph(model_copy / "model.onnx", len(FEATURES) - 1, nodes, inits)
    with pytest.raises(DemandDataError, match="input shape"):
        DemandModel(model_copy)


def test_wrong_input_name(model_copy: Path) -> None:
    nodes = [helper.make_node("Gather", ["features", "idx"], ["rate"], axis=1)]
    inits = [helper.make_tensor("idx", TensorProto.INT64, [1], [0])]
    _write_graph(model_copy / "model.onnx", len(FEATURES), nodes, inits, in_name="features")
    with pytest.raises(DemandDataError, match="inputs"):
        DemandModel(model_copy)


@pytest.mark.parametrize(
    ("k", "match"),
    [(-1.0, "negative"), (float("nan"), "NaN"), (1e9, "absurd")],
)
def test_bad_outputs_are_typed(
    model_copy: Path, near_links: np.ndarray, k: float, match: str
) -> None:
    nodes, inits = _first_column_times(k)
    _write_graph(model_copy / "model.onnx", len(FEATURES), nodes, inits)
    model = DemandModel(model_copy)  # the signature is right: it loads
    with pytest.raises(ModelOutputError, match=match):
        model.tick(near_links, TUE_18H, horizon_min=30)


def test_statistics_version_mismatch(model_copy: Path) -> None:
    table = DemandTable.load(model_copy)
    fields = {f: getattr(table, f) for f in table.__dataclass_fields__}
    DemandTable(**{**fields, "version": "stat-other"}).save(model_copy)
    with pytest.raises(DemandDataError, match="trained with statistics"):
        DemandModel(model_copy)


class _CountingSession:
    """Delegates to the real onnxruntime session and counts calls."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0
        self.rows: list[int] = []

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        self.rows.append(next(iter(feed.values())).shape[0])
        return self.inner.run(names, feed)  # type: ignore[attr-defined,no-any-return]  # onnxruntime ships no type stubs


def test_one_batched_call_per_tick(trained_model_dir: Path, near_links: np.ndarray) -> None:
    model = DemandModel(trained_model_dir)
    counting = _CountingSession(model.session)
    model.session = counting
    tick = model.tick(near_links, TUE_18H + 10, horizon_min=60)
    assert counting.calls == 1 and counting.rows == [near_links.size]
    # the current slot is the model's own answer; later slots carry its correction of statistics
    now = model.rates(near_links, [TUE_18H])[0]
    np.testing.assert_allclose(tick.pickups_per_h[0], now, rtol=1e-5)
    stat = np.maximum(model.table.rates(near_links, tick.slot_minute_of_week), 1e-3)
    np.testing.assert_allclose(
        tick.pickups_per_h[1:] / stat[1:], np.broadcast_to(now / stat[0], stat[1:].shape), rtol=1e-4
    )
