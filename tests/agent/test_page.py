"""The tablet page in a real headless Chromium: screenshot, then check the pixels.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped where it is
absent on a developer's machine, a failure under ``CI=true``.
The page must draw everything from the agent's own API (no network besides loopback).

Every screenshot is kept: set ``NAGASHI_SCREENSHOTS=DIR`` to find them there (en/ja x
landscape 1280x800 / portrait 800x1280), to judge a change of the page by eye.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from agent.api import AgentState
from agent.api.server import ApiConfig, ApiServer
from agent.instruction import Instruction, build_instruction
from safety.reasons import CHECKING_POSITION
from tests.agent.helpers import route_instruction, state_with
from tests.components import find, require
from tiles import TileStore, match_fix, shortest_path

CHROMIUM = find("chromium")


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require("chromium")  # skipped on a developer's machine without it, a failure under CI=true


ROUTE_BLUE = (0x29, 0xB6, 0xF6)
BANNER_BLUE = (0x0D, 0x47, 0xA1)
AMBER = (0xFF, 0xB3, 0x00)
ROAD_GREY = (0x5B, 0x67, 0x75)
WIDTH, HEIGHT = 1280, 800
BANNER_BOTTOM = 150  # the banner is 20 % of the height (160 px)


LANDSCAPE, PORTRAIT = (1280, 800), (800, 1280)
SHIBUYA_FROM, SHIBUYA_TO = (139.7016, 35.6590), (139.6990, 35.6640)  # onto 明治通り
ZONES = {"en": "America/New_York", "ja": "Asia/Tokyo"}


def chromium_cmd(profile: Path, size: tuple[int, int]) -> list[str]:
    assert CHROMIUM is not None
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=5000",
    ]


def keep(png: Path) -> None:
    """Copy a screenshot to $NAGASHI_SCREENSHOTS, where an engineer looks at it."""
    where = os.environ.get("NAGASHI_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(where) / png.name)


def shot(
    url: str,
    out: Path,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    env: dict[str, str] | None = None,
) -> np.ndarray:
    cmd = [*chromium_cmd(out.parent / f"profile-{out.stem}", size), f"--screenshot={out}", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert r.returncode == 0 and out.is_file(), r.stderr[-2000:]
    keep(out)
    return np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)


def dom(url: str, profile: Path, size: tuple[int, int] = (WIDTH, HEIGHT)) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``)."""
    cmd = [*chromium_cmd(profile, size), "--dump-dom", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def screenshot(url: str, out: Path, profile: Path) -> np.ndarray:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={out}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=5000",
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and out.is_file(), r.stderr[-2000:]
    keep(out)
    return np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)


def share(img: np.ndarray, colour: tuple[int, int, int], tol: int = 14) -> float:
    d = np.abs(img - np.array(colour, dtype=np.int16)).max(axis=2)
    return float((d <= tol).mean())


@pytest.fixture(scope="module")
def store(manhattan_tiles: Path) -> TileStore:
    return TileStore(manhattan_tiles)


def test_page_shows_route_and_maneuver(store: TileStore, tmp_path: Path) -> None:
    ins = route_instruction(store)
    srv = ApiServer(state_with(store, ins), ApiConfig(port=0)).start()
    try:
        img = screenshot(srv.url + "/", tmp_path / "route.png", tmp_path / "profile")
    finally:
        srv.stop()
    assert img.shape[:2] == (HEIGHT, WIDTH)
    banner, mapped = img[:BANNER_BOTTOM], img[BANNER_BOTTOM + 20 :]
    assert share(banner, BANNER_BLUE) > 0.6  # guidance banner
    assert share(banner, (255, 255, 255), tol=40) > 0.02  # the manoeuvre text, in large type
    assert share(banner, AMBER) == 0.0
    assert share(mapped, ROUTE_BLUE) > 0.004  # the recommended route (~1 km), drawn thick
    assert share(mapped, ROAD_GREY) > 0.01  # the road network around the cab
    assert share(mapped, AMBER) < 0.001


def test_page_shows_fallback_message(store: TileStore, tmp_path: Path) -> None:
    ins = route_instruction(store, ok=False, message="Please follow the road")
    srv = ApiServer(state_with(store, ins), ApiConfig(port=0)).start()
    try:
        img = screenshot(srv.url + "/", tmp_path / "fallback.png", tmp_path / "profile")
    finally:
        srv.stop()
    banner, mapped = img[:BANNER_BOTTOM], img[BANNER_BOTTOM + 20 :]
    assert share(banner, AMBER) > 0.6  # the message area
    assert share(banner, (0x11, 0x11, 0x11), tol=30) > 0.02  # the message text
    assert share(mapped, ROUTE_BLUE) < 0.0005  # no route while guidance is withheld
    assert share(mapped, AMBER) > 0.0005  # the "follow the road" continuation, dashed
    assert share(mapped, ROAD_GREY) > 0.01


@pytest.fixture(scope="module")
def shibuya(shibuya_tiles: Path) -> TileStore:
    return TileStore(shibuya_tiles)


def instruction_at(
    store: TileStore,
    a: tuple[float, float],
    b: tuple[float, float],
    locale: str,
    *,
    ok: bool = True,
    heading_deg: float | None = 200.0,
) -> Instruction:
    g = store.all()
    r = shortest_path(store, a, b)
    m = match_fix(g, *a)
    return build_instruction(
        g,
        ok=ok,
        route=r.edges if ok else (),
        continuation=() if ok else r.edges[:4],
        message="" if ok else CHECKING_POSITION[locale],
        reason_codes=() if ok else ("GPS_NO_HEADING_LOW_SPEED", "MATCH_AMBIGUOUS"),
        locale=locale,
        time_s=1433284200.0,  # 2015-06-02 22:30 UTC
        position=(m.best.lon, m.best.lat),
        heading_deg=heading_deg,
        fraction=m.best.fraction,
        names=store.way_names(int(w) for w in g.way_id),
    )


def serve(store: TileStore, ins: Instruction, state: AgentState | None = None) -> ApiServer:
    st = state or state_with(store, ins)
    st.bundle = {"hash": "test", "timezone": ZONES[ins.locale]}
    return ApiServer(st, ApiConfig(port=0)).start()


def banner_height(img: np.ndarray) -> int:
    """Rows from the top that are the banner's colour at the right edge (its padding)."""
    col = img[:, -4]
    colour = col[2]
    rows = np.nonzero(np.abs(col - colour).max(axis=1) > 20)[0]
    return int(rows[0]) if len(rows) else img.shape[0]


LONG_STREET = {
    "en": "Frederick Douglass Boulevard Service Road Northbound (Adam Clayton Powell Jr.)",
    "ja": "首都高速都心環状線外回り沿い渋谷区道玄坂二丁目から神泉町交差点まで続く通り",
}


@pytest.mark.parametrize("locale", ["en", "ja"])
@pytest.mark.parametrize("size", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
def test_banner_geometry_is_fixed_in_both_locales_and_orientations(
    locale: str, size: tuple[int, int], store: TileStore, shibuya: TileStore, tmp_path: Path
) -> None:
    """The banner has one height whatever it says (a long street name is shrunk or cut, the
    long Japanese fallback sentence fits in it): the map never moves at a new instruction."""
    area = shibuya if locale == "ja" else store
    a, b = (SHIBUYA_FROM, SHIBUYA_TO) if locale == "ja" else (TIMES_SQUARE, MADISON_42ND)
    route = instruction_at(area, a, b, locale)
    assert route.maneuver is not None
    long_route = dataclasses.replace(
        route, maneuver=dataclasses.replace(route.maneuver, street=LONG_STREET[locale])
    )
    fallback = instruction_at(area, a, b, locale, ok=False, heading_deg=None)
    w, h = size
    expected = round(min(0.24 * h, 0.30 * w))
    heights = {}
    for name, ins in (("route", long_route), ("fallback", fallback)):
        srv = serve(area, ins)
        try:
            img = shot(srv.url + "/", tmp_path / f"{locale}-{name}-{w}x{h}.png", size)
        finally:
            srv.stop()
        heights[name] = banner_height(img)
        banner = img[: heights[name] - 4]
        ink = (255, 255, 255) if ins.kind == "route" else (0x11, 0x11, 0x11)
        assert share(banner, ink, tol=60) > 0.03, name  # big type: arrow, distance, text
    assert all(abs(v - expected) <= 2 for v in heights.values()), (heights, expected)


TIMES_SQUARE = (-73.98553, 40.75796)
MADISON_42ND = (-73.97960, 40.75290)


class _StopsAfter(AgentState):
    """Serves the instruction with a heading for the first answers, then without (stopped)."""

    moving_answers = 2

    def snapshot(self) -> tuple[Instruction, dict[str, Any], TileStore | None, int]:
        ins, bundle, store, ticks = super().snapshot()
        self.moving_answers -= 1
        if self.moving_answers < 0:
            ins = dataclasses.replace(ins, heading_deg=None)
        return ins, bundle, store, ticks


def test_page_names_streets_local_time_scale_and_holds_heading(
    store: TileStore, tmp_path: Path
) -> None:
    ins = instruction_at(store, TIMES_SQUARE, MADISON_42ND, "en", heading_deg=100.0)
    state = _StopsAfter(locale="en", store=store)
    state.publish(ins)
    srv = serve(store, ins, state)
    try:
        page = dom(srv.url + "/", tmp_path / "profile")
    finally:
        srv.stop()
    labels = re.findall(r'<text[^>]*class="label (route|cross)"[^>]*>([^<]+)<', page)
    texts = {html.unescape(t) for _, t in labels}
    assert "7th Avenue" in texts  # the street the route turns onto
    assert "cross" in {k for k, _ in labels}  # the next cross street ahead
    status = re.search(r'id="status"[^>]*>([^<]*)<', page)
    assert status is not None and "18:30:00" in status.group(1)  # 22:30 UTC is 18:30 in NY
    assert re.search(r'<g id="scale"><path[^>]*></path><text[^>]*>\d+ k?m</text>', page)
    # the cab stopped (no GPS heading) after two answers: the arrow keeps its last heading
    assert state.moving_answers < -1  # the page polled on after the cab stopped
    assert 'data-cab-heading="100.0"' in page
    assert 'data-orientation="north-up"' in page and "North up" in page  # the default
    # short words keep their full size: the action at 0.27 and the street at 0.22 of the banner
    sizes = {
        k: float(v)
        for k, v in re.findall(r'id="(action|street)"[^>]*style="font-size: ([\d.]+)px', page)
    }
    assert sizes["action"] / sizes["street"] == pytest.approx(0.27 / 0.22, rel=0.01), sizes


def test_stopped_without_any_heading_points_along_the_route(
    store: TileStore, tmp_path: Path
) -> None:
    ins = instruction_at(store, TIMES_SQUARE, MADISON_42ND, "en", heading_deg=None)
    srv = serve(store, ins)
    try:
        page = dom(srv.url + "/", tmp_path / "profile")
    finally:
        srv.stop()
    m = re.search(r'data-cab-heading="([\d.]+)"', page)
    assert m is not None
    from tiles.geo import bearing_deg, haversine_m

    c0 = ins.geometry[0]  # the route's direction: to its first point more than 3 m away
    along = next(float(bearing_deg(*c0, *c)) for c in ins.geometry[1:] if haversine_m(*c0, *c) > 3)
    assert abs((float(m.group(1)) - along + 180) % 360 - 180) < 5


def test_heading_up_is_offered_and_remembered(store: TileStore, tmp_path: Path) -> None:
    ins = instruction_at(store, TIMES_SQUARE, MADISON_42ND, "en", heading_deg=100.0)
    srv = serve(store, ins)
    try:
        first = dom(srv.url + "/?orientation=heading-up", tmp_path / "profile")
        again = dom(srv.url + "/", tmp_path / "profile")  # same browser profile, no parameter
    finally:
        srv.stop()
    assert 'data-orientation="heading-up"' in first and "Heading up" in first
    assert 'data-orientation="heading-up"' in again


FONTCONFIG_WITHOUT_CJK = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>/usr/share/fonts/truetype/dejavu</dir>
  <dir>/usr/share/fonts/truetype/liberation</dir>
  <cachedir>{cache}</cachedir>
</fontconfig>
"""


def _scramble(text: str) -> str:
    """The same characters in another order, with every break opportunity (。) in place: under
    tofu (one box glyph for every character) it renders pixel for pixel as ``text`` does."""
    return "。".join(part[::-1] for part in text.split("。"))


def test_japanese_is_drawn_with_the_shipped_font_not_as_tofu(
    shibuya: TileStore, tmp_path: Path
) -> None:
    """A stock Debian has no CJK font: Chromium is given a font configuration with only Latin
    fonts (DejaVu, Liberation), so only the page's own font can draw Japanese. If it does not,
    every character is the same missing-glyph box, and a message and the same characters in
    another order draw the same pixels."""
    conf = tmp_path / "fonts.conf"
    conf.write_text(FONTCONFIG_WITHOUT_CJK.format(cache=tmp_path / "fc-cache"))
    env = {**os.environ, "FONTCONFIG_FILE": str(conf)}
    text = CHECKING_POSITION["ja"]
    assert _scramble(text) != text
    base = instruction_at(shibuya, SHIBUYA_FROM, SHIBUYA_TO, "ja", ok=False, heading_deg=None)
    banners = []
    for name, message in (("text", text), ("scrambled", _scramble(text))):
        srv = serve(shibuya, dataclasses.replace(base, message=message))
        try:
            img = shot(srv.url + "/", tmp_path / f"ja-tofu-check-{name}.png", env=env)
        finally:
            srv.stop()
        banners.append(img[: banner_height(img) - 4])
    assert share(banners[0], (0x11, 0x11, 0x11), tol=60) > 0.03  # there is text
    differ = np.abs(banners[0] - banners[1]).max(axis=2) > 60
    assert differ.mean() > 0.01, "Japanese renders as tofu (the page's font is not used)"
