"""Held-out evaluation and the release gate, on the real held-out 2015-06 windows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models import DemandDataError, DemandTable
from models.evaluate import apply_gate, evaluate
from models.predict import open_demand
from tests.conftest import TRIPS
from tiles import TileStore
from tools.cli import main


@pytest.fixture(scope="module")
def heldout(trained_model_dir: Path, manhattan_tiles: Path) -> dict[str, Any]:
    with TileStore(manhattan_tiles) as store:
        return evaluate(store, trained_model_dir, [TRIPS["reuven_2015_06"]])


def test_heldout_windows_are_the_ones_not_trained_on(heldout: dict[str, Any]) -> None:
    assert heldout["evaluated_on"][0]["windows"] == [2, 3]
    assert heldout["slots"] == ["weekday 15:00", "saturday 16:30"]
    assert heldout["heldout_pickups"] > 500


def test_metrics_and_ratios_are_consistent(heldout: dict[str, Any]) -> None:
    m, s, r = heldout["model"], heldout["statistics"], heldout["ratio_model_over_statistics"]
    for key in ("mae", "rmse", "poisson_deviance", "link_loglik_per_pickup"):
        assert r[key] == pytest.approx(m[key] / s[key], rel=1e-4)
    for src in (m, s):
        assert 0 < src["mae"] <= src["rmse"]
        # better than spreading pickups uniformly over the 2,511 cruisable links
        assert -7.83 < src["link_loglik_per_pickup"] < 0
    expect = m["poisson_deviance"] < s["poisson_deviance"] and (
        m["link_loglik_per_pickup"] > s["link_loglik_per_pickup"]
    )
    assert heldout["model_beats_statistics"] is expect


def test_training_data_is_refused(trained_model_dir: Path, manhattan_tiles: Path) -> None:
    with TileStore(manhattan_tiles) as store:
        with pytest.raises(DemandDataError, match="used for training"):
            evaluate(store, trained_model_dir, [TRIPS["gcp_train"]])
        with pytest.raises(DemandDataError, match="used for training"):
            evaluate(store, trained_model_dir, [TRIPS["reuven_2015_06"]], windows={1, 2})


def test_gate_failure_ships_statistics_only(model_copy: Path, heldout: dict[str, Any]) -> None:
    lost = {**heldout, "model_beats_statistics": False}
    assert apply_gate(model_copy, lost) is False
    assert not (model_copy / "model.onnx").exists()
    doc = json.loads((model_copy / "model.json").read_text())
    assert doc["shipped"] is False and doc["gate"]["passed"] is False
    table, model = open_demand(model_copy)
    assert model is None
    assert table.meta["predicted_model"]["shipped"] is False
    assert table.meta["source"] == "statistical only"
    assert DemandTable.load(model_copy).version == table.version


def test_gate_pass_keeps_the_model(model_copy: Path, heldout: dict[str, Any]) -> None:
    won = {**heldout, "model_beats_statistics": True}
    assert apply_gate(model_copy, won) is True
    table, model = open_demand(model_copy)
    assert model is not None and table.meta["predicted_model"]["shipped"] is True


def test_cli_eval_and_gate(
    model_copy: Path,
    manhattan_tiles: Path,
    heldout: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(
        [
            "demand",
            "eval",
            "--model",
            str(model_copy),
            "--trips",
            str(TRIPS["reuven_2015_06"]),
            "--tiles",
            str(manhattan_tiles),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ratio_model_over_statistics"] == heldout["ratio_model_over_statistics"]
    rc = main(["demand", "eval", "--model", str(model_copy), "--trips", str(TRIPS["gcp_train"])])
    assert rc == 2
    assert "used for training" in capsys.readouterr().err
    rc = main(
        [
            "demand",
            "gate",
            "--model",
            str(model_copy),
            "--trips",
            str(TRIPS["reuven_2015_06"]),
            "--json",
        ]
    )
    assert rc == (0 if heldout["model_beats_statistics"] else 1)
    assert (model_copy / "model.onnx").exists() is heldout["model_beats_statistics"]
    if not heldout["model_beats_statistics"]:
        rc = main(
            ["demand", "eval", "--model", str(model_copy), "--trips", str(TRIPS["gcp_valid"])]
        )
        assert rc == 2
        assert "rejected by the release gate" in capsys.readouterr().err
