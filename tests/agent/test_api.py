"""Local HTTP API: instruction, network, status, health, meter, OpenAPI, JSON errors."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import httpx
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import itertools

from agent.api import AgentState, create_app
from agent.api.server import ApiConfig, ApiServer, parse_listen
from agent.errors import AgentError
from agent.instruction import turn_modifier
from tests.agent.helpers import route_instruction, state_with
from tiles import TileStore


@pytest.fixture(scope="module")
def store(manhattan_tiles: Path) -> TileStore:
    return TileStore(manhattan_tiles)


def test_instruction_and_network(store: TileStore) -> None:
    ins = route_instruction(store)
    client = TestClient(create_app(state_with(store, ins)))
    body = client.get("/v1/instruction").json()
    assert body["schema_version"] == 1 and body["kind"] == "route"
    assert body["route_edges"] == list(ins.route_edges)
    assert len(body["geometry"]["coordinates"]) >= 2
    m = body["maneuver"]
    assert m["type"] in ("turn", "continue") and m["distance_m"] > 0 and m["text"]
    net = client.get("/v1/network", params={"lon": -73.98553, "lat": 40.75796}).json()
    assert net["type"] == "FeatureCollection" and len(net["features"]) > 100
    f = net["features"][0]
    assert f["geometry"]["type"] == "LineString" and "cruise_forbidden" in f["properties"]


def test_instruction_carries_time_zone_and_street_labels(store: TileStore) -> None:
    ins = route_instruction(store)
    state = state_with(store, ins)
    state.bundle = {"hash": "test", "timezone": "America/New_York"}
    client = TestClient(create_app(state))
    body = client.get("/v1/instruction").json()
    assert body["timezone"] == "America/New_York"  # the page's clock shows local time
    labels = body["labels"]
    assert ins.maneuver is not None
    route_names = [lab["text"] for lab in labels if lab["kind"] == "route"]
    assert ins.maneuver.street in route_names  # the street the route turns onto
    cross = [lab for lab in labels if lab["kind"] == "cross"]
    assert len(cross) == 1 and cross[0]["text"] not in route_names[:1]
    assert all(0 <= lab["bearing_deg"] < 360 for lab in labels)
    net = client.get("/v1/network", params={"lon": -73.98553, "lat": 40.75796}).json()
    names = {f["properties"]["name"] for f in net["features"]}
    assert "7th Avenue" in names and "Broadway" in names
    font = client.get("/static/fonts/NotoSansCJKjp-Bold.subset.woff2")
    assert font.status_code == 200 and font.content[:4] == b"wOF2"  # served by the agent


def test_maneuver_is_a_real_turn_on_the_route(store: TileStore) -> None:
    ins = route_instruction(store)
    assert ins.maneuver is not None
    if ins.maneuver.type == "turn":
        assert ins.maneuver.modifier != "straight"
        assert ins.maneuver.street  # Midtown streets are named
    assert turn_modifier(90) == "right" and turn_modifier(-45) == "slight left"
    assert turn_modifier(179) == "uturn" and turn_modifier(10) == "straight"


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"lat": 40.75}, 400, "'lon' is required"),
        ({"lon": "x", "lat": 40.75}, 400, "must be a number"),
        ({"lon": "nan", "lat": 40.75}, 400, "finite"),
        ({"lon": 200, "lat": 40.75}, 400, "out of range"),
        ({"lon": -73.98, "lat": 40.75, "radius_m": 99999}, 400, "radius_m"),
    ],
)
def test_bad_network_requests_get_clear_json_errors(
    store: TileStore, params: dict[str, object], status: int, fragment: str
) -> None:
    client = TestClient(create_app(state_with(store, route_instruction(store))))
    r = client.get("/v1/network", params=params)
    assert r.status_code == status
    assert fragment in r.json()["error"]["message"]


def test_errors_status_health_meter_openapi(store: TileStore) -> None:
    events: list[bool] = []
    state = state_with(store, route_instruction(store))
    state.on_meter = events.append
    state.status_providers["trip_log"] = lambda: {"records_written": 3}
    client = TestClient(create_app(state))
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["status"] == 404
    assert client.post("/v1/instruction").status_code == 405
    assert client.post("/v1/meter", content=b"{").status_code == 400
    assert client.post("/v1/meter", json={"occupied": "yes"}).status_code == 400
    assert client.post("/v1/meter", content=b"x" * 5000).status_code == 413
    assert client.post("/v1/meter", json={"occupied": True}).status_code == 200
    assert events == [True]
    s = client.get("/v1/status").json()
    assert s["bundle"] == {"hash": "test"} and s["trip_log"] == {"records_written": 3}
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/instruction", "/v1/network", "/v1/status", "/healthz", "/v1/meter"} <= set(
        doc["paths"]
    )
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    # offline: nothing is loaded from anywhere but the agent itself
    for path in ("/", "/static/app.js", "/static/app.css"):
        text = client.get(path).text
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), path
        assert not re.search(r"(fetch\(|url\()\s*[\"'`]?(https?:)?//", text), path
        assert "@import" not in text and "fonts.googleapis" not in text


def test_starting_state_is_unhealthy_and_network_unavailable() -> None:
    client = TestClient(create_app(AgentState()))
    h = client.get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "starting"
    r = client.get("/v1/network", params={"lon": -73.98, "lat": 40.75})
    assert r.status_code == 503
    assert client.get("/v1/instruction").json()["kind"] == "waiting"
    assert client.post("/v1/meter", json={"occupied": False}).status_code == 409


def test_server_on_loopback_with_ephemeral_port(store: TileStore) -> None:
    srv = ApiServer(state_with(store, route_instruction(store)), ApiConfig(port=0)).start()
    try:
        assert srv.port > 0 and srv.url.startswith("http://127.0.0.1:")
        r = httpx.get(srv.url + "/v1/instruction", timeout=5)
        assert r.json()["kind"] == "route"
    finally:
        srv.stop()
    assert parse_listen("127.0.0.1:8765") == ApiConfig("127.0.0.1", 8765)
    with pytest.raises(AgentError, match="HOST:PORT"):
        parse_listen("8765")


def test_advance_counts_down_to_the_turn(store: TileStore) -> None:
    from agent.instruction import _along_m, advance
    from tiles.geo import haversine_m

    ins = route_instruction(store)
    assert ins.maneuver is not None
    geom = ins.geometry
    # a point 60 % of the way to the turn, on the route
    target = 0.6 * ins.maneuver.distance_m
    walked = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(geom):
        seg = float(haversine_m(x0, y0, x1, y1))
        if walked + seg >= target:
            f = (target - walked) / seg
            point = (x0 + f * (x1 - x0), y0 + f * (y1 - y0))
            break
        walked += seg
    moved = advance(ins, *point, 200.0)
    assert moved.position == point and moved.heading_deg == 200.0
    assert moved.maneuver is not None
    assert moved.maneuver.distance_m == pytest.approx(0.4 * ins.maneuver.distance_m, abs=1.0)
    assert moved.maneuver.text != ins.maneuver.text or ins.maneuver.distance_m < 25
    # level with the end of the route: nothing left to the turn
    past = advance(ins, *geom[-1], None)
    assert past.maneuver is not None and past.maneuver.distance_m == 0.0
    assert _along_m(geom, *geom[0]) == (0.0, 0.0)
    # a fallback only moves the cab
    fb = route_instruction(store, ok=False, message="Please follow the road")
    assert advance(fb, *point, 10.0).maneuver is None
