"""The sync benchmark runs end to end and meets its byte goal (bytes, not timings)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sync import bench_sync


@pytest.mark.slow
def test_bench_sync_one_tile_update_moves_little() -> None:
    parser = argparse.ArgumentParser()
    bench_sync.add_arguments(parser)
    out = bench_sync.run(parser.parse_args(["--records", "300", "--batch-records", "64"]))
    assert out["first_pull_status"] == "installed"
    assert out["changed_files_bytes"] > out["tiles_bytes"]  # tiles.sqlite changed
    assert out["ratio_vs_changed_plus_metadata"] < 1.2  # the goal
    assert out["update_bytes"] < out["changed_files_bytes"]  # chunks, not whole files
    assert 0 < out["update_chunks_downloaded"] < out["update_chunks_reused"]
    assert out["upload_records"] == 300 and out["upload_batches"] == 5
    assert out["upload_peak_rss_mib"] > 0


@pytest.mark.slow
def test_bench_live_runs_and_loses_no_heartbeat(monaco_tiles: Path) -> None:
    """A small fleet on Monaco: every heartbeat answered, the snapshot built and served."""
    from sync import bench_live

    parser = argparse.ArgumentParser()
    bench_live.add_arguments(parser)
    args = ["--tiles", str(monaco_tiles), "--cabs", "40", "--period-s", "2", "--seconds", "4"]
    args += ["--builds", "3", "--applies", "5", "--served-wait-s", "0"]
    out = bench_live.run(parser.parse_args(args))
    assert out["heartbeats_sent"] == 80 and out["heartbeats_lost"] == 0
    assert out["burst_lost"] == 0
    assert out["served_snapshot_bytes"] > 0  # the server's own background build
    assert out["snapshot_bytes_40_cabs"] > out["snapshot_bytes_4_cabs"] > 0
    assert 0 < out["heartbeat_bytes_mean"] < out["heartbeat_bytes_with_hour_of_pickups_mean"]


def test_bench_fleet_loses_and_duplicates_nothing_on_both_back_ends(pg_cluster: object) -> None:
    """A small run of ``nagashi bench fleet`` (counts, not timings): every acknowledged record
    is stored once, every heartbeat taken, on SQLite, PostgreSQL and two processes on
    PostgreSQL, and the snapshot of each process counts every vacant cab (with two processes
    too: the live inputs are in the database)."""
    from sync import bench_fleet

    parser = argparse.ArgumentParser()
    bench_fleet.add_arguments(parser)
    url = pg_cluster.database()  # type: ignore[attr-defined]  # the fixture is a PgCluster when the backend is PostgreSQL
    args = ["--cabs", "20", "--interval-s", "2", "--minutes", "0.1", "--postgres-url", url]
    args += ["--live-build-every", "0.5"]
    out = bench_fleet.run(parser.parse_args(args))
    for backend in ("sqlite", "postgresql", "postgresql-2proc"):
        r = out[backend]
        assert r["errors"] == 0 and r["records_unacked"] == 0, r["error_kinds"]
        assert r["records_lost"] == 0 and r["records_duplicated"] == 0
        assert r["records_stored"] == r["records_acked"] > 0
        assert r["server_peak_rss_mib"] > 0
        assert r["heartbeats"] >= 20 * 2 and r["pickups_unacked"] == 0
        assert r["snapshot_cabs"] == [16] * r["servers"]  # i % 5 != 0 of 20 are vacant
    assert set(out["ratios_to_sqlite"]) == {"postgresql", "postgresql-2proc"}
    assert out["ratios_to_sqlite"]["postgresql"]["requests_per_s"] is not None
