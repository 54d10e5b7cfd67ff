"""The tablet page in a real headless Chromium: screenshot, then check the pixels.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``); skipped where it is
absent on a developer's machine, a failure under ``CI=true``.
The page must draw everything from the agent's own API (no network besides loopback).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.api.server import ApiConfig, ApiServer
from tests.agent.helpers import route_instruction, state_with
from tests.components import find, require
from tiles import TileStore

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
