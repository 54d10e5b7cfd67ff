"""The same fitted model gives the same ONNX bytes (and so the same model version) in every
interpreter: skl2onnx collects the opsets its nodes use in a set, whose order follows the
string-hash seed, and the exporters put them in domain order. Before that, the release
pipeline's ``runs reproduce`` built another bundle about one run in five."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("skl2onnx")

EXPORT = """
import hashlib
import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from models.features import CELL_FEATURES, FEATURES
from models.rolling.fitting import Fitted, _estimator
from models.rolling.config import RecentConfig
from models.rolling.shipped import export_onnx
from models.train_onnx import to_onnx

rng = np.random.default_rng(3)
x = rng.random((400, len(CELL_FEATURES)), dtype=np.float32)
y = rng.poisson(1.0 + x[:, 0]).astype(np.float64)
out = []
for kind in ("poisson", "gbr"):
    config = RecentConfig(n_estimators_max=5)
    est = _estimator(kind, config).fit(x, y)
    blob, _ = export_onnx(Fitted(kind, est, 5 if kind == "gbr" else None, [0], 0.0), x[:20])
    out.append(hashlib.sha256(blob).hexdigest())
xl = rng.random((400, len(FEATURES)), dtype=np.float32)
link = GradientBoostingRegressor(n_estimators=5, random_state=0).fit(xl, y)
out.append(hashlib.sha256(to_onnx(link)).hexdigest())
print(" ".join(out))
"""


def _export(seed: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    return subprocess.Popen(
        [sys.executable, "-c", EXPORT],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_onnx_bytes_do_not_depend_on_the_hash_seed() -> None:
    got = {}
    for first in (0, 3):  # three interpreters at a time (they are mostly imports)
        procs = {seed: _export(seed) for seed in range(first, first + 3)}
        for seed, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            got[seed] = out.strip()
    assert len(got) == 6 and len(set(got.values())) == 1, got


def test_sort_opsets_puts_the_domains_in_order() -> None:
    from onnx import helper

    from models.train_onnx import sort_opsets

    m = helper.make_model(
        helper.make_graph([], "g", [], []),
        opset_imports=[helper.make_opsetid("ai.onnx.ml", 3), helper.make_opsetid("", 17)],
    )
    sort_opsets(m)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17), ("ai.onnx.ml", 3)]
