"""The link model's ONNX graph (see :mod:`models.train`): sklearn's trees converted by
skl2onnx, then the clamp at ``C_FLOOR`` and the product with ``exp(stat_log_rate)`` as nodes
inside the graph (:func:`to_onnx`), checked against sklearn (:func:`onnx_parity`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.features import FEATURES, STAT_LOG_RATE_INDEX

F32 = npt.NDArray[np.float32]

C_FLOOR = 0.05  # the model never predicts less than 5 % of statistics
INPUT_NAME = "X"
OUTPUT_NAME = "rate"


def sort_opsets(onx: Any) -> None:
    """Put the model's opset imports in domain order, in place.

    skl2onnx collects the (domain, version) pairs its nodes use in a set, so their order (and
    with it the model's bytes and version) changes with the interpreter's string-hash seed:
    the same training gave another model version about one run in five."""
    pairs = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in pairs:
        op = onx.opset_import.add()
        op.domain, op.version = domain, version


def to_onnx(model: Any) -> bytes:
    """The ONNX graph: sklearn's trees, then the clamp and the product with statistics."""
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURES)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        # a fixed graph name: skl2onnx otherwise names the graph with a random id, and the
        # same training would give different bytes (and model version) every time
        name="nagashi_demand_correction",
    )
    graph = onx.graph
    raw_name = graph.output[0].name
    nodes = [
        helper.make_node("Max", [raw_name, "c_floor"], ["correction"]),
        helper.make_node("Gather", [INPUT_NAME, "stat_index"], ["stat_log_rate"], axis=1),
        helper.make_node("Exp", ["stat_log_rate"], ["stat_rate"]),
        helper.make_node("Mul", ["correction", "stat_rate"], [OUTPUT_NAME]),
    ]
    graph.node.extend(nodes)
    graph.initializer.extend(
        [
            helper.make_tensor("c_floor", 1, [1], [C_FLOOR]),
            helper.make_tensor("stat_index", 7, [1], [STAT_LOG_RATE_INDEX]),
        ]
    )
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(OUTPUT_NAME, 1, [None, 1])])
    sort_opsets(onx)
    blob: bytes = onx.SerializeToString()
    return blob


def onnx_parity(blob: bytes, model: Any, x: F32) -> float:
    """Largest relative difference between the ONNX graph and sklearn (times statistics)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (got,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    want = np.maximum(model.predict(x), C_FLOOR) * np.exp(
        x[:, STAT_LOG_RATE_INDEX].astype(np.float64)
    )
    rel = np.abs(np.asarray(got, dtype=np.float64)[:, 0] - want) / np.maximum(want, 1e-6)
    return float(rel.max()) if rel.size else 0.0
