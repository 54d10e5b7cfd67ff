"""Map-matching checks on real roads: a stacked expressway, wrong-way and off-road fixes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from safety import MatchCheckConfig, Reason, SafetyGate, TickInput, check_match, path_confidence
from safety.position import _agreeing
from tiles import Graph, NoMatchError, TileStore, match_fix
from tiles import tags as T

from .helpers import NOW_S, fix_on, legal_walk, ok_tick, successors

CFG = MatchCheckConfig()


def test_tamagawa_dori_under_the_shuto_expressway_is_ambiguous(
    shibuya: Graph, shibuya_store: TileStore
) -> None:
    """Route 246 (玉川通り) runs under the Shuto Expressway No. 3 (首都高速3号渋谷線): a fix on
    the street matches both; the gate must not guide there."""
    names = shibuya_store.way_names(shibuya.way_id)
    hits = []
    for i in np.flatnonzero(shibuya.flags & T.CRUISE_FORBIDDEN == 0):
        if names.get(int(shibuya.way_id[i])) != "玉川通り":
            continue
        f = fix_on(shibuya, int(i), 0.5)
        m = match_fix(shibuya, f.lon, f.lat, f.heading_deg, f.speed_mps)
        others = {
            names.get(int(shibuya.way_id[shibuya.local([c.edge_id])[0]])) for c in m.candidates
        }
        if "首都高速3号渋谷線" in others and Reason.MATCH_AMBIGUOUS in check_match(
            shibuya, m, f.heading_deg, CFG
        ):
            hits.append(int(i))
    assert hits, "expected a stacked-road ambiguity on Tamagawa-dori"
    first = hits[0]
    rng = np.random.default_rng(0)
    v = SafetyGate().check(ok_tick(shibuya, first, legal_walk(shibuya, first, 10, rng)))
    assert not v.ok
    assert Reason.MATCH_AMBIGUOUS in v.reasons
    assert v.continuation == ()  # position in doubt: no road is drawn


def test_a_clear_fix_on_a_long_avenue_is_confident(manhattan: Graph) -> None:
    ok = 0
    for i in np.argsort(manhattan.length_m)[::-1][:20]:
        f = fix_on(manhattan, int(i), 0.5)
        m = match_fix(manhattan, f.lon, f.lat, f.heading_deg, f.speed_mps)
        conf, amb = path_confidence(manhattan, m, CFG.ambiguity_ratio)
        ok += int(m.best.edge_id == int(manhattan.edge_id[i]) and conf >= 0.9 and not amb)
    assert ok >= 10


def test_consecutive_links_of_one_street_do_not_dilute_confidence(manhattan: Graph) -> None:
    """Near a node, tiles' raw confidence splits between the link and its successor; the path
    confidence counts both as agreeing."""
    rng = np.random.default_rng(3)
    raw, path = [], []
    for i in rng.choice(np.flatnonzero(manhattan.length_m > 20), 200, replace=False):
        f = fix_on(manhattan, int(i), 0.98)
        m = match_fix(manhattan, f.lon, f.lat, f.heading_deg, f.speed_mps)
        raw.append(m.confidence)
        path.append(path_confidence(manhattan, m, CFG.ambiguity_ratio)[0])
    assert np.median(path) > np.median(raw) + 0.2


def test_wrong_way_on_a_oneway_is_low_confidence(manhattan: Graph) -> None:
    oneway = np.flatnonzero(
        (manhattan.flags & T.FLAG_ONEWAY != 0)
        & (manhattan.flags & T.CRUISE_FORBIDDEN == 0)
        & (manhattan.length_m > 60)
    )
    found = 0
    for i in oneway[:40]:
        f = fix_on(manhattan, int(i), 0.5)
        assert f.heading_deg is not None  # fix_on always gives the link's bearing
        rev = replace(f, heading_deg=(f.heading_deg + 180.0) % 360.0)
        m = match_fix(manhattan, rev.lon, rev.lat, rev.heading_deg, rev.speed_mps)
        if m.best.edge_id == int(manhattan.edge_id[i]):
            assert Reason.MATCH_LOW_CONFIDENCE in check_match(manhattan, m, rev.heading_deg, CFG)
            found += 1
    assert found >= 5


def test_a_fix_40m_off_the_road_is_low_confidence(manhattan: Graph) -> None:
    i = int(np.argmax(manhattan.length_m))
    f = fix_on(manhattan, i, 0.5)
    for dlon in (-0.00048, 0.00048):  # ~40 m east or west
        off = replace(f, lon=f.lon + dlon)
        try:
            m = match_fix(manhattan, off.lon, off.lat, off.heading_deg, off.speed_mps)
        except NoMatchError:
            continue
        if m.best.distance_m > CFG.max_distance_m:
            assert Reason.MATCH_LOW_CONFIDENCE in check_match(manhattan, m, off.heading_deg, CFG)
            return
    pytest.skip("every offset landed near another road")


def test_no_road_near_the_fix(manhattan: Graph) -> None:
    """A real position in the Hudson River, 300 m off the West Side Highway."""
    f = fix_on(manhattan, 0, 0.5)
    river = replace(f, lon=-74.0200, lat=40.7450)
    with pytest.raises(NoMatchError):
        match_fix(manhattan, river.lon, river.lat)
    v = SafetyGate().check(
        TickInput(now_s=NOW_S, minute_of_week=600.0, fix=river, graph=manhattan, route=[0])
    )
    assert not v.ok
    assert Reason.MATCH_NONE in v.reasons
    assert v.edge_id is None


def test_a_fix_before_a_junction_mapped_as_several_nodes_is_not_ambiguous(
    manhattan: Graph,
) -> None:
    """A fix 3 m before the end of a link that goes on straight through a link of at most
    ``short_link_m`` (a junction OSM splits into nodes a few metres apart), heading along:
    the links past the short one are the cab's way, not another road. Failed before the
    short-link rule: 52 of the 76 such fixes on the Midtown tiles were MATCH_AMBIGUOUS."""
    short = 10.0  # a link this short between two nodes of one junction
    cases = []
    allowed = (manhattan.flags & T.CRUISE_FORBIDDEN == 0) & (manhattan.length_m > 30)
    for i in np.flatnonzero(allowed).tolist():
        for s in successors(manhattan, i).tolist():
            turn = float(manhattan.bearing_start[s]) - float(manhattan.bearing_end[i]) + 180.0
            straight = abs(turn % 360.0 - 180.0) < 20.0
            back = manhattan.v_node[s] == manhattan.u_node[i]
            if manhattan.length_m[s] <= short and straight and not back:
                cases.append(i)
                break
    assert len(cases) > 50
    ambiguous = []
    for i in cases:
        f = fix_on(manhattan, i, 1.0 - 3.0 / float(manhattan.length_m[i]))
        m = match_fix(manhattan, f.lon, f.lat, f.heading_deg, f.speed_mps, CFG.matching)
        if Reason.MATCH_AMBIGUOUS in check_match(manhattan, m, f.heading_deg, CFG):
            ambiguous.append(i)
    assert len(ambiguous) <= 0.15 * len(cases)


def test_the_short_link_rule_passes_agreement_on_only_along_the_way(manhattan: Graph) -> None:
    """Past a short agreeing link, only the links after it (ahead) or before it (behind)
    agree, never the link back along it; with ``short_link_m = 0`` the rule is the old one:
    the links just before and after the best one."""
    rng = np.random.default_rng(5)
    for i in rng.choice(np.flatnonzero(manhattan.length_m > 20), 100, replace=False).tolist():
        f = fix_on(manhattan, i, 0.97)
        m = match_fix(manhattan, f.lon, f.lat, f.heading_deg, f.speed_mps)
        loc = manhattan.local([c.edge_id for c in m.candidates]).astype(np.int64)
        b = int(manhattan.local([m.best.edge_id])[0])
        bu, bv = manhattan.u_node[b], manhattan.v_node[b]
        u, v = manhattan.u_node[loc], manhattan.v_node[loc]
        reverse = (u == bv) & (v == bu)
        old = (loc == b) | (((v == bu) | (u == bv)) & ~reverse)
        assert np.array_equal(_agreeing(manhattan, b, loc, 0.0), old)
        chained = _agreeing(manhattan, b, loc, CFG.short_link_m)
        assert (chained >= old).all()
        for k in np.flatnonzero(chained & ~old).tolist():  # reached through a short link
            via = [
                j
                for j in np.flatnonzero(chained).tolist()
                if manhattan.length_m[loc[j]] <= CFG.short_link_m
                and (v[j] == u[k] or u[j] == v[k])
                and not (u[j] == v[k] and v[j] == u[k])
            ]
            assert via, (i, int(manhattan.edge_id[loc[k]]))
