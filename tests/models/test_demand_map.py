"""``nagashi demand map``: a PNG of links coloured by expected pickups."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from models import DemandDataError
from models.render import parse_slot
from tools.cli import main


@pytest.mark.parametrize(
    ("text", "minute"),
    [("Tue 18:00", 1 * 1440 + 18 * 60), ("mon 0:00", 0), ("Sunday 23:30", 6 * 1440 + 1410)],
)
def test_parse_slot(text: str, minute: int) -> None:
    assert parse_slot(text) == minute


@pytest.mark.parametrize("text", ["18:00", "Xyz 18:00", "Tue 25:00", "Tue 18"])
def test_parse_slot_rejects(text: str) -> None:
    with pytest.raises(DemandDataError):
        parse_slot(text)


def test_map_png_from_statistics(
    manhattan_demand: Path,
    manhattan_tiles: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "demand.png"
    rc = main(
        [
            "demand",
            "map",
            "--demand",
            str(manhattan_demand),
            "--tiles",
            str(manhattan_tiles),
            "--slot",
            "Tue 18:00",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "statistical:" in capsys.readouterr().out
    img = mpimg.imread(out)
    assert img.shape[0] > 500 and img.shape[1] > 800
    # not blank: many distinct colours (links coloured by demand)
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100
    rc = main(
        [
            "demand",
            "map",
            "--demand",
            str(manhattan_demand),
            "--tiles",
            str(manhattan_tiles),
            "--slot",
            "Tue 18:00",
            "--source",
            "model",
            "--out",
            str(tmp_path / "m.png"),
        ]
    )
    assert rc == 2
    assert "ships no ONNX model" in capsys.readouterr().err
