"""Make the tablet page's font: a subset of Noto Sans CJK JP covering what the page shows.

The page must show Japanese on a tablet with no CJK font installed, offline: the agent serves
this subset itself (``agent/api/static/fonts/``). It covers

* printable ASCII, Latin-1 and Latin Extended-A (the Manhattan and Monaco street names),
  general punctuation, arrows, ⚠, CJK punctuation, every hiragana, katakana and full-width form;
* every non-ASCII character of the driver-facing strings: the instruction texts
  (``agent/instruction.py``), the fallback messages (``safety/reasons.py``) and the page's own
  labels (``agent/api/static/``);
* every street name (``TileStore.way_names``) of the tile databases given with ``--tiles``.

A build-time tool (``pip install -e '.[dev]'`` brings fontTools and brotli): the in-cab install
serves the committed WOFF2 files. Regenerate after changing a driver-facing string or adding an
area (``tests/agent/test_font.py`` fails until you do)::

    apt-get install -y fonts-noto-cjk          # the source font, Debian's package
    nagashi tiles build --osm data/osm/tokyo_shibuya_roads.osm.pbf --out /tmp/t/shibuya
    nagashi tiles build --osm data/osm/nyc_manhattan_midtown.osm.pbf --out /tmp/t/manhattan
    nagashi tiles build --osm data/osm/monaco_osrm.osm.pbf --out /tmp/t/monaco
    python -m tools.make_font_subset --tiles /tmp/t/*/tiles.sqlite
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FONT_DIR = REPO / "agent" / "api" / "static" / "fonts"
SOURCES = {  # output name -> (Debian's collection, the Japanese face inside it)
    "NotoSansCJKjp-Regular.subset.woff2": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "NotoSansCJKjp-Bold.subset.woff2": "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
}
JP_FACE = "Noto Sans CJK JP"
#: the files whose every non-ASCII character the page may show
STRING_FILES = (
    REPO / "agent" / "instruction.py",
    REPO / "safety" / "reasons.py",
    REPO / "agent" / "api" / "static" / "app.js",
    REPO / "agent" / "api" / "static" / "index.html",
)
RANGES = (
    (0x0020, 0x007E),  # ASCII
    (0x00A0, 0x017F),  # Latin-1, Latin Extended-A
    (0x2010, 0x2027),  # dashes, quotes, bullet, ellipsis
    (0x2190, 0x21FF),  # arrows (the manoeuvre arrows)
    (0x25A0, 0x25FF),  # geometric shapes
    (0x26A0, 0x26A0),  # ⚠
    (0x3000, 0x303F),  # CJK punctuation
    (0x3041, 0x30FF),  # hiragana, katakana
    (0xFF01, 0xFF5E),  # full-width forms
)


def _shown(ch: str) -> bool:
    """A character that draws a glyph (not a control, format or separator character)."""
    return unicodedata.category(ch)[0] not in ("C", "Z")


def string_chars(files: Iterable[Path] = STRING_FILES) -> set[str]:
    out: set[str] = set()
    for f in files:
        out.update(ch for ch in f.read_text(encoding="utf-8") if ord(ch) > 0x7E and _shown(ch))
    return out


def street_chars(tiles: Iterable[Path]) -> set[str]:
    from tiles import TileStore

    out: set[str] = set()
    for path in tiles:
        with TileStore(path) as store:
            names = store.way_names(int(w) for w in store.all().way_id)
        for name in names.values():
            out.update(ch for ch in name if _shown(ch))
    return out


def page_chars(tiles: Iterable[Path]) -> set[str]:
    """Every character the page may have to draw (the subset's target)."""
    base = {chr(c) for lo, hi in RANGES for c in range(lo, hi + 1)}
    return base | string_chars() | street_chars(tiles)


def _japanese_face(collection: str) -> object:
    from fontTools.ttLib import TTCollection

    for font in TTCollection(collection).fonts:
        if font["name"].getDebugName(1) == JP_FACE:
            return font
    raise SystemExit(f"{collection}: no {JP_FACE!r} face (apt-get install -y fonts-noto-cjk)")


def make_subset(chars: set[str], out_dir: Path) -> dict[str, object]:
    import io

    from fontTools import subset

    from tiles.fileio import atomic_write_bytes

    report: dict[str, object] = {}
    for name, collection in SOURCES.items():
        if not Path(collection).is_file():
            raise SystemExit(f"{collection} missing: apt-get install -y fonts-noto-cjk")
        font = _japanese_face(collection)
        cmap = font.getBestCmap()  # type: ignore[attr-defined]  # fontTools is untyped
        have = sorted(ord(c) for c in chars if ord(c) in cmap)
        lacking = sorted(c for c in chars if ord(c) not in cmap)
        opts = subset.Options()
        opts.flavor = "woff2"
        opts.name_IDs = ["*"]  # keep the copyright, licence and version records (OFL 2)
        opts.name_languages = ["*"]
        opts.notdef_outline = True
        opts.hinting = False
        opts.layout_features = ["kern", "palt", "liga", "locl", "ccmp"]
        sub = subset.Subsetter(opts)
        sub.populate(unicodes=have)
        sub.subset(font)
        buf = io.BytesIO()
        subset.save_font(font, buf, opts)  # WOFF2 (brotli), as opts.flavor says
        out = atomic_write_bytes(out_dir / name, buf.getvalue())
        version = font["name"].getDebugName(5)  # type: ignore[index]  # fontTools is untyped
        report[name] = {
            "chars": len(have),
            "bytes": out.stat().st_size,
            "version": version,
            "not_in_source": "".join(lacking),
        }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--tiles", nargs="*", default=[], help="tile databases: their street names")
    ap.add_argument("--out", default=str(FONT_DIR), help="the folder (default: the page's)")
    args = ap.parse_args(argv)
    chars = page_chars(Path(t) for t in args.tiles)
    report = make_subset(chars, Path(args.out))
    for name, r in report.items():
        print(f"{name}: {r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
