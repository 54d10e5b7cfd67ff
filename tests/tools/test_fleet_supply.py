"""``nagashi fleet supply``: the supply prior from trip logs, on the demo drive through the agent
(meter on at the 60th instruction, off at the 150th: see tests/conftest.py ``drive_run``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.triplog import pack
from models.supply import SLOTS_PER_WEEK, SupplyTable
from tools.cli import main
from tools.field.supply import _observed_minutes_per_slot


def _ticks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "tick"]


def _occupied(records: list[dict[str, Any]]) -> list[bool]:
    """The meter state at each tick, from the run's meter records."""
    events = sorted((r["time_s"], r["occupied"]) for r in records if r["kind"] == "meter")
    return [
        next((occ for t, occ in reversed(events) if t <= tick["time_s"]), False)
        for tick in _ticks(records)
    ]


def _write_log(records: list[dict[str, Any]], path: Path) -> Path:
    path.write_bytes(b"".join(pack(r) for r in records))
    return path


def _supply(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["fleet", "supply", *args, "--json"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_the_drive_gives_the_links_the_agent_itself_noted_as_passed_vacant(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "supply.npz"
    doc = _supply(
        ["--logs", str(drive_run["data"]), "--tiles", str(manhattan_bundle), "--out", str(out)],
        capsys,
    )
    table = SupplyTable.load(out)
    records = drive_run["records"]
    ticks = _ticks(records)
    # the oracle: the agent's own vacant passes, as each tick logged them (last_pass_age_s),
    # and the last tick's matched link (no later tick logs it)
    noted = {int(e) for t in ticks for e, _ in t["last_pass_age_s"]}
    occupied = _occupied(records)
    assert occupied[-1] is False
    noted.add(int(ticks[-1]["match"]["edge_id"]))
    assert set(table.edge_id.tolist()) == noted
    only_occupied = {t["match"]["edge_id"] for t, o in zip(ticks, occupied, strict=True) if o}
    only_occupied -= {t["match"]["edge_id"] for t, o in zip(ticks, occupied, strict=True) if not o}
    assert only_occupied and not only_occupied & set(table.edge_id.tolist())
    assert doc["vacancy_from"] == {"meter": 1, "guidance": 0}
    assert doc["vacant_ticks"] == occupied.count(False) and doc["ticks"] == len(ticks)
    assert doc["cabs"] == doc["measured_cabs"] == table.cabs == 1
    # every pass is in the table once: passes/h x observed hours adds up to the count
    days = np.array(table.meta["days_per_slot"])
    assert np.sum(table.passes_per_h * days[:, None] * 0.5) == pytest.approx(doc["passes"])
    assert doc["passes"] == table.meta["records"] >= len(noted)
    # the observed time is the drive's span (plus one plan interval), in its own local slots
    span_min = (ticks[-1]["time_s"] - ticks[0]["time_s"] + 5.0) / 60.0
    assert days.sum() * 30 == pytest.approx(span_min, abs=1e-6)
    slots = {int(t["minute_of_week"] // 30) for t in ticks}
    assert set(np.flatnonzero(days).tolist()) == slots
    assert set(np.flatnonzero(table.passes_per_h.sum(axis=1)).tolist()) <= slots


def test_without_meter_events_the_ticks_with_guidance_are_vacant(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = [r for r in drive_run["records"] if r["kind"] != "meter"]
    log = _write_log(records, tmp_path / "trip-000000000000.msgpack")
    out = tmp_path / "supply.npz"
    args = ["fleet", "supply", "--logs", str(log), "--tiles", str(manhattan_bundle)]
    assert main([*args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "cruising guidance were taken as vacant" in captured.err
    assert "vacant passes on" in captured.out
    doc = _supply([*args[2:], "--out", str(out)], capsys)
    guided = [t for t in _ticks(records) if t["instruction"]["kind"] == "route"]
    assert doc["vacancy_from"] == {"meter": 0, "guidance": 1}
    assert doc["vacant_ticks"] == len(guided) < len(_ticks(records))
    assert set(SupplyTable.load(out).edge_id.tolist()) >= {t["match"]["edge_id"] for t in guided}


def test_untimed_ticks_and_torn_tails_are_counted_not_lost_silently(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = list(drive_run["records"])
    i = next(k for k, r in enumerate(records) if r["kind"] == "tick")
    records[i] = {k: v for k, v in records[i].items() if k != "minute_of_week"}
    log = _write_log(records, tmp_path / "trip-000000000000.msgpack")
    with log.open("ab") as fh:
        fh.write(pack(records[-1])[:-7])  # a record cut short by a power loss
    args = ["--logs", str(log), "--tiles", str(manhattan_bundle), "--out", str(tmp_path / "s")]
    doc = _supply(args, capsys)
    assert doc["ticks_without_time"] == 1 and doc["torn_tails"] == 1
    assert doc["ticks"] == len(_ticks(records)) - 1
    assert main(["fleet", "supply", *args]) == 0
    err = capsys.readouterr().err
    assert "left out 1 tick(s) without a time and 1 torn file tail(s)" in err


def test_cabs_writes_it_for_a_fleet_of_that_size(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--logs", str(drive_run["data"]), "--tiles", str(manhattan_bundle)]
    _supply([*base, "--out", str(tmp_path / "one.npz")], capsys)
    doc = _supply([*base, "--out", str(tmp_path / "many.npz"), "--cabs", "300"], capsys)
    one, many = SupplyTable.load(tmp_path / "one.npz"), SupplyTable.load(tmp_path / "many.npz")
    assert doc["cabs"] == many.cabs == 300 and doc["measured_cabs"] == 1
    np.testing.assert_allclose(many.passes_per_h, one.passes_per_h * 300, rtol=1e-6)


def test_two_cabs_on_the_same_time_are_one_observed_time_and_twice_the_passes(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same drive logged by a second cab (another run and vehicle): the fleet is observed
    for as long as before, with twice the passes."""
    records = drive_run["records"]
    twin = [{**r, "run_id": "twin", "vehicle_id": "cab-2"} for r in records]
    logs = tmp_path / "logs"
    logs.mkdir()
    _write_log(records, logs / "trip-000000000000.msgpack")
    _write_log(twin, logs / "trip-000000100000.msgpack")
    _supply(["--logs", str(drive_run["data"]), "--tiles", str(manhattan_bundle),
             "--out", str(tmp_path / "one.npz")], capsys)  # fmt: skip
    doc = _supply(
        ["--logs", str(logs), "--tiles", str(manhattan_bundle), "--out", str(tmp_path / "2.npz")],
        capsys,
    )
    one, two = SupplyTable.load(tmp_path / "one.npz"), SupplyTable.load(tmp_path / "2.npz")
    assert doc["measured_cabs"] == two.cabs == 2 and doc["runs"] == 2
    assert two.meta["days_per_slot"] == one.meta["days_per_slot"]
    np.testing.assert_allclose(two.passes_per_h, one.passes_per_h * 2, rtol=1e-6)


def test_bad_input_is_one_line_and_status_2(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = drive_run["records"]
    other_net = [
        {**r, "bundle": {"manifest": {"road_network": {"source_sha256": "ab" * 32}}}}
        if r["kind"] == "tick"
        else r
        for r in records
    ]
    far_link = [
        {**r, "match": {**r["match"], "edge_id": 10**9}} if r["kind"] == "tick" else r
        for r in records
    ]
    not_a_log = tmp_path / "notes.txt"
    not_a_log.write_text("hello\n")
    cases = {
        "not a log": (["--logs", str(not_a_log)], "no trip-log records"),
        "missing": (["--logs", str(tmp_path / "nowhere")], "not found"),
        "no ticks": (
            ["--logs", str(_write_log(records[:1], tmp_path / "start-only.msgpack"))],
            "no tick records",
        ),
        "other network": (
            ["--logs", str(_write_log(other_net, tmp_path / "other.msgpack"))],
            "road network abababababab",
        ),
        "unknown link": (
            ["--logs", str(_write_log(far_link, tmp_path / "far.msgpack"))],
            "matched link 1000000000",
        ),
        "no tiles": (["--logs", str(drive_run["data"]), "--tiles", str(tmp_path)], "not found"),
    }
    out = tmp_path / "supply.npz"
    for name, (args, message) in cases.items():
        tiles = [] if "--tiles" in args else ["--tiles", str(manhattan_bundle)]
        code = main(["fleet", "supply", *args, *tiles, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, name
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not out.exists(), name  # nothing written
    with pytest.raises(SystemExit) as exit_:
        main(["fleet", "supply", "--logs", str(drive_run["data"]), "--tiles",
              str(manhattan_bundle), "--out", str(out), "--cabs", "0"])  # fmt: skip
    assert exit_.value.code == 2 and "positive integer" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    code = main(["fleet", "supply", "--logs", str(drive_run["data"]), "--tiles",
                 str(manhattan_bundle), "--out", str(blocked / "supply.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1


intervals = st.lists(
    st.tuples(st.integers(0, 3 * 10080), st.integers(0, 200)), min_size=1, max_size=30
)


@settings(max_examples=60, deadline=None)
@given(spans=intervals)
def test_observed_time_is_the_union_split_into_slots(spans: list[tuple[int, int]]) -> None:
    """Against a minute-by-minute count of the union (integer minutes: exact)."""
    starts = np.array([a for a, _ in spans], dtype=np.float64)
    ends = starts + np.array([n for _, n in spans], dtype=np.float64)
    got = _observed_minutes_per_slot(starts, ends)
    covered: set[int] = set()
    for a, n in spans:
        covered |= set(range(a, a + n))
    want = np.zeros(SLOTS_PER_WEEK)
    for minute in covered:
        want[(minute // 30) % SLOTS_PER_WEEK] += 1
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_the_drive_s_supply_rides_in_the_bundle_to_the_agent(
    drive_run: dict[str, Any],
    manhattan_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Logs -> ``fleet supply`` -> ``bundle build --supply`` -> ``LoadedBundle.supply``."""
    import yaml

    from agent.bundle import load_bundle
    from sync import Bundle

    out = tmp_path / "supply.npz"
    doc = _supply(
        ["--logs", str(drive_run["data"]), "--tiles", str(manhattan_bundle), "--out", str(out)],
        capsys,
    )
    src = Bundle(manhattan_bundle)
    manifest = {**src.manifest, "fleet_supply": {"version": doc["version"]}}
    mpath = tmp_path / "manifest.yaml"
    mpath.write_text(yaml.safe_dump(manifest))
    args = ["bundle", "build", "--manifest", str(mpath), "--out", str(tmp_path / "bundles")]
    args += ["--tiles", str(src.tiles_path), "--demand", str(src.demand_dir)]
    args += ["--params", str(src.params_path), "--area", str(src.area_path)]
    assert main([*args, "--supply", str(out)]) == 0
    built = Path(capsys.readouterr().out.strip())
    loaded = load_bundle(built, verify=True)
    try:
        assert loaded.supply is not None and loaded.supply.version == doc["version"]
        table = SupplyTable.load(out)
        minute = float(_ticks(drive_run["records"])[0]["minute_of_week"])
        np.testing.assert_array_equal(
            loaded.supply.rates(table.edge_id, minute), table.rates(table.edge_id, minute)
        )
        assert loaded.supply.rates(table.edge_id, minute).max() > 0
    finally:
        loaded.close()
