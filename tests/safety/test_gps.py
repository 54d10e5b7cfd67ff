"""GPS input checks on real positions (Manhattan and Shibuya links)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from safety import BusinessArea, Fix, GpsConfig, Reason, check_fix
from tiles import Graph

from .helpers import NOW_S, fix_on

CFG = GpsConfig()


def _good(g: Graph) -> Fix:
    return fix_on(g, int(np.argmax(g.length_m)), 0.5)


@pytest.mark.parametrize("area", ["manhattan", "shibuya"])
def test_a_good_fix_passes(area: str, request: pytest.FixtureRequest) -> None:
    g = request.getfixturevalue(area)
    fix = _good(g)
    box = BusinessArea.from_bbox(
        float(g.u_lon.min()), float(g.u_lat.min()), float(g.u_lon.max()), float(g.u_lat.max())
    )
    r = check_fix(fix, None, NOW_S, box, CFG)
    assert r.reasons == ()
    assert r.heading_deg == pytest.approx(fix.heading_deg)


def test_missing_fix(manhattan: Graph) -> None:
    assert check_fix(None, None, NOW_S, None, CFG).reasons == (Reason.GPS_MISSING,)


@pytest.mark.parametrize(
    "field,value",
    [
        ("lon", math.nan),
        ("lat", math.inf),
        ("time_s", math.nan),
        ("speed_mps", math.nan),
        ("accuracy_m", -math.inf),
        ("heading_deg", math.inf),
        ("lon", "40.7"),
        ("lat", None),
    ],
)
def test_nan_and_non_numbers(manhattan: Graph, field: str, value: object) -> None:
    fix = replace(_good(manhattan), **{field: value})  # type: ignore[arg-type]  # bad types on purpose
    assert check_fix(fix, None, NOW_S, None, CFG).reasons == (Reason.GPS_NAN,)


def test_nan_heading_means_no_heading(manhattan: Graph) -> None:
    fix = replace(_good(manhattan), heading_deg=math.nan, speed_mps=0.5)
    assert check_fix(fix, None, NOW_S, None, CFG).reasons == (Reason.GPS_NO_HEADING_LOW_SPEED,)


@pytest.mark.parametrize(
    "field,value",
    [
        ("lon", 181.0),
        ("lat", -90.5),
        ("heading_deg", 361.0),
        ("heading_deg", -1.0),
        ("speed_mps", -0.1),
        ("speed_mps", 120.0),
        ("accuracy_m", -1.0),
    ],
)
def test_out_of_range(manhattan: Graph, field: str, value: float) -> None:
    fix = replace(_good(manhattan), **{field: value})
    assert check_fix(fix, None, NOW_S, None, CFG).reasons == (Reason.GPS_OUT_OF_RANGE,)


def test_swapped_lat_lon_is_out_of_range_or_outside(manhattan: Graph) -> None:
    fix = _good(manhattan)
    swapped = replace(fix, lon=fix.lat, lat=fix.lon)  # (40.7, -73.9): a valid point, wrong place
    box = BusinessArea.from_bbox(-74.02, 40.73, -73.96, 40.76)
    assert Reason.GPS_OUTSIDE_AREA in check_fix(swapped, None, NOW_S, box, CFG).reasons


def test_outside_the_business_area(manhattan: Graph, shibuya: Graph) -> None:
    # a real Shibuya position against the Manhattan business area
    box = BusinessArea.from_bbox(
        float(manhattan.u_lon.min()),
        float(manhattan.u_lat.min()),
        float(manhattan.u_lon.max()),
        float(manhattan.u_lat.max()),
    )
    assert check_fix(_good(shibuya), None, NOW_S, box, CFG).reasons == (Reason.GPS_OUTSIDE_AREA,)
    assert check_fix(_good(manhattan), None, NOW_S, box, CFG).reasons == ()


def test_polygon_area_from_geojson(manhattan: Graph) -> None:
    fix = _good(manhattan)
    d = 0.001
    tri = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [fix.lon - d, fix.lat - d],
                    [fix.lon + d, fix.lat - d],
                    [fix.lon, fix.lat + d],
                    [fix.lon - d, fix.lat - d],
                ]
            ],
        },
    }
    area = BusinessArea.from_geojson(tri)
    assert check_fix(fix, None, NOW_S, area, CFG).reasons == ()
    far = replace(fix, lon=fix.lon + 2 * d)
    assert Reason.GPS_OUTSIDE_AREA in check_fix(far, None, NOW_S, area, CFG).reasons


def test_stale_and_future_fixes(manhattan: Graph) -> None:
    fix = _good(manhattan)
    old = replace(fix, time_s=NOW_S - CFG.max_fix_age_s - 0.1)
    assert check_fix(old, None, NOW_S, None, CFG).reasons == (Reason.GPS_STALE,)
    edge = replace(fix, time_s=NOW_S - CFG.max_fix_age_s + 0.1)
    assert check_fix(edge, None, NOW_S, None, CFG).reasons == ()
    future = replace(fix, time_s=NOW_S + 60.0)
    assert check_fix(future, None, NOW_S, None, CFG).reasons == (Reason.GPS_STALE,)
    assert check_fix(fix, None, math.nan, None, CFG).reasons == (Reason.GPS_STALE,)


def test_jump_between_real_places(manhattan: Graph) -> None:
    # two real links ~1 km apart, one second apart: 3600 km/h
    a = fix_on(manhattan, 0, 0.5, time_s=NOW_S - 1.5)
    far = np.flatnonzero(np.hypot(manhattan.u_lon - a.lon, manhattan.u_lat - a.lat) > 0.01)[0]
    b = fix_on(manhattan, int(far), 0.5, time_s=NOW_S - 0.5)
    assert Reason.GPS_JUMP in check_fix(b, a, NOW_S, None, CFG).reasons
    # the same step over 10 minutes is plausible (previous fix outside the jump window
    # is ignored), and over 60 s it is 60+ km/h: fine
    slow = replace(a, time_s=NOW_S - 60.5)
    assert Reason.GPS_JUMP not in check_fix(b, slow, NOW_S, None, CFG).reasons
    # a fix that goes back in time while moving is a jump too
    back = replace(a, time_s=NOW_S)
    assert Reason.GPS_JUMP in check_fix(b, back, NOW_S, None, CFG).reasons


def test_small_step_within_accuracy_is_not_a_jump(manhattan: Graph) -> None:
    a = fix_on(manhattan, 5, 0.50, time_s=NOW_S - 0.6, accuracy_m=10.0)
    b = fix_on(manhattan, 5, 0.52, time_s=NOW_S - 0.5, accuracy_m=10.0)
    assert Reason.GPS_JUMP not in check_fix(b, a, NOW_S, None, CFG).reasons


def test_poor_or_unknown_accuracy(shibuya: Graph) -> None:
    fix = _good(shibuya)
    assert check_fix(replace(fix, accuracy_m=80.0), None, NOW_S, None, CFG).reasons == (
        Reason.GPS_POOR_ACCURACY,
    )
    assert check_fix(replace(fix, accuracy_m=None), None, NOW_S, None, CFG).reasons == (
        Reason.GPS_POOR_ACCURACY,
    )


def test_heading_missing_at_low_speed(shibuya: Graph) -> None:
    fix = _good(shibuya)
    stopped = replace(fix, speed_mps=0.3)
    r = check_fix(stopped, None, NOW_S, None, CFG)
    assert r.reasons == (Reason.GPS_NO_HEADING_LOW_SPEED,)
    assert check_fix(replace(fix, heading_deg=None), None, NOW_S, None, CFG).reasons == (
        Reason.GPS_NO_HEADING_LOW_SPEED,
    )


def test_heading_derived_from_previous_fix(manhattan: Graph) -> None:
    i = int(np.argmax(manhattan.length_m))
    a = fix_on(manhattan, i, 0.3, time_s=NOW_S - 3.5)
    b = replace(fix_on(manhattan, i, 0.5, time_s=NOW_S - 0.5), heading_deg=None, speed_mps=None)
    r = check_fix(b, a, NOW_S, None, CFG)
    assert r.reasons == ()
    assert r.heading_deg is not None and a.heading_deg is not None
    assert abs((r.heading_deg - a.heading_deg + 180) % 360 - 180) < 15


def test_a_stopped_cab_keeps_the_heading_it_had_while_moving(manhattan: Graph) -> None:
    i = int(np.argmax(manhattan.length_m))
    moving = fix_on(manhattan, i, 0.50, time_s=NOW_S - 60.0, speed_mps=6.0)
    stopped = replace(
        fix_on(manhattan, i, 0.505, time_s=NOW_S - 0.5), heading_deg=None, speed_mps=0.0
    )
    r = check_fix(stopped, None, NOW_S, None, CFG, last_moving=moving)
    assert r.reasons == () and r.heading_source == "held"
    assert r.heading_deg == pytest.approx(moving.heading_deg)
    # too long ago, too far away, or not actually moving then: the heading is not known
    old = replace(moving, time_s=NOW_S - CFG.held_heading_max_age_s - 5)
    far = fix_on(manhattan, i, 0.9, time_s=NOW_S - 60.0, speed_mps=6.0)
    crawl = replace(moving, speed_mps=0.5)
    for last in (old, far, crawl, None):
        assert check_fix(stopped, None, NOW_S, None, CFG, last_moving=last).reasons == (
            Reason.GPS_NO_HEADING_LOW_SPEED,
        )
    # a fix without heading at speed has moved on: the held heading is not used
    fast = replace(stopped, speed_mps=10.0)
    assert check_fix(fast, None, NOW_S, None, CFG, last_moving=moving).reasons == (
        Reason.GPS_NO_HEADING_LOW_SPEED,
    )


def test_a_cab_that_turned_while_crawling_does_not_keep_its_old_heading(manhattan: Graph) -> None:
    i = int(np.argmax(manhattan.length_m))
    moving = fix_on(manhattan, i, 0.50, time_s=NOW_S - 30.0, speed_mps=6.0)
    assert moving.heading_deg is not None
    crawl = fix_on(manhattan, i, 0.505, time_s=NOW_S - 0.5, speed_mps=1.2)
    same = replace(crawl, heading_deg=(moving.heading_deg + 10.0) % 360.0)
    turned = replace(crawl, heading_deg=(moving.heading_deg + 90.0) % 360.0)
    assert check_fix(same, None, NOW_S, None, CFG, last_moving=moving).heading_source == "held"
    assert check_fix(turned, None, NOW_S, None, CFG, last_moving=moving).reasons == (
        Reason.GPS_NO_HEADING_LOW_SPEED,
    )
