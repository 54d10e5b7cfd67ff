"""Route checks on real forbidden links: FDR Drive, driveways, piers, Shibuya's no-entry
windows, real turn restrictions; and the "follow the road" continuation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from safety import (
    BusinessArea,
    Reason,
    RouteConfig,
    SafetyConfig,
    SafetyGate,
    check_route,
    follow_the_road,
    hard_to_judge,
    judge_route,
)
from tiles import Graph, TileStore
from tiles import tags as T

from .helpers import Oracle, is_u_turn, legal_walk, long_walk, ok_tick, successors

CFG = RouteConfig()
MONDAY_10H = 600.0


def gid(g: Graph, *local: int) -> list[int]:
    return [int(g.edge_id[i]) for i in local]


def entries_into(g: Graph, flag: int) -> list[tuple[int, int]]:
    """(allowed link, flagged successor) pairs: a legal turn into a flagged link."""
    out = []
    for a in np.flatnonzero(g.flags & T.CRUISE_FORBIDDEN == 0):
        for b in successors(g, int(a)):
            if int(g.flags[b]) & flag:
                out.append((int(a), int(b)))
    return out


def test_legal_walks_pass(manhattan: Graph, shibuya: Graph) -> None:
    rng = np.random.default_rng(1)
    for g in (manhattan, shibuya):
        passed = 0
        for a in rng.choice(np.flatnonzero(g.cruise_allowed(int(MONDAY_10H))), 50):
            route = legal_walk(g, int(a), 15, rng, int(MONDAY_10H))
            r = check_route(g, route, route[0], 0.5, MONDAY_10H, CFG)
            passed += r == ()
            assert Reason.ROUTE_FORBIDDEN_LINK not in r
            assert Reason.ROUTE_ILLEGAL_TURN not in r
        assert passed >= 40


def test_fdr_drive_is_forbidden(manhattan: Graph, manhattan_store: TileStore) -> None:
    names = manhattan_store.way_names(manhattan.way_id)
    fdr = [
        int(i)
        for i in np.flatnonzero(manhattan.flags & T.FLAG_MOTORWAY)
        if names.get(int(manhattan.way_id[i])) == "FDR Drive"
    ]
    assert fdr
    a = fdr[0]
    b = int(successors(manhattan, a)[0])
    # the cab is on the FDR: the next FDR link is entered, hence forbidden; and no guidance
    r = check_route(manhattan, gid(manhattan, a, b), int(manhattan.edge_id[a]), 0.5, 600, CFG)
    assert Reason.ROUTE_FORBIDDEN_LINK in r
    assert hard_to_judge(manhattan, int(manhattan.edge_id[a]), 0.5, None, CFG)
    # a street turning onto a motorway (on-ramp): forbidden
    a2, b2 = entries_into(manhattan, T.FLAG_MOTORWAY)[0]
    r2 = check_route(manhattan, gid(manhattan, a2, b2), int(manhattan.edge_id[a2]), 0.5, 600, CFG)
    assert r2 == (Reason.ROUTE_FORBIDDEN_LINK,)


def test_private_driveway_is_forbidden(manhattan: Graph, manhattan_store: TileStore) -> None:
    pairs = [
        (a, b)
        for a, b in entries_into(manhattan, T.FLAG_PRIVATE)
        if manhattan_store.way_tags(int(manhattan.way_id[b])).get("service") == "driveway"
    ]
    assert pairs
    a, b = pairs[0]
    r = check_route(manhattan, gid(manhattan, a, b), int(manhattan.edge_id[a]), 0.2, 600, CFG)
    assert Reason.ROUTE_FORBIDDEN_LINK in r


def test_a_cab_may_leave_the_driveway_it_is_on(manhattan: Graph) -> None:
    """The current link is exempt: a cab in a private driveway is routed out of it, but gets no
    turn-by-turn guidance while there."""
    for a in np.flatnonzero(manhattan.flags & T.FLAG_PRIVATE):
        outs = [int(b) for b in successors(manhattan, int(a)) if manhattan.cruise_allowed()[b]]
        if outs:
            route = gid(manhattan, int(a), outs[0])
            r = check_route(manhattan, route, route[0], 0.5, 600, CFG)
            assert Reason.ROUTE_FORBIDDEN_LINK not in r
            assert hard_to_judge(manhattan, route[0], 0.5, None, CFG)
            return
    pytest.fail("no private link with a public exit")


def test_pier_is_forbidden(manhattan: Graph) -> None:
    piers = np.flatnonzero(manhattan.flags & T.FLAG_PIER)
    assert piers.size
    # any legal turn into a pier link (from wherever the cab is) enters a forbidden link
    for b in piers:
        preds = np.flatnonzero(
            [
                int(manhattan.edge_id[b])
                in set(
                    manhattan.turn_to[
                        manhattan.turn_offsets[a] : manhattan.turn_offsets[a + 1]
                    ].tolist()
                )
                for a in range(manhattan.n)
            ]
        )
        if preds.size:
            a = int(preds[0])
            r = check_route(
                manhattan, gid(manhattan, a, int(b)), int(manhattan.edge_id[a]), 0.5, 600, CFG
            )
            assert Reason.ROUTE_FORBIDDEN_LINK in r
            return
    pytest.fail("no pier link can be entered")


def _window_entry(g: Graph, store: TileStore, value: str) -> tuple[int, int]:
    for a in np.flatnonzero(g.flags & T.CRUISE_FORBIDDEN == 0):
        for b in successors(g, int(a)):
            tags = store.way_tags(int(g.way_id[b]))
            tagged = value in (
                tags.get("access:conditional"),
                tags.get("motor_vehicle:conditional"),
            )
            # a link whose other conditional tag closed it at all times for doubt is no window
            open_monday = not g.closed_at(10 * 60)[b]
            if (
                tagged
                and open_monday
                and not g.flags[b] & T.CRUISE_FORBIDDEN
                and not g.closed_at(9000)[a]
            ):
                return int(a), int(b)
    raise AssertionError(f"no link tagged {value!r}")


def test_shibuya_no_entry_window_at_its_closed_time(
    shibuya: Graph, shibuya_store: TileStore
) -> None:
    """A Shibuya street closed to traffic on Sundays 12:00-17:00 (no @ (Su 12:00-17:00))."""
    a, b = _window_entry(shibuya, shibuya_store, "no @ (Su 12:00-17:00)")
    route = gid(shibuya, a, b)
    sunday = 6 * 1440
    closed = check_route(shibuya, route, route[0], 0.5, sunday + 13 * 60, CFG)
    assert closed == (Reason.ROUTE_CLOSED_WINDOW,)
    assert bool(shibuya.closed_at(sunday + 13 * 60)[b])
    assert check_route(shibuya, route, route[0], 0.5, sunday + 10 * 60, CFG) == ()
    assert check_route(shibuya, route, route[0], 0.5, 2 * 1440 + 13 * 60, CFG) == ()  # Wed
    # one second before the window opens, at the very start of the previous link: the cab will
    # get there after 12:00 even at free flow
    assert check_route(shibuya, route, route[0], 0.0, sunday + 12 * 60 - 1 / 60, CFG) == (
        Reason.ROUTE_CLOSED_WINDOW,
    )


def test_window_seen_across_the_week_boundary(shibuya: Graph, shibuya_store: TileStore) -> None:
    """Cerulean Tower-dori is closed 17:00-05:00 daily: Sunday 23:59 into Monday is closed."""
    a, b = _window_entry(shibuya, shibuya_store, "no @ (17:00-05:00; Su: 12:00-05:00)")
    route = gid(shibuya, a, b)
    assert check_route(shibuya, route, route[0], 0.99, 7 * 1440 - 0.5, CFG) == (
        Reason.ROUTE_CLOSED_WINDOW,
    )
    assert check_route(shibuya, route, route[0], 0.99, 10 * 60, CFG) == ()


def test_real_turn_restriction(manhattan: Graph, manhattan_store: TileStore) -> None:
    applied = [
        (r["kind"], p)
        for r in manhattan_store.restrictions()
        if r["status"] == "applied" and r["kind"].startswith("no_")
        for p in r["pairs"]
    ]
    tested = 0
    for kind, (f, t) in applied:
        a, b = (int(x) for x in manhattan.local([f, t]))
        if manhattan.v_node[a] != manhattan.u_node[b]:
            continue
        if (manhattan.flags[[a, b]] & T.CRUISE_FORBIDDEN).any():
            continue
        r = check_route(manhattan, [f, t], f, 0.5, MONDAY_10H, CFG)
        assert Reason.ROUTE_ILLEGAL_TURN in r, kind
        tested += 1
    assert tested >= 20


def test_disconnected_links(manhattan: Graph) -> None:
    rng = np.random.default_rng(2)
    route = long_walk(manhattan, rng, 10)
    broken = route[:4] + route[6:]
    assert Reason.ROUTE_DISCONNECTED in check_route(manhattan, broken, route[0], 0.5, 600, CFG)


def test_u_turn_and_repeated_links(manhattan: Graph) -> None:
    # a legal U-turn in the graph (dead end or turnaround) is still not a cruising instruction
    src, dst = manhattan.turn_pairs
    k = next(
        k
        for k in range(src.size)
        if is_u_turn(manhattan, int(src[k]), int(dst[k]))
        and not (manhattan.flags[[src[k], dst[k]]] & T.CRUISE_FORBIDDEN).any()
    )
    route = gid(manhattan, int(src[k]), int(dst[k]))
    assert Reason.ROUTE_LOOP in check_route(manhattan, route, route[0], 0.5, 600, CFG)
    assert check_route(
        manhattan, route, route[0], 0.5, 600, RouteConfig(max_u_turns=1)
    ) == () or Reason.ROUTE_LOOP not in check_route(
        manhattan, route, route[0], 0.5, 600, RouteConfig(max_u_turns=1)
    )
    # circling one block three times
    rng = np.random.default_rng(5)
    for a in rng.choice(manhattan.n, 400):
        cyc = _block(manhattan, int(a))
        if cyc:
            three = gid(manhattan, *(cyc * 3))
            assert Reason.ROUTE_LOOP in check_route(manhattan, three, three[0], 0.5, 600, CFG)
            two = gid(manhattan, *(cyc * 2))
            assert Reason.ROUTE_LOOP not in check_route(manhattan, two, two[0], 0.5, 600, CFG)
            return
    pytest.fail("no block found")


def _block(g: Graph, a: int) -> list[int] | None:
    """A cycle of legal right-ish turns back to ``a`` within 6 links."""
    path = [a]
    cur = a
    for _ in range(6):
        succ = [
            int(s) for s in successors(g, cur) if g.cruise_allowed()[s] and not is_u_turn(g, cur, s)
        ]
        if a in succ and len(path) >= 3:
            return path
        if not succ:
            return None
        turn = [((float(g.bearing_start[s]) - float(g.bearing_end[cur])) % 360.0) for s in succ]
        right = [s for s, t in zip(succ, turn, strict=True) if 45 <= t <= 135]
        if not right:
            return None
        cur = right[0]
        if cur in path:
            return None
        path.append(cur)
    return None


def test_absurd_length(manhattan: Graph) -> None:
    rng = np.random.default_rng(4)
    route = long_walk(manhattan, rng, 200)
    short = RouteConfig(max_length_m=500.0, max_visits_per_link=100)
    assert Reason.ROUTE_ABSURD_LENGTH in check_route(manhattan, route, route[0], 0.5, 600, short)
    few = RouteConfig(max_links=5)
    assert check_route(manhattan, route, route[0], 0.5, 600, few) == (Reason.ROUTE_ABSURD_LENGTH,)


def test_route_not_from_the_cab_position(manhattan: Graph) -> None:
    rng = np.random.default_rng(6)
    route = long_walk(manhattan, rng, 10)
    # starting one link ahead is fine (the rest of the current link is driven first)
    assert check_route(manhattan, route[1:], route[0], 0.5, 600, CFG) == ()
    # starting two links ahead, or somewhere else, is not
    r = check_route(manhattan, route[2:], route[0], 0.5, 600, CFG)
    assert Reason.ROUTE_NOT_FROM_POSITION in r
    far = legal_walk(manhattan, 2000, 5, rng)
    assert Reason.ROUTE_NOT_FROM_POSITION in check_route(manhattan, far, route[0], 0.5, 600, CFG)
    # the reverse direction of a two-way street, from a cab heading the other way
    a = int(manhattan.local([route[0]])[0])
    rev = np.flatnonzero(
        (manhattan.u_node == manhattan.v_node[a]) & (manhattan.v_node == manhattan.u_node[a])
    )
    if rev.size:
        r = check_route(manhattan, gid(manhattan, int(rev[0])), route[0], 0.5, 600, CFG)
        assert Reason.ROUTE_NOT_FROM_POSITION in r


def test_unknown_links_and_garbage(manhattan: Graph) -> None:
    assert check_route(manhattan, [10**9], 0, 0.5, 600, CFG) == (Reason.ROUTE_UNKNOWN_LINK,)
    assert check_route(manhattan, [-1, 3], 0, 0.5, 600, CFG) == (Reason.ROUTE_UNKNOWN_LINK,)
    text_ids: list[int] = ["a", "b"]  # type: ignore[list-item]  # not ids, on purpose
    assert check_route(manhattan, text_ids, 0, 0.5, 600, CFG) == (Reason.ROUTE_UNKNOWN_LINK,)
    float_ids: list[int] = [1.5]  # type: ignore[list-item]  # not an id, on purpose
    assert check_route(manhattan, float_ids, 0, 0.5, 600, CFG) == (Reason.ROUTE_UNKNOWN_LINK,)
    assert check_route(manhattan, [], 0, 0.5, 600, CFG) == (Reason.ROUTE_MISSING,)


def test_outside_the_business_area(manhattan: Graph) -> None:
    rng = np.random.default_rng(7)
    route = long_walk(manhattan, rng, 20)
    loc = manhattan.local(route)
    # an area holding only the first half of the route
    lons = np.concatenate([manhattan.u_lon[loc[:3]], manhattan.v_lon[loc[:3]]])
    lats = np.concatenate([manhattan.u_lat[loc[:3]], manhattan.v_lat[loc[:3]]])
    area = BusinessArea.from_bbox(lons.min(), lats.min(), lons.max(), lats.max())
    mask = area.edge_mask(manhattan)
    assert mask[loc[:3]].all() and not mask[loc].all()
    r = check_route(manhattan, route, route[0], 0.5, 600, CFG, mask)
    assert Reason.ROUTE_OUTSIDE_AREA in r
    assert Reason.ROUTE_OUTSIDE_AREA not in check_route(
        manhattan, route[:3], route[0], 0.5, 600, CFG, mask
    )


def test_hard_to_judge_roads_get_the_message(manhattan: Graph, shibuya: Graph) -> None:
    for g in (manhattan, shibuya):
        for flag in (T.FLAG_COMPLEX, T.FLAG_RAMP):
            legal = np.flatnonzero((g.flags & flag != 0) & (g.flags & T.CRUISE_FORBIDDEN == 0))
            assert legal.size, flag
            a = int(legal[np.argmax(g.length_m[legal])])
            rng = np.random.default_rng(8)
            route = legal_walk(g, a, 8, rng)
            v = SafetyGate(locale="ja").check(ok_tick(g, a, route, fraction=0.3))
            assert not v.ok
            assert Reason.HARD_TO_JUDGE_ROAD in v.reasons or Reason.MATCH_AMBIGUOUS in v.reasons
            assert v.message


def test_follow_the_road_keeps_the_street(manhattan: Graph, manhattan_store: TileStore) -> None:
    names = manhattan_store.way_names(manhattan.way_id)
    rng = np.random.default_rng(9)
    same_name = total = 0
    for a in rng.choice(np.flatnonzero(manhattan.cruise_allowed()), 100):
        cont = follow_the_road(manhattan, int(manhattan.edge_id[a]), 600, CFG)
        assert cont[0] == int(manhattan.edge_id[a])
        loc = [int(x) for x in manhattan.local(list(cont))]
        # every step is a legal turn, never a U-turn, never into a forbidden link
        for x, y in itertools.pairwise(loc):
            assert (
                int(manhattan.edge_id[y])
                in manhattan.turn_to[
                    manhattan.turn_offsets[x] : manhattan.turn_offsets[x + 1]
                ].tolist()
            )
            assert not is_u_turn(manhattan, x, y)
            assert not manhattan.flags[y] & T.CRUISE_FORBIDDEN
        assert len(set(loc)) == len(loc)
        if len(loc) > 1:
            total += 1
            same_name += names.get(int(manhattan.way_id[loc[1]])) == names.get(
                int(manhattan.way_id[loc[0]])
            )
    assert total >= 60 and same_name / total > 0.8


def test_oracle_agrees_on_a_banned_turn(manhattan: Graph, manhattan_store: TileStore) -> None:
    oracle = Oracle.from_restrictions(manhattan, manhattan_store.restrictions())
    f, t = sorted(oracle.banned_pairs)[0]
    assert oracle.violations([f, t], f, 600)
    assert oracle.only_turns


def test_loops_far_ahead_trim_the_route_instead_of_rejecting_it(manhattan: Graph) -> None:
    """A U-turn 1 km ahead does not make the first kilometre unsafe: the prefix is shown."""
    rng = np.random.default_rng(12)
    # about 1 walk in 60 ends where a U-turn is legal: try enough of them (it stops at the first)
    for _ in range(1000):
        route = long_walk(manhattan, rng, 25)
        last = int(manhattan.local([route[-1]])[0])
        rev = [int(s) for s in successors(manhattan, last) if is_u_turn(manhattan, last, int(s))]
        if not rev:
            continue
        looped = [*route, int(manhattan.edge_id[rev[0]])]
        j = judge_route(manhattan, looped, looped[0], 0.5, MONDAY_10H, CFG)
        if j.reasons:
            continue
        assert j.trimmed == (Reason.ROUTE_LOOP,)
        assert j.keep == len(route)
        assert judge_route(manhattan, route, route[0], 0.5, MONDAY_10H, CFG).all_reasons == ()
        v = SafetyGate(SafetyConfig(require_demand=False)).check(
            ok_tick(manhattan, int(manhattan.local([route[0]])[0]), looped)
        )
        if v.ok:
            assert v.route == tuple(route) and v.trimmed == (Reason.ROUTE_LOOP,)
        return
    pytest.fail("no walk ending in a legal U-turn")


def test_a_loop_right_ahead_is_a_fallback(manhattan: Graph) -> None:
    src, dst = manhattan.turn_pairs
    for k in range(src.size):
        a, b = int(src[k]), int(dst[k])
        if not is_u_turn(manhattan, a, b) or manhattan.length_m[a] < 60:
            continue
        if (manhattan.flags[[a, b]] & T.HARD_TO_JUDGE).any():
            continue
        v = SafetyGate(SafetyConfig(require_demand=False)).check(
            ok_tick(manhattan, a, gid(manhattan, a, b), fraction=0.2)
        )
        if v.edge_id == int(manhattan.edge_id[a]):
            assert not v.ok and Reason.ROUTE_LOOP in v.reasons
            return
    pytest.fail("no U-turn found")


def test_an_extract_without_turn_restrictions_has_none(shibuya_store: TileStore) -> None:
    """Shibuya's extract has no restriction relations: the store says so instead of failing."""
    assert shibuya_store.restrictions() == []


def test_unknown_arrival_time_counts_as_closed(shibuya: Graph, shibuya_store: TileStore) -> None:
    """A link of speed 0 before a windowed link (corrupt tile): the arrival there is unknown."""
    from dataclasses import replace as dc_replace

    a, b = _window_entry(shibuya, shibuya_store, "no @ (Su 12:00-17:00)")
    speed = np.array(shibuya.speed_kph, copy=True)
    speed[a] = 0.0
    broken = dc_replace(shibuya, speed_kph=speed)
    route = gid(shibuya, a, b)
    with np.errstate(divide="ignore"):
        r = check_route(broken, route, route[0], 0.5, 2 * 1440, CFG)  # a Wednesday: open
    assert r == (Reason.ROUTE_CLOSED_WINDOW,)
    assert check_route(shibuya, route, route[0], 0.5, 2 * 1440, CFG) == ()


def test_public_holiday_window_on_the_real_date(shibuya: Graph, shibuya_store: TileStore) -> None:
    """``no @ (PH 12:00-17:00)``: closed on 勤労感謝の日 (Monday 2026-11-23) at 13:00, open on
    the next Monday; the "follow the road" continuation does not enter it either."""
    import datetime as dt

    from safety.route import closed_now

    a, b = _window_entry(shibuya, shibuya_store, "no @ (PH 12:00-17:00)")
    route = gid(shibuya, a, b)
    one_pm = 13 * 60
    holiday, ordinary = dt.date(2026, 11, 23), dt.date(2026, 11, 30)
    assert check_route(shibuya, route, route[0], 0.5, one_pm, CFG, monday=holiday) == (
        Reason.ROUTE_CLOSED_WINDOW,
    )
    assert check_route(shibuya, route, route[0], 0.5, one_pm, CFG, monday=ordinary) == ()
    assert check_route(shibuya, route, route[0], 0.5, one_pm, CFG) == ()  # an ordinary week
    assert closed_now(shibuya, b, one_pm, holiday)
    assert not closed_now(shibuya, b, one_pm, ordinary)
