"""The page's own font covers everything the page shows (no tofu), and ships its licence."""

from __future__ import annotations

from pathlib import Path

import pytest
from fontTools.ttLib import TTFont  # reads WOFF2 with brotli (both in the dev extra)

from tools.make_font_subset import FONT_DIR, SOURCES, street_chars, string_chars

FONTS = [FONT_DIR / name for name in SOURCES]
MAX_BYTES = 1_500_000


@pytest.fixture(scope="module")
def cmaps() -> dict[str, set[int]]:
    return {f.name: set(TTFont(f).getBestCmap()) for f in FONTS}


def _missing(chars: set[str], cmap: set[int]) -> str:
    return "".join(sorted(c for c in chars if ord(c) not in cmap))


def test_font_files_are_small_licensed_and_named() -> None:
    total = sum(f.stat().st_size for f in FONTS)
    assert 0 < total < MAX_BYTES, total
    ofl = (FONT_DIR / "OFL.txt").read_text()
    assert "SIL OPEN FONT LICENSE Version 1.1" in ofl and "Adobe" in ofl
    for f in FONTS:
        name = TTFont(f)["name"]
        assert name.getDebugName(1) == "Noto Sans CJK JP"
        assert "Open Font License" in (name.getDebugName(13) or "")
    assert "OFL-1.1" in (FONT_DIR / "README.md").read_text()


def test_font_covers_every_driver_facing_string(cmaps: dict[str, set[int]]) -> None:
    chars = string_chars()
    assert {"道", "先", "右", "折", "み", "北"} <= chars  # the scan finds the strings
    for name, cmap in cmaps.items():
        assert not _missing(chars, cmap), f"{name} lacks {_missing(chars, cmap)!r}: regenerate"


def test_font_covers_the_street_names_of_the_areas(
    cmaps: dict[str, set[int]], shibuya_tiles: Path, manhattan_tiles: Path
) -> None:
    chars = street_chars([shibuya_tiles, manhattan_tiles])
    assert len(chars) > 200  # Shibuya's names are Japanese
    for name, cmap in cmaps.items():
        assert not _missing(chars, cmap), f"{name} lacks {_missing(chars, cmap)!r}: regenerate"
