"""The ``*:conditional`` tags of a way: its no-entry rules per direction (read by
:mod:`tiles.conditional`; what cannot be read closes) and one report row per tag."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tiles._osm.collect import RawWay
from tiles.conditional import (
    CLOSING_BY_KIND,
    TAXI_ACCESS_KEYS,
    Area,
    Windows,
    parse_conditional,
)

_SIDES: tuple[tuple[str, str], ...] = (
    ("both", ":conditional"),
    ("forward", ":forward:conditional"),
    ("backward", ":backward:conditional"),
)


def _status(r: Windows) -> str:
    if r.doubts:
        return "closed_for_doubt"
    if r.dated:
        return "dated"
    return "windows" if r.intervals else "no_closing_rule"


def _reason(r: Windows) -> str:
    return "; ".join((*r.doubts, *r.skipped, *r.normalized))


def way_conditionals(
    w: RawWay, direction: int, area: Area, out: list[dict[str, Any]]
) -> dict[str, list[tuple[str, Windows]]]:
    """The no-entry rules of each direction of a way (closing kind, parsed value); one report
    row per ``*:conditional`` tag into ``out``."""
    t = w.tags
    rules: dict[str, list[tuple[str, Windows]]] = {"forward": [], "backward": []}
    seen: set[str] = set()
    for key in TAXI_ACCESS_KEYS:
        for side, suffix in _SIDES:
            value = t.get(key + suffix)
            if value is None:
                continue
            seen.add(key + suffix)
            r = parse_conditional(value, CLOSING_BY_KIND["access"], area)
            status = _status(r)
            if status != "no_closing_rule":
                for d in ("forward", "backward") if side == "both" else (side,):
                    rules[d].append(("access", r))
            out.append(_row(w.way_id, key + suffix, value, status, _reason(r)))
    value = t.get("oneway:conditional")
    if value is not None:
        seen.add("oneway:conditional")
        fw = parse_conditional(value, CLOSING_BY_KIND["oneway:forward"], area)
        bw = parse_conditional(value, CLOSING_BY_KIND["oneway:backward"], area)
        if fw.malformed:
            # unreadable: one-way (in the way's direction) at all times, the reverse closed
            if direction == 0:
                rules["backward"].append(("oneway:backward", bw))
            status, reason = "closed_for_doubt", _reason(bw) + "; one-way at all times"
        else:
            for d, kind, r in (
                ("forward", "oneway:forward", fw),
                ("backward", "oneway:backward", bw),
            ):
                if _status(r) != "no_closing_rule":
                    rules[d].append((kind, r))
            statuses = {_status(fw), _status(bw)} - {"no_closing_rule"}
            status = min(statuses) if statuses else "no_closing_rule"
            reason = "; ".join(dict.fromkeys(x for x in (_reason(fw), _reason(bw)) if x))
            if direction != 0 and "'no'" in reason:
                reason += "; the way stays one-way at all times (its relaxation is not used)"
        out.append(_row(w.way_id, "oneway:conditional", value, status, reason))
    for key, value in sorted(t.items()):
        if key.endswith(":conditional") and key not in seen:
            out.append(_row(w.way_id, key, value, "ignored_key", "not about a taxi's access"))
    return rules


def _row(way_id: int, key: str, value: str, status: str, reason: str) -> dict[str, Any]:
    return {"way_id": way_id, "key": key, "value": value, "status": status, "reason": reason}


def conditional_summary(rows: list[dict[str, Any]], area: Area) -> dict[str, Any]:
    return {
        "values": len(rows),
        "by_status": dict(sorted(Counter(r["status"] for r in rows).items())),
        "closed_for_doubt": [
            {k: r[k] for k in ("way_id", "key", "value", "reason")}
            for r in rows
            if r["status"] == "closed_for_doubt"
        ],
        "area": {"lat_lon": list(area.coords or ()), "country": area.country or "from lat_lon"},
    }
