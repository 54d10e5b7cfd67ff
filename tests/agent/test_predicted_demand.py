"""A bundle's ONNX demand model drives the planner; a failing model falls back to statistics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy.typing as npt
import pytest

from agent.bundle import LoadedBundle, load_bundle
from agent.decide import TickInputs, decide
from agent.gps import read_csv_trace
from models import DemandTable, ModelOutputError, TickDemand, open_demand
from tests.conftest import DRIVE_CSV
from tools.field.replay import replay_tick


@pytest.fixture(scope="module")
def onnx_bundle(
    manhattan_bundle: Path, tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> LoadedBundle:
    """The Manhattan bundle with a small model trained on the real trips (10 trees)."""
    from models.train import TrainConfig, train_model

    lb = load_bundle(manhattan_bundle)
    out = tmp_path_factory.mktemp("model")
    trips = shared_data / "trips"
    train_model(
        lb.store,
        [
            trips / "nyc_tlc_yellow_2009-2015_gcp_taxi-train.csv",
            trips / "nyc_tlc_yellow_2015-06_reuven.csv",
        ],
        [trips / "nyc_tlc_yellow_2009-2015_gcp_taxi-valid.csv"],
        out,
        config=TrainConfig(n_estimators_max=10),
    )
    table, model = open_demand(out)
    if model is None:
        from models import DemandModel

        model = DemandModel(out, table)  # use it even if it did not pass the gate
    return dataclasses.replace(lb, demand=table, model=model)


def test_a_bundle_reads_its_demand_table_once(
    manhattan_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_bundle reads demand.npz once (start-up, issue 20): the model, when one shipped, is
    built on the same table (open_demand's ``table``)."""
    reads: list[Path] = []
    real_load = DemandTable.load

    def counting_load(directory: Any) -> DemandTable:
        reads.append(Path(directory))
        return real_load(directory)

    monkeypatch.setattr(DemandTable, "load", staticmethod(counting_load))
    lb = load_bundle(manhattan_bundle)
    assert len(reads) == 1, reads
    table, _ = open_demand(reads[0], table=lb.demand)
    assert table is lb.demand and len(reads) == 1


def test_a_shipped_model_is_built_on_the_table_given(onnx_bundle: LoadedBundle) -> None:
    assert onnx_bundle.model is not None  # the fixture always loads a model
    d = onnx_bundle.model.directory
    table = DemandTable.load(d)
    _, model = open_demand(d, table=table)
    assert model is not None and model.table is table


def test_ticks_use_the_model_and_replay_identically(onnx_bundle: LoadedBundle) -> None:
    f = read_csv_trace(DRIVE_CSV)[150]
    r = decide(onnx_bundle, TickInputs(f.time_s, f, None, "en", "interval"))
    assert r.demand is not None and r.demand.source.startswith("onnx:")
    rec = r.to_record(onnx_bundle)
    assert onnx_bundle.model is not None  # the fixture always loads a model
    assert rec["params"]["demand_model"] == onnx_bundle.model.version
    rec["seq"] = 0
    assert replay_tick(rec, onnx_bundle).identical


class _BrokenModel:
    """A model whose output safety would reject (as a NaN-producing model would)."""

    version = "broken-1"

    def tick(self, edge_ids: npt.ArrayLike, minute_of_week: int, horizon_min: int) -> TickDemand:
        raise ModelOutputError("model broken-1 returned NaN or infinite rates")


def test_a_failing_model_falls_back_to_statistics(onnx_bundle: LoadedBundle, caplog: Any) -> None:
    lb = dataclasses.replace(onnx_bundle, model=_BrokenModel())  # type: ignore[arg-type]  # a fake
    f = read_csv_trace(DRIVE_CSV)[150]
    r = decide(lb, TickInputs(f.time_s, f, None, "en", "interval"))
    assert r.demand is not None and r.demand.source.startswith("statistical:")
    assert "demand model" in r.planner_error and "NaN" in r.planner_error
    assert "using statistics" in caplog.text
