"""A bundle id read from a trip log (data from outside the cab) is never used as a path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.bundle import resolve_bundle_path
from agent.errors import BundleLoadError


@pytest.mark.parametrize("layout", ["folder of bundles", "store"])
@pytest.mark.parametrize("bad", ["../victim", "..", "/tmp", "x\0y"])
def test_bundle_id_from_a_log_is_checked_before_it_names_a_folder(
    manhattan_bundle: Path, tmp_path: Path, layout: str, bad: str
) -> None:
    shutil.copytree(manhattan_bundle, tmp_path / "victim")  # a bundle where ../victim points
    d = tmp_path / "bundles-dir"
    (d / "bundles").mkdir(parents=True) if layout == "store" else d.mkdir()
    with pytest.raises(BundleLoadError, match="bundle id"):
        resolve_bundle_path(d, bad)
