"""ATTRIBUTION.txt names OpenStreetMap and every attribution the demand table asks for."""

from __future__ import annotations

import json
from pathlib import Path

from sync.bundle import ATTRIBUTION_TEXT, attribution_text


def test_people_flow_attribution_is_carried(tmp_path: Path) -> None:
    demand = tmp_path / "demand.json"
    mlit = "「全国の人流オープンデータ」（国土交通省） CC BY 4.0"
    demand.write_text(
        json.dumps(
            {
                "sources": {"pickup_rate": [{"path": "a"}, {"attribution": mlit}]},
                "people_flow": {"attribution": mlit},
            }
        ),
        encoding="utf-8",
    )
    text = attribution_text([("demand/demand.json", demand), ("tiles.sqlite", tmp_path / "t")])
    assert text.startswith(ATTRIBUTION_TEXT)
    assert text.count(mlit) == 1
    assert attribution_text([("tiles.sqlite", tmp_path / "t")]) == ATTRIBUTION_TEXT
