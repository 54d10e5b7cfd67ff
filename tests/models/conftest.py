"""Fixtures of the demand tests: a small model trained once per session on the real trips."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import TRIPS

TRAIN_WINDOWS = {0, 1}  # windows of the 2015-06 file used for training; 2 and 3 are held out


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory, manhattan_tiles: Path) -> Path:
    """A demand directory written by ``train_model`` (small: at most 20 trees)."""
    from models.train import TrainConfig, train_model
    from tiles import TileStore

    out = tmp_path_factory.mktemp("demand-model")
    with TileStore(manhattan_tiles) as store:
        train_model(
            store,
            [TRIPS["gcp_train"], TRIPS["reuven_2015_06"]],
            [TRIPS["gcp_valid"]],
            out,
            train_windows=TRAIN_WINDOWS,
            config=TrainConfig(n_estimators_max=20),
        )
    return out


@pytest.fixture
def model_copy(trained_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the trained directory, to break or gate."""
    dst = tmp_path / "demand"
    shutil.copytree(trained_model_dir, dst)
    return dst
