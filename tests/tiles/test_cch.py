"""Routing on the CCH (tiles/cch.py) gives Dijkstra's costs on the real tiles, legal paths under
the same turn rules, the same unreachable pairs; the scipy fallback is chosen at import.

Ties: between paths of equal cost the two engines may choose differently, so paths are not
compared; each is checked legal (every step a permitted turn, no link entered that may not be)
and its cost, summed again here from the graph, is Dijkstra's optimum within the rounding bound
of the CCH's integer weights (0.5 / scale a link of either path).
"""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import tiles
from tests.components import in_ci
from tests.conftest import REPO
from tiles import TileStore
from tiles import cch as tiles_cch
from tiles.graph import Graph
from tiles.routing import DEFAULT_AVOID, EdgeRouter, allowed_mask, edge_path, router

PAIRS = 400


def _need_cch() -> None:
    if tiles_cch.library_version() is not None:
        return
    reason = "routingkit-cch not installed (pip install nagashi[cch])"
    if in_ci():
        pytest.fail(f"CI=true and the CCH library is missing: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _order_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Orders go to a test folder, never to the developer's ~/.cache."""
    monkeypatch.setenv(tiles_cch.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "cch-cache"))


def _turns(g: Graph) -> set[tuple[int, int]]:
    src, dst = g.turn_pairs
    return set(zip(src.tolist(), dst.tolist(), strict=True))


def _check_legal(
    g: Graph, path: list[int], turns: set[tuple[int, int]], allowed: npt.NDArray[np.bool_]
) -> None:
    assert all((a, b) in turns for a, b in itertools.pairwise(path)), "an illegal turn"
    assert bool(np.all(allowed[path[1:]])), "entered a link that may not be entered"


def _bound(r: EdgeRouter, *paths: list[int]) -> float:
    assert r.scale is not None  # a CCH router
    return 0.5 / r.scale * sum(len(p) for p in paths) + 1e-6


def _agree(g: Graph, cost: npt.NDArray[np.float64], allowed: npt.NDArray[np.bool_]) -> int:
    """Random pairs answered by both engines; returns how many had a route."""
    cch = EdgeRouter(g, cost, allowed, backend="cch")
    ref = EdgeRouter(g, cost, allowed, backend="dijkstra")
    turns = _turns(g)
    rng = np.random.default_rng(20261201)
    ok = np.flatnonzero(allowed)
    routed = unreachable = 0
    for _ in range(PAIRS):
        s, t = (int(x) for x in rng.choice(ok, 2, replace=False))
        try:
            want_path, want = ref.path(s, t)
        except tiles.NoRouteError:
            with pytest.raises(tiles.NoRouteError):
                cch.path(s, t)
            unreachable += 1
            continue
        path, got = cch.path(s, t)
        assert path[0] == s and path[-1] == t
        _check_legal(g, path, turns, allowed)
        again = float(cost[path[1:]].sum())
        assert got == pytest.approx(again, rel=1e-12, abs=1e-9)
        assert want - 1e-6 <= got <= want + _bound(cch, path, want_path), (s, t, got, want)
        routed += 1
    return routed


@pytest.mark.parametrize("area", ["manhattan", "monaco"])
def test_cch_equals_dijkstra_on_real_tiles(
    area: str, manhattan_tiles: Path, monaco_tiles: Path
) -> None:
    _need_cch()
    with TileStore(manhattan_tiles if area == "manhattan" else monaco_tiles) as store:
        g = store.all()
        routed = _agree(g, g.travel_time_s, allowed_mask(g))
        assert routed > PAIRS * 0.6
        # distance, and the rules of one minute with no-entry windows (cruise: no motorway)
        dist = np.asarray(g.length_m, dtype=np.float64)
        assert _agree(g, dist, g.cruise_allowed(8 * 60)) > PAIRS * 0.3


def test_windows_and_turn_bans_respected(manhattan_tiles: Path) -> None:
    _need_cch()
    with TileStore(manhattan_tiles) as store:
        g = store.all()
        minute = next(
            m for m in range(0, 10_080, 30) if g.closed_at(m).any()
        )  # a minute with a no-entry window
        closed = g.closed_at(minute)
        allowed = allowed_mask(g, DEFAULT_AVOID, minute)
        assert not allowed[closed].any()
        cch = router(g, "time", DEFAULT_AVOID, minute)
        ref = EdgeRouter(g, g.travel_time_s, allowed, backend="dijkstra")
        assert cch.backend == "cch"
        turns = _turns(g)
        # banned turns: e ends where f starts, f may be entered, but e -> f is not a legal turn
        starts: dict[int, list[int]] = {}
        for f, u in enumerate(g.u_node.tolist()):
            starts.setdefault(u, []).append(f)
        banned = [
            (e, f)
            for e, v in enumerate(g.v_node.tolist())
            for f in starts.get(v, [])
            if (e, f) not in turns and allowed[f] and g.u_node[e] != g.v_node[f]
        ]
        assert len(banned) >= 10, "the Manhattan extract has turn restrictions"
        for e, f in banned:
            try:
                want_path, want = ref.path(e, f)
            except tiles.NoRouteError:
                with pytest.raises(tiles.NoRouteError):
                    cch.path(e, f)
                continue
            path, got = cch.path(e, f)
            assert len(path) > 2  # never the banned turn itself
            _check_legal(g, path, turns, allowed)
            assert want - 1e-6 <= got <= want + _bound(cch, path, want_path)
        # routes through the closed links' area never enter them
        for e in np.flatnonzero(closed)[:20].tolist():
            for f in g.turn_pairs[1][g.turn_pairs[0] == e].tolist():
                if allowed[f]:
                    with pytest.raises(tiles.NoRouteError):
                        cch.path(f, e)  # e itself may not be entered


def test_one_to_many_and_many_to_one_equal_dijkstra(manhattan_tiles: Path) -> None:
    _need_cch()
    with TileStore(manhattan_tiles) as store:
        g = store.all()
        allowed = g.cruise_allowed(17 * 60)
        cch = EdgeRouter(g, g.travel_time_s, allowed, backend="cch")
        ref = EdgeRouter(g, g.travel_time_s, allowed, backend="dijkstra")
        assert cch.scale is not None
        rng = np.random.default_rng(5)
        ok = np.flatnonzero(allowed)
        targets = rng.choice(ok, 60, replace=False)
        for k, s in enumerate(rng.choice(ok, 40, replace=False).tolist()):
            if k == 20:  # a new pinned set half way (repinned, not rebuilt)
                targets = rng.choice(ok, 25, replace=False)
            for limit in (None, 300.0):
                for got, want in (
                    (cch.costs_from(s, targets, limit), ref.costs_from(s, targets, limit)),
                    (cch.costs_to(targets, s, limit), ref.costs_to(targets, s, limit)),
                ):
                    fin = np.isfinite(want)
                    # the same unreachable (and, with a limit, the same out-of-reach) targets,
                    # except where a cost within the rounding bound straddles the limit
                    near = np.zeros(want.shape, dtype=bool)
                    if limit is not None:
                        near = np.abs(want - limit) < 0.05
                    assert np.array_equal(np.isfinite(got) | near, fin | near)
                    both = fin & np.isfinite(got)
                    assert np.allclose(got[both], want[both], rtol=0, atol=0.5 / cch.scale * 300)
        # a source among the targets costs 0 both ways
        assert cch.costs_from(int(targets[0]), targets)[0] == 0.0
        assert cch.costs_to(targets, int(targets[0]))[0] == 0.0


def test_bad_link_is_a_value_error_not_a_crash(manhattan_tiles: Path) -> None:
    _need_cch()
    with TileStore(manhattan_tiles) as store:
        g = store.all()
        for backend in ("cch", "dijkstra"):
            r = EdgeRouter(g, g.travel_time_s, backend=backend)
            for bad in (-1, g.n):
                with pytest.raises(ValueError):
                    r.path(0, bad)
                with pytest.raises(ValueError):
                    r.costs_from(0, [1, bad])
                with pytest.raises(ValueError):
                    r.costs_to([bad], 0)
        with pytest.raises(ValueError):
            EdgeRouter(g, g.travel_time_s[:-1])


def test_order_is_cached_on_disk_keyed_by_the_graph(
    manhattan_tiles: Path, monaco_tiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_cch()
    monkeypatch.setenv(tiles_cch.CACHE_ENV, str(tmp_path))
    with TileStore(manhattan_tiles) as a, TileStore(manhattan_tiles) as b:
        first = tiles_cch.Hierarchy(a.all())
        assert first.order_source == "computed"
        files = list((tmp_path / "cch").glob("order-*.npy"))
        assert len(files) == 1
        second = tiles_cch.Hierarchy(b.all())  # an equal graph in another store: from disk
        assert second.order_source == "disk"
        files[0].write_bytes(b"not an order")  # a damaged cache is recomputed and replaced
        assert tiles_cch.Hierarchy(b.all()).order_source == "computed"
        assert tiles_cch.Hierarchy(b.all()).order_source == "disk"
        # a changed graph (other tiles) has another key and computes its own
        part = a.graph([a.tiles[0].tile_id])
        assert tiles_cch.Hierarchy(part).order_source == "computed"
    with TileStore(monaco_tiles) as m:
        assert tiles_cch.Hierarchy(m.all()).order_source == "computed"
    assert len(list((tmp_path / "cch").glob("order-*.npy"))) == 3
    # the hierarchy is kept with the graph object, and an equal graph of another store
    # (a fresh store per query) reuses it
    with TileStore(manhattan_tiles) as c, TileStore(manhattan_tiles) as d:
        g = c.all()
        assert tiles_cch.hierarchy(g) is tiles_cch.hierarchy(g)
        assert tiles_cch.hierarchy(d.all()) is tiles_cch.hierarchy(g)
        assert tiles_cch.hierarchy(d.graph([d.tiles[0].tile_id])) is not tiles_cch.hierarchy(g)


def test_fallback_forced_in_process(manhattan_tiles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the CCH off (as where routingkit-cch has no wheel), edge_path and shortest_path run
    Dijkstra and give the same answers as with it."""
    _need_cch()
    with TileStore(manhattan_tiles) as store:
        g = store.all()
        rng = np.random.default_rng(11)
        ok = np.flatnonzero(allowed_mask(g))
        pairs = [tuple(int(x) for x in rng.choice(ok, 2, replace=False)) for _ in range(50)]
        answers: dict[bool, list[float | None]] = {}
        for enabled in (True, False):
            monkeypatch.setattr(tiles_cch, "ENABLED", enabled)
            assert tiles.routing.routing_backend() == ("cch" if enabled else "dijkstra")
            assert router(g).backend == tiles.routing.routing_backend()
            out: list[float | None] = []
            for s, t in pairs:
                try:
                    out.append(edge_path(g, s, t)[1])
                except tiles.NoRouteError:
                    out.append(None)
            answers[enabled] = out
            route = tiles.shortest_path(store, (-74.0020, 40.7400), (-73.9700, 40.7560))
            out.append(route.duration_s)
        for a, b in zip(answers[True], answers[False], strict=True):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert a == pytest.approx(b, abs=0.01)


_PROBE = """
import sys
import weakref
{block}
import tiles.routing as r
from tiles import TileStore, shortest_path
with TileStore(sys.argv[1]) as s:
    route = shortest_path(s, (-74.0020, 40.7400), (-73.9700, 40.7560))
print(r.routing_backend(), round(route.duration_s, 2))
"""


@pytest.mark.parametrize(
    "how", ["no-library", "env", "default"], ids=["no-wheel", "NAGASHI_ROUTING", "default"]
)
def test_backend_selected_at_import(how: str, manhattan_tiles: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), tiles_cch.CACHE_ENV: str(tmp_path)}
    env.pop(tiles_cch.BACKEND_ENV, None)
    block = ""
    if how == "no-library":  # what an install without a wheel sees: the import fails
        block = "sys.modules['routingkit_cch'] = None"
    elif how == "env":
        env[tiles_cch.BACKEND_ENV] = "dijkstra"
    else:
        _need_cch()
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(block=block), str(manhattan_tiles)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    name, duration = out.stdout.split()
    assert name == ("cch" if how == "default" else "dijkstra")
    assert 200 < float(duration) < 1500


@pytest.mark.parametrize("enabled", [True, False], ids=["cch", "dijkstra"])
def test_cached_router_does_not_keep_its_graph_alive(
    enabled: bool, manhattan_tiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caches are keyed weakly by the graph: a store's graph, once dropped, is freed with
    its router and hierarchy (a fresh store per query must not grow the process)."""
    if enabled:
        _need_cch()
    monkeypatch.setattr(tiles_cch, "ENABLED", enabled)
    store = TileStore(manhattan_tiles)
    g = store.all()
    edge_path(g, 0, int(g.turn_pairs[1][0]))
    alive = weakref.ref(g)
    store.close()
    del store, g
    gc.collect()
    assert alive() is None
