"""Conditional restrictions read with the opening_hours library, failing closed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import opening_hours
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiles import parse_conditional
from tiles.conditional import (
    CLOSING_BY_KIND,
    MINUTES_PER_WEEK,
    NOT_A_TAXI,
    Area,
    check_country,
    minute_of_week,
)

DATA = Path(__file__).resolve().parents[1] / "data"
DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
NYC = Area(coords=(40.7549, -73.984), country="US")
SHIBUYA = Area(coords=(35.6595, 139.7005), country="JP")


def _mow(text: str) -> int:
    day, clock = text.split()
    h, m = clock.split(":")
    return minute_of_week(DAYS.index(day), int(h), int(m))


def _closed_everywhere(value: str, area: Area | None = None) -> bool:
    w = parse_conditional(value, area=area)
    return all(w.closed_at(m) for m in range(0, MINUTES_PER_WEEK, 7))


def test_space_after_the_comma_still_closes() -> None:
    """``no @ (Mo-Fr 07:00-09:00, 16:00-18:00)`` (a very common form) closes both spans; the
    hand-written parser read no window at all from it and left the road open."""
    w = parse_conditional("no @ (Mo-Fr 07:00-09:00, 16:00-18:00)")
    assert w.closed_at(minute_of_week(0, 8, 0))
    assert w.closed_at(minute_of_week(4, 17, 30))
    assert not w.closed_at(minute_of_week(0, 12, 0))
    assert not w.closed_at(minute_of_week(5, 8, 0))


def _corpus() -> list[tuple[str, str]]:
    rows = []
    for line in (DATA / "conditional_forms.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            value, expect = line.split("\t")
            rows.append((value, expect))
    return rows


@pytest.mark.parametrize(("value", "expect"), _corpus())
def test_wiki_forms(value: str, expect: str) -> None:
    w = parse_conditional(value)
    for part in expect.split(" | "):
        kind, _, times = part.partition(" ")
        if kind == "doubt":
            assert w.doubts, value
            assert _closed_everywhere(value)
        elif kind == "never":
            assert not w.doubts and not w.intervals and not w.dated, value
        else:
            assert not w.doubts, (value, w.doubts)
            for t in times.split(", "):
                assert w.closed_at(_mow(t)) == (kind == "closed"), (value, t)


_TOKENS = st.sampled_from(
    [
        "Mo", "Tu", "Fr", "Sa", "Su", "PH", "SH", "-", ",", ", ", ";", "; ", " ", ":", "off",
        "07:00", "09:00", "24:00", "17:00-05:00", "Mo-Fr", "Jan", "Dec 24", "week", "01-10",
        "sunset", "sunrise", "(", ")", "AND", "weight>7.5", "wet", "||", '"x"', "[1]", "+",
        "2026", "/2", "@", "no", "destination", "yes", "25:00", "easter",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOKENS, min_size=1, max_size=10).map("".join) | st.text(max_size=30))
def test_a_condition_the_parser_rejects_closes_at_every_minute(cond: str) -> None:
    value = f"no @ ({cond})"
    w = parse_conditional(value)
    rejected = (
        " AND " not in cond
        and "@" not in cond
        and "(" not in cond
        and ")" not in cond
        and not opening_hours.validate(cond.strip())
        and cond.strip().lower() not in NOT_A_TAXI  # vehicle words: read, not a time
        and "weight" not in cond
    )
    if w.doubts:
        assert all(w.closed_at(m) for m in range(MINUTES_PER_WEEK))
        assert w.closed_on(dt.date(2026, 11, 23)).all()
    if rejected and cond.strip():
        assert w.doubts, cond


def test_vehicle_properties_that_are_not_a_taxi_do_not_close() -> None:
    for cond in ("weight>7.5", "height>3.8", "width>2.5", "axles>=3", "hazmat", "trailer"):
        w = parse_conditional(f"no @ ({cond})")
        assert not w.doubts and not w.intervals, cond
        assert w.skipped
    # but an unknown property is a doubt
    assert _closed_everywhere("no @ (draught>2)")


def test_us_public_holidays() -> None:
    """``PH off``: open on Independence Day observed (Fri 2026-07-03) and on Thanksgiving."""
    w = parse_conditional("no @ (Mo-Fr 07:00-19:00; PH off)", area=NYC)
    assert w.dated
    assert w.closed_at(minute_of_week(4, 12, 0))  # an ordinary Friday
    assert not w.closed_at_datetime(dt.datetime(2026, 7, 3, 12, 0))
    assert w.closed_at_datetime(dt.datetime(2026, 7, 10, 12, 0))
    assert not w.closed_at_datetime(dt.datetime(2026, 11, 26, 12, 0))  # Thanksgiving
    assert w.closed_at_datetime(dt.datetime(2026, 11, 27, 12, 0))
    only = parse_conditional("no @ (PH 10:00-16:00)", area=NYC)
    assert not only.closed_at(minute_of_week(3, 12, 0))  # an ordinary Thursday
    assert only.closed_at_datetime(dt.datetime(2026, 11, 26, 12, 0))
    assert not only.closed_at_datetime(dt.datetime(2026, 11, 26, 17, 0))


def test_japanese_public_holiday() -> None:
    """勤労感謝の日 (Labour Thanksgiving Day, Mon 2026-11-23) and a Sunday: ``Su PH off``."""
    w = parse_conditional("no @ (07:30-09:00; 13:00-16:00; Su PH off)", area=SHIBUYA)
    assert w.closed_at(minute_of_week(0, 8, 0))  # an ordinary Monday
    assert not w.closed_at_datetime(dt.datetime(2026, 11, 23, 8, 0))
    assert not w.closed_at_datetime(dt.datetime(2026, 11, 23, 14, 0))
    assert w.closed_at_datetime(dt.datetime(2026, 11, 24, 8, 0))
    assert w.closed_at_datetime(dt.datetime(2026, 11, 24, 14, 0))
    ph = parse_conditional("no @ (PH 12:00-17:00)", area=SHIBUYA)
    assert ph.closed_on(dt.date(2026, 11, 23))[13 * 60]
    assert not ph.closed_on(dt.date(2026, 11, 24)).any()


def test_country_from_the_coordinates() -> None:
    """Without a country, the holidays are those at the coordinates."""
    w = parse_conditional("no @ (PH)", area=Area(coords=(35.6595, 139.7005)))
    assert w.closed_at_datetime(dt.datetime(2026, 11, 23, 12, 0))
    assert not w.closed_at_datetime(dt.datetime(2026, 11, 26, 12, 0))
    check_country("MC")
    with pytest.raises(ValueError, match="unknown country"):
        check_country("XX")


def test_sunset_to_sunrise_follows_the_season() -> None:
    w = parse_conditional("no @ (sunset-sunrise)", area=NYC)
    assert w.dated
    # New York: sunset about 20:30 in June, 16:30 in December
    assert not w.closed_at_datetime(dt.datetime(2026, 6, 21, 20, 0))
    assert w.closed_at_datetime(dt.datetime(2026, 6, 21, 21, 0))
    assert w.closed_at_datetime(dt.datetime(2026, 12, 21, 17, 30))
    # an ordinary week (no date): closed whenever it is closed in some week of the year
    assert w.closed_at(minute_of_week(0, 17, 30)) and w.closed_at(minute_of_week(0, 21, 0))
    assert not w.closed_at(minute_of_week(0, 12, 0))


def test_month_ranges() -> None:
    summer = parse_conditional("no @ (Apr-Oct Sa,Su 10:00-18:00)")
    assert summer.closed_at_datetime(dt.datetime(2026, 7, 4, 12, 0))  # a Saturday in July
    assert not summer.closed_at_datetime(dt.datetime(2026, 12, 5, 12, 0))  # in December
    holidays = parse_conditional("no @ (Dec 24-Jan 06)")
    assert holidays.closed_at_datetime(dt.datetime(2026, 12, 31, 12, 0))
    assert holidays.closed_at_datetime(dt.datetime(2027, 1, 6, 12, 0))
    assert not holidays.closed_at_datetime(dt.datetime(2027, 1, 7, 12, 0))


def test_oneway_conditional() -> None:
    """``oneway:conditional=yes @ (...)``: the reverse direction is closed in the window;
    ``-1 @ (...)``: the way's direction is."""
    back = parse_conditional("yes @ (Mo-Fr 07:00-10:00)", CLOSING_BY_KIND["oneway:backward"])
    fwd = parse_conditional("yes @ (Mo-Fr 07:00-10:00)", CLOSING_BY_KIND["oneway:forward"])
    assert back.closed_at(minute_of_week(1, 8, 0)) and not back.closed_at(minute_of_week(1, 11, 0))
    assert not fwd.intervals
    rev = parse_conditional("-1 @ (16:00-19:00)", CLOSING_BY_KIND["oneway:forward"])
    assert rev.closed_at(minute_of_week(2, 17, 0))
    bad = parse_conditional("yes Mo-Fr", CLOSING_BY_KIND["oneway:backward"])
    assert bad.malformed and bad.closed_at(minute_of_week(2, 17, 0))


# --------------------------------------------------------------------------- real extracts

AREAS = {
    "nyc_manhattan_midtown": "manhattan_tiles",
    "tokyo_shibuya_roads": "shibuya_tiles",
    "monaco_osrm": "monaco_tiles",
}


def _fixture_rows() -> list[dict[str, str]]:
    lines = (DATA / "osm_conditionals.tsv").read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"), strict=True)) for line in lines[1:]]


@pytest.mark.parametrize("row", _fixture_rows(), ids=lambda r: f"{r['way_id']}-{r['key']}")
def test_every_value_of_the_extracts_reads_or_closes(row: dict[str, str]) -> None:
    w = parse_conditional(row["value"])
    if w.doubts:
        assert _closed_everywhere(row["value"])


@pytest.mark.parametrize("area", sorted(AREAS))
def test_every_conditional_of_the_extracts_is_reported_and_none_opens_a_road(
    area: str, request: pytest.FixtureRequest
) -> None:
    """Each ``*:conditional`` tag of the extract has a report row, and every link of a way
    whose rule closes it at a minute is closed at that minute (for doubt: at every minute)."""
    from tiles import TileStore
    from tiles import tags as T

    want = {(int(r["way_id"]), r["key"], r["value"]) for r in _fixture_rows() if r["area"] == area}
    with TileStore(request.getfixturevalue(AREAS[area])) as store:
        rows = store.conditionals()
        assert {(r["way_id"], r["key"], r["value"]) for r in rows} == want
        summary = store.summary["conditional"]
        assert summary["values"] == len(want)
        doubt = [r for r in rows if r["status"] == "closed_for_doubt"]
        assert [(r["way_id"], r["key"]) for r in summary["closed_for_doubt"]] == [
            (r["way_id"], r["key"]) for r in doubt
        ]
        g = store.all()
        minutes = np.arange(0, MINUTES_PER_WEEK, 5)
        closed = g.closed_at(minutes)
        monday = dt.date(2026, 11, 23)  # a week with a Japanese and a US public holiday
        closed_dated = g.closed_at(minutes, monday=monday)
        reverse = (g.flags & T.FLAG_REVERSE) != 0
        for r in rows:
            if r["status"] not in {"windows", "dated", "closed_for_doubt"}:
                continue
            key = r["key"]
            on_way = g.way_id == r["way_id"]
            if key == "oneway:conditional":
                continue  # checked in test_oneway_conditional_on_real_ways
            if ":forward:" in key:
                on_way &= ~reverse
            elif ":backward:" in key:
                on_way &= reverse
            idx = np.flatnonzero(on_way)
            assert idx.size, r
            w = parse_conditional(r["value"], area=store.area)
            must = np.array([w.closed_at(int(m)) for m in minutes])
            assert closed[np.ix_(must, idx)].all(), r
            if r["status"] == "closed_for_doubt":
                assert closed[:, idx].all() and closed_dated[:, idx].all(), r
            days = [monday + dt.timedelta(days=int(m) // 1440) for m in minutes]
            must_on = np.array(
                [w.closed_on(d)[int(m) % 1440] for d, m in zip(days, minutes, strict=True)]
            )
            assert closed_dated[np.ix_(must_on, idx)].all(), r


def test_public_holiday_rule_on_a_shibuya_street(shibuya_tiles: Path) -> None:
    """``no @ (PH 12:00-17:00)``: closed on 勤労感謝の日 (Mon 2026-11-23), open on the next Monday
    and in an ordinary week."""
    from tiles import TileStore

    with TileStore(shibuya_tiles) as store:
        g = store.all()
        idx = np.flatnonzero(g.way_id == 33041248)
        assert idx.size
        one_pm = minute_of_week(0, 13, 0)
        assert g.closed_at(one_pm, monday=dt.date(2026, 11, 23))[idx].all()
        assert not g.closed_at(one_pm, monday=dt.date(2026, 11, 30))[idx].any()
        assert not g.closed_at(one_pm)[idx].any()
        # minutes past the week roll into the next one: Monday 2026-11-30 13:00
        assert not g.closed_at(MINUTES_PER_WEEK + one_pm, monday=dt.date(2026, 11, 23))[idx].any()
        assert not g.cruise_allowed(one_pm, monday=dt.date(2026, 11, 23))[idx].any()


def test_oneway_conditional_on_real_ways(shibuya_tiles: Path) -> None:
    """Shibuya's ``oneway:conditional=no @ ...`` ways (one-way except at night) stay one-way at
    all times: the reverse direction is never added."""
    from tiles import TileStore
    from tiles import tags as T

    with TileStore(shibuya_tiles) as store:
        g = store.all()
        rows = [r for r in store.conditionals() if r["key"] == "oneway:conditional"]
        assert {r["way_id"] for r in rows} == {1106270528, 1156909226}
        for r in rows:
            on_way = g.way_id == r["way_id"]
            assert on_way.any()
            assert np.all(g.flags[on_way] & T.FLAG_ONEWAY)
            assert len({bool(f & T.FLAG_REVERSE) for f in g.flags[on_way]}) == 1


def _osm_xml(ways: dict[int, dict[str, str]]) -> str:
    """Parallel east-west streets, one per way, 100 m apart, each of two nodes."""
    nodes, body = [], []
    for k, (wid, tags) in enumerate(ways.items()):
        lat = 40.75 + 0.001 * k
        a, b = 2 * k + 1, 2 * k + 2
        nodes.append(f'<node id="{a}" version="1" lat="{lat}" lon="-73.99"/>')
        nodes.append(f'<node id="{b}" version="1" lat="{lat}" lon="-73.988"/>')
        tag_xml = "".join(
            f'<tag k="{k_}" v="{v.replace(chr(34), "&quot;")}"/>' for k_, v in tags.items()
        )
        body.append(f'<way id="{wid}" version="1"><nd ref="{a}"/><nd ref="{b}"/>{tag_xml}</way>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">'
        + "".join(nodes)
        + "".join(body)
        + "</osm>"
    )


def test_importer_oneway_and_access_conditionals(tmp_path: Path) -> None:
    from tiles import TileStore, build_tiles
    from tiles import tags as T

    ways = {
        1: {"highway": "residential", "oneway:conditional": "yes @ (Mo-Fr 07:00-10:00)"},
        2: {"highway": "residential", "oneway:conditional": "yes Mo-Fr"},  # unreadable
        3: {"highway": "residential", "oneway": "yes", "oneway:conditional": "-1 @ (16:00-19:00)"},
        4: {
            "highway": "residential",
            "motor_vehicle:conditional": "no @ (Mo-Fr 07:00-09:00, 16:00-18:00)",
        },
        5: {"highway": "residential", "access:conditional": "no @ (Mo-Fr 07:00-09:00 AND wet)"},
        6: {"highway": "residential", "hgv:conditional": "no @ (22:00-06:00)"},
    }
    osm = tmp_path / "tiny.osm"
    osm.write_text(_osm_xml(ways), encoding="utf-8")
    path, summary = build_tiles(osm, tmp_path / "out", country="US")
    with TileStore(path) as store:
        g = store.all()
        rev = (g.flags & T.FLAG_REVERSE) != 0

        def edges(way: int, backward: bool) -> np.ndarray:
            return np.flatnonzero((g.way_id == way) & (rev == backward))

        tue8, tue11, tue17 = (minute_of_week(1, h, 0) for h in (8, 11, 17))
        # 1: two-way, one-way forward on weekday mornings: the reverse is closed then
        assert g.closed_at(tue8)[edges(1, True)].all()
        assert not g.closed_at(tue11)[edges(1, True)].any()
        assert not g.closed_at(tue8)[edges(1, False)].any()
        # 2: unreadable: one-way at all times (reverse closed), forward open
        assert all(g.closed_at(m)[edges(2, True)].all() for m in (tue8, tue11, tue17))
        assert not g.closed_at(tue11)[edges(2, False)].any()
        # 3: one-way, reversed 16:00-19:00: the forward direction is closed then
        assert g.closed_at(tue17)[edges(3, False)].all()
        assert not g.closed_at(tue11)[edges(3, False)].any()
        assert edges(3, True).size == 0
        # 4: both spans of a comma list with a space
        assert g.closed_at(tue8)[edges(4, False)].all()
        assert g.closed_at(tue17)[edges(4, True)].all()
        assert not g.closed_at(tue11)[edges(4, False)].any()
        # 5: "AND wet" cannot be evaluated: closed at all times, and reported
        assert all(g.closed_at(m)[edges(5, False)].all() for m in (tue8, tue11, tue17))
        assert not g.closed_at(tue11)[edges(6, False)].any()  # 6: lorries only
    doubt = {(r["way_id"], r["key"]) for r in summary["conditional"]["closed_for_doubt"]}
    assert doubt == {(2, "oneway:conditional"), (5, "access:conditional")}
    assert summary["conditional"]["area"]["country"] == "US"


def test_build_and_info_report_the_roads_closed_for_doubt(
    tmp_path: Path, manhattan_tiles: Path, shared_data: Path
) -> None:
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True, cwd=repo
        )

    info = cli("tiles", "info", str(manhattan_tiles))
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    doubt = {r["way_id"] for r in doc["conditional"]["closed_for_doubt"]}
    assert 46610719 in doubt  # no @ (We-Fr 14:00-22:00; Sa-Su 12:00-22:00)) -- one ')' too many
    assert {r["way_id"] for r in doc["conditionals"] if r["status"] == "closed_for_doubt"} == doubt
    osm = shared_data / "osm" / "tokyo_shibuya_roads.osm.pbf"
    built = cli("tiles", "build", "--osm", str(osm), "--out", str(tmp_path / "sb"))
    assert built.returncode == 0, built.stderr
    assert "closed at all times for doubt: way 33041229 access:conditional" in built.stdout
    bad = cli("tiles", "build", "--osm", str(osm), "--out", str(tmp_path / "x"), "--country", "XX")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "XX" in bad.stderr
    assert not (tmp_path / "x").exists()
