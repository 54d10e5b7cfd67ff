"""Import of the real OSM extracts: flags, oneway, turn restrictions, bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import agent
import models
import safety
import sync
import tiles
import tools
from tests.conftest import OSM, REPO
from tiles import TilesDataError, TileStore, build_tiles
from tiles import tags as T
from tiles.conditional import minute_of_week


def test_packages_resolve_inside_this_repo() -> None:
    for module in (agent, models, safety, sync, tiles, tools):
        assert module.__file__ is not None, module.__name__  # a regular package, not a namespace
        assert Path(module.__file__).resolve().is_relative_to(REPO), module.__name__


@pytest.fixture(scope="module")
def mh(manhattan_tiles: Path) -> TileStore:
    return TileStore(manhattan_tiles)


def _edges_of(store: TileStore, name: str) -> np.ndarray:
    g = store.all()
    names = store.way_names(np.unique(g.way_id))
    ways = [w for w, n in names.items() if n == name]
    assert ways, f"no way named {name!r}"
    return np.flatnonzero(np.isin(g.way_id, ways))


def test_summary_counts_real_manhattan(mh: TileStore) -> None:
    s = mh.summary
    assert s["nodes"] > 2000 and s["directed_edges"] > 3000 and s["tiles"] > 4
    assert s["excluded_ways"]["not_drivable_class"] > 5000  # footways, steps, ...
    total_restrictions = sum(s["restrictions"].values()) + sum(s["restrictions_skipped"].values())
    assert total_restrictions == 246  # every restriction relation of the extract is accounted for
    assert mh.meta["attribution"].startswith("© OpenStreetMap contributors")
    assert len(mh.meta["source_sha256"]) == 64


def test_oneway_avenues_respected(mh: TileStore) -> None:
    g = mh.all()
    # 1st Avenue runs north, 2nd Avenue south (one-way pairs of the east side)
    for name, sign in (("1st Avenue", 1), ("2nd Avenue", -1)):
        idx = _edges_of(mh, name)
        oneway = idx[(g.flags[idx] & T.FLAG_ONEWAY) > 0]
        assert len(oneway) > 20
        dlat = g.v_lat[oneway] - g.u_lat[oneway]
        assert np.all(np.sign(dlat[np.abs(dlat) > 1e-5]) == sign), name
        pairs = set(zip(g.u_node[oneway].tolist(), g.v_node[oneway].tolist(), strict=True))
        assert not any((v, u) in pairs for u, v in pairs), f"{name} has a reverse edge"


def test_two_way_street_has_both_directions(mh: TileStore) -> None:
    g = mh.all()
    idx = _edges_of(mh, "West 34th Street")
    pairs = set(zip(g.u_node[idx].tolist(), g.v_node[idx].tolist(), strict=True))
    assert any((v, u) in pairs for u, v in pairs)


def test_turn_restriction_no_left_5th_avenue_to_east_23rd(mh: TileStore) -> None:
    """Relation 1077654: no left turn from 5th Avenue onto East 23rd Street."""
    rel = next(r for r in mh.restrictions() if r["relation_id"] == 1077654)
    assert rel["kind"] == "no_left_turn" and rel["status"] == "applied"
    names = mh.way_names([rel["from_way"], rel["to_way"]])
    assert names[rel["from_way"]] == "5th Avenue"
    assert names[rel["to_way"]] == "East 23rd Street"
    g = mh.all()
    ((frm, to),) = rel["pairs"]
    lf, lt = g.local([frm, to])
    src, dst = g.turn_pairs
    assert not np.any((src == lf) & (dst == lt)), "banned turn is present"
    # the two edges meet at the via node, so without the ban the turn would be direct
    assert g.v_node[lf] == g.u_node[lt]
    path, cost = tiles.edge_path(g, int(lf), int(lt))
    assert len(path) > 2 and cost > g.travel_time_s[lt]


def test_every_applied_restriction_is_honoured(mh: TileStore) -> None:
    g = mh.all()
    src, dst = g.turn_pairs
    present = set(zip(g.edge_id[src].tolist(), g.edge_id[dst].tolist(), strict=True))
    applied = [r for r in mh.restrictions() if r["kind"].startswith("no_") and r["pairs"]]
    assert len(applied) > 150
    for r in applied:
        for f, t in r["pairs"]:
            assert (f, t) not in present, r["relation_id"]
    only = [r for r in mh.restrictions() if r["kind"].startswith("only_") and r["pairs"]]
    for r in only:
        for f, t in r["pairs"]:
            lf = int(g.local([f])[0])
            succ = g.turn_to[g.turn_offsets[lf] : g.turn_offsets[lf + 1]]
            assert set(succ.tolist()) <= {t for ff, t in r["pairs"] if ff == f}


@pytest.mark.parametrize(
    ("way_id", "flag"),
    [
        (33117932, T.FLAG_MOTORWAY),  # FDR Drive, highway=motorway
        (5669581, T.FLAG_MOTORWAY | T.FLAG_RAMP),  # motorway_link
        (476015902, T.FLAG_PRIVATE),  # service road, access=private or driveway
        (1096159986, T.FLAG_PIER),  # service road out on a Hudson River pier
        (847994493, T.FLAG_WINDOWS),  # East 28th Street, destination @ (Fr 17:00-23:00; ...)
        (144183267, T.FLAG_ROUNDABOUT),
    ],
)
def test_flag_set_on_real_manhattan_way(mh: TileStore, way_id: int, flag: int) -> None:
    g = mh.all()
    idx = np.flatnonzero(g.way_id == way_id)
    assert idx.size > 0
    assert np.all((g.flags[idx] & flag) == flag)


def test_no_entry_window_closes_east_28th_on_friday_evening(mh: TileStore) -> None:
    g = mh.all()
    idx = np.flatnonzero(g.way_id == 847994493)
    friday_18 = minute_of_week(4, 18, 0)
    tuesday_18 = minute_of_week(1, 18, 0)
    assert g.closed_at(friday_18)[idx].all()
    assert not g.closed_at(tuesday_18)[idx].any()
    assert not g.cruise_allowed(friday_18)[idx].any()


@pytest.fixture(scope="module")
def sb(shibuya_tiles: Path) -> TileStore:
    return TileStore(shibuya_tiles)


def test_shibuya_time_windowed_no_entry_and_trunk(sb: TileStore) -> None:
    g = sb.all()
    s = sb.summary
    assert s["edges_by_flag"]["no_entry_windows"] >= 38
    # Omoide-dori (思い出通り): no motor vehicles 17:00-05:00 (Sundays from 12:00)
    idx = np.flatnonzero(g.way_id == 49042353)
    assert idx.size and np.all(g.flags[idx] & T.FLAG_WINDOWS)
    assert g.closed_at(minute_of_week(2, 18, 30))[idx].all()
    assert not g.closed_at(minute_of_week(2, 10, 0))[idx].any()
    assert g.closed_at(minute_of_week(6, 13, 0))[idx].all()
    # highway=trunk (e.g. Route 246) is an ordinary road in Japan, not a motorway
    trunk = g.highway == T.HIGHWAY_CODE["trunk"]
    assert trunk.any() and not np.any(g.flags[trunk] & T.FLAG_MOTORWAY)
    # the Shuto Expressway (highway=motorway) is
    mw = g.highway == T.HIGHWAY_CODE["motorway"]
    assert mw.any() and np.all(g.flags[mw] & T.FLAG_MOTORWAY)
    # psv=yes roads are open to taxis
    assert s["edges_by_flag"]["taxi_only"] > 0
    taxi = (g.flags & T.FLAG_TAXI_ONLY) > 0
    assert not np.any(g.flags[taxi] & T.FLAG_PRIVATE)


def test_monaco_builds_and_routes(monaco_tiles: Path) -> None:
    with TileStore(monaco_tiles) as store:
        r = tiles.shortest_path(store, (7.4197, 43.7312), (7.4290, 43.7403))
        assert 800 < r.length_m < 3000
        assert r.duration_s > 0


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True, cwd=REPO
    )


def test_malformed_pbf_one_line_error_no_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(OSM["shibuya"].read_bytes()[:5000])  # a real file, truncated
    out = tmp_path / "out"
    res = _run_cli("tiles", "build", "--osm", str(bad), "--out", str(out))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("nagashi: error:")
    assert "Traceback" not in res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_empty_pbf_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.osm.pbf"
    empty.write_bytes(b"")
    with pytest.raises(TilesDataError, match="empty"):
        build_tiles(empty, tmp_path / "o1")
    with pytest.raises(TilesDataError, match="not found"):
        build_tiles(tmp_path / "nope.osm.pbf", tmp_path / "o2")
    assert not (tmp_path / "o1").exists() or not any((tmp_path / "o1").iterdir())


def test_extract_without_drivable_road(tmp_path: Path) -> None:
    footpath = tmp_path / "footpath.osm"
    footpath.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">\n'
        ' <node id="1" lat="40.75" lon="-73.98" version="1"/>\n'
        ' <node id="2" lat="40.751" lon="-73.981" version="1"/>\n'
        ' <way id="10" version="1"><nd ref="1"/><nd ref="2"/>'
        '<tag k="highway" v="footway"/></way>\n</osm>\n'
    )
    out = tmp_path / "out"
    res = _run_cli("tiles", "build", "--osm", str(footpath), "--out", str(out))
    assert res.returncode == 2
    assert "no drivable road" in res.stderr and "Traceback" not in res.stderr
    assert not (out / "tiles.sqlite").exists()
    assert not list(tmp_path.glob("**/*.tmp"))


def test_corrupt_tile_database_is_rejected(tmp_path: Path) -> None:
    db = tmp_path / "tiles.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    with pytest.raises(TilesDataError):
        TileStore(db)


def _via_way_osm(kind: str) -> str:
    """A from way A (1-2), a via way B (2-3), a to way C (3-4) and another way D (3-5), all
    two-way streets, and one restriction from A via B to C."""
    nodes = {1: (-73.990, 40.750), 2: (-73.989, 40.750), 3: (-73.988, 40.750),
             4: (-73.987, 40.750), 5: (-73.988, 40.751)}  # fmt: skip
    ways = {10: (1, 2), 11: (2, 3), 12: (3, 4), 13: (3, 5)}
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="test">']
    lines += [
        f' <node id="{n}" lat="{lat}" lon="{lon}" version="1"/>' for n, (lon, lat) in nodes.items()
    ]
    for w, (a, b) in ways.items():
        lines.append(
            f' <way id="{w}" version="1"><nd ref="{a}"/><nd ref="{b}"/>'
            '<tag k="highway" v="residential"/></way>'
        )
    lines.append(
        ' <relation id="99" version="1">'
        '<member type="way" ref="10" role="from"/><member type="way" ref="11" role="via"/>'
        '<member type="way" ref="12" role="to"/>'
        f'<tag k="type" v="restriction"/><tag k="restriction" v="{kind}"/></relation>'
    )
    lines.append("</osm>")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["only_straight_on", "no_straight_on"])
def test_via_way_restrictions_are_applied_conservatively(kind: str, tmp_path: Path) -> None:
    """Via-way restrictions bind every approach to the via way (the graph's state is a link,
    not the way the cab came by): only_* leaves the to way as the only way on, no_* bans it."""
    osm = tmp_path / "via.osm"
    osm.write_text(_via_way_osm(kind))
    path, _ = build_tiles(osm, tmp_path / "out")
    with TileStore(path) as store:
        (rel,) = store.restrictions()
        assert rel["status"] == "applied_conservative_via_way"
        g = store.all()
    b, c = g.way_id == 11, g.way_id == 12
    (junction,) = set(g.u_node[b].tolist()) & set(g.u_node[c].tolist())  # node 3
    (b_in,) = np.flatnonzero(b & (g.v_node == junction))  # B towards C
    succ = {int(g.way_id[t]) for t in g.turn_to[g.turn_offsets[b_in] : g.turn_offsets[b_in + 1]]}
    if kind.startswith("only_"):
        assert succ == {12}  # not D (13), not back along B
    else:
        assert 12 not in succ and 13 in succ


def test_tiles_open_from_a_path_with_uri_characters(manhattan_tiles: Path, tmp_path: Path) -> None:
    # '?', '#' and '%' are legal in file names; a hand-built 'file:' URI broke on them
    odd = tmp_path / "area?v=2#1 100%" / "tiles.sqlite"
    odd.parent.mkdir()
    shutil.copyfile(manhattan_tiles, odd)
    with TileStore(odd) as store:
        assert store.meta["source_sha256"] and store.all().n > 1000


def test_one_point_to_line_projection() -> None:
    from tiles.geo import project_onto_line

    # a street driven east then back west: the point projects on the pass asked for
    line = [(-73.98, 40.75), (-73.97, 40.75), (-73.98, 40.75001)]
    along_first, off_first = project_onto_line(line, -73.975, 40.75)
    along_second, off_second = project_onto_line(line, -73.975, 40.75, lo_m=900.0)
    assert off_first < 1.0 and 400 < along_first < 450
    assert off_second < 2.0 and along_second > 1200
    assert project_onto_line([], -73.975, 40.75) == (0.0, float("inf"))
    assert project_onto_line([(-73.975, 40.7509)], -73.975, 40.75)[1] == pytest.approx(
        100, rel=0.01
    )
