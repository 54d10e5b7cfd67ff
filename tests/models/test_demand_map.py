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


def test_colour_bins_separate_the_hot_spots() -> None:
    """Quantile bins: the hottest 1 % of links get the hottest colour, the median link a cold
    one, whatever the slot's level (a log scale painted most of Midtown in one dark band)."""
    from models.render import HOT_COLOURS, hot_spot_bins

    rate = np.random.default_rng(3).lognormal(1.5, 1.0, 2000)
    bounds, bins = hot_spot_bins(rate)
    assert len(bounds) == len(HOT_COLOURS) + 1 and np.all(np.diff(bounds) > 0)
    top = rate >= np.quantile(rate, 0.99)
    assert np.all(bins[top] == len(HOT_COLOURS) - 1)
    assert (bins == len(HOT_COLOURS) - 1).mean() <= 0.011
    assert bins[np.argsort(rate)[len(rate) // 2 - 5]] <= 1  # the median link: cold colours
    assert np.bincount(bins, minlength=len(HOT_COLOURS)).min() > 0  # every colour used
    assert np.all(hot_spot_bins(np.full(10, 2.0))[1] >= 0)  # a flat slot: no error


def test_map_takes_a_bundle_directory(
    manhattan_demand: Path,
    manhattan_tiles: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(manhattan_demand, bundle / "demand")
    shutil.copy(manhattan_tiles, bundle / "tiles.sqlite")
    (bundle / "manifest.yaml").write_text("schema_version: 1\n")
    out = tmp_path / "d.png"
    argv = ["demand", "map", "--demand", str(bundle), "--slot", "Tue 18:00", "--out", str(out)]
    assert main(argv) == 0 and out.is_file()
    assert "statistical:" in capsys.readouterr().out
    argv = ["demand", "map", "--demand", str(manhattan_demand), "--slot", "Tue 18:00"]
    assert main([*argv, "--out", str(tmp_path / "e.png")]) == 2  # no tiles, not a bundle
    assert "--tiles is needed" in capsys.readouterr().err
