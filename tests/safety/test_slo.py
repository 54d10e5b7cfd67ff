"""The SLO figure from trip-log records, and ``nagashi report slo``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import msgpack
import numpy as np
import pytest

from safety import RouteRechecker, SafetyGate, TickInput, Verdict, slo
from tiles import Graph, TileStore
from tiles import tags as T
from tools.cli import main

from .helpers import fake_table, long_walk, ok_tick, tick_demand


def _ticks(g: Graph, n: int, seed: int) -> list[TickInput]:
    rng = np.random.default_rng(seed)
    table = fake_table(g.n_edges_total)
    out = []
    for _ in range(n):
        route = long_walk(g, rng, 10)
        a = int(g.local([route[0]])[0])
        out.append(ok_tick(g, a, route, demand=tick_demand(table, route, 600), table=table))
    return out


def _tick_record(seq: int, v: Verdict) -> dict[str, object]:
    """A tick record as the agent logs it (its own fields + our verdict under 'safety')."""
    return {
        "schema_version": 1,
        "kind": "tick",
        "seq": seq,
        "time_s": v.time_s,
        "run_id": "test",
        "route": list(v.route),
        "safety": v.to_record(),
    }


def test_availability_times_quality(manhattan: Graph, manhattan_store: TileStore) -> None:
    gate = SafetyGate()
    verdicts = [gate.check(t) for t in _ticks(manhattan, 40, 1)]
    fallbacks = [gate.check(replace(t, fix=None)) for t in _ticks(manhattan, 10, 2)]
    records: list[object] = [_tick_record(i, v) for i, v in enumerate(verdicts + fallbacks)]
    records += [{"schema_version": 1, "kind": "start"}, "not a map", 42]
    report = slo(records)
    ok = sum(v.ok for v in verdicts)
    assert ok >= 20
    assert report.ticks == 50 and report.validated == ok
    assert report.availability == pytest.approx(ok / 50)
    assert report.quality == 1.0 and not report.rechecked
    assert report.reliability == pytest.approx(ok / 50)
    assert report.fallbacks_by_reason["GPS_MISSING"] == 10
    assert report.skipped_records == 3
    # re-checked on the real tiles with the current rules: still clean
    rechecked = slo(records, RouteRechecker(manhattan_store))
    assert rechecked.rechecked and rechecked.quality == 1.0


def test_recheck_finds_a_logged_route_onto_a_motorway(
    manhattan: Graph, manhattan_store: TileStore
) -> None:
    """A verdict logged as ok by a (hypothetically) buggy gate: replay finds the violation."""
    gate = SafetyGate()
    good = next(v for v in map(gate.check, _ticks(manhattan, 30, 3)) if v.ok)
    mw = np.flatnonzero(manhattan.flags & T.FLAG_MOTORWAY)
    bad = replace(good, route=(*good.route, int(manhattan.edge_id[mw[0]])))
    report = slo([bad.to_record(), good.to_record()], RouteRechecker(manhattan_store))
    assert report.ticks == 2 and report.validated == 2
    assert report.quality == 0.5 and report.reliability == 0.5
    assert report.violations_by_reason["ROUTE_FORBIDDEN_LINK"] == 1
    assert "ROUTE_DISCONNECTED" in report.violations_by_reason
    # without tiles, the logged verdict is taken at its word
    assert slo([bad.to_record()]).quality == 1.0


def test_empty_and_unreadable() -> None:
    r = slo([])
    assert r.ticks == 0 and r.availability is None and r.quality is None
    assert r.reliability is None
    r2 = slo([{"kind": "tick", "seq": 1}, {"safety": {"schema_version": 1, "ok": 3}}])
    assert r2.ticks == 0 and r2.unreadable_verdicts == 2


def test_report_slo_command(
    manhattan: Graph,
    manhattan_tiles: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gate = SafetyGate()
    verdicts = [gate.check(t) for t in _ticks(manhattan, 20, 4)]
    verdicts += [gate.check(replace(t, route=[])) for t in _ticks(manhattan, 5, 5)]
    logs = tmp_path / "logs"
    logs.mkdir()
    for k in range(2):  # two rotated files; the second ends in a torn record
        with (logs / f"trip-{k:012d}.msgpack").open("wb") as fh:
            for i, v in enumerate(verdicts[k::2]):
                fh.write(msgpack.packb(_tick_record(i, v), use_bin_type=True))
            if k == 1:
                fh.write(msgpack.packb({"kind": "tick", "x": "y" * 50})[:-10])
    rc = main(["report", "slo", "--logs", str(logs), "--tiles", str(manhattan_tiles), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    ok = sum(v.ok for v in verdicts)
    assert doc["files"] == 2 and doc["ticks"] == 25 and doc["validated"] == ok
    assert doc["availability"] == pytest.approx(ok / 25)
    assert doc["rechecked"] is True and doc["quality"] == 1.0
    assert doc["fallbacks_by_reason"]["ROUTE_MISSING"] == 5
    rc = main(["report", "slo", "--logs", str(logs / "trip-000000000000.msgpack")])
    out = capsys.readouterr().out
    assert rc == 0 and "availability:" in out and "reliability:" in out
    assert main(["report", "slo", "--logs", str(tmp_path / "nope")]) == 2
