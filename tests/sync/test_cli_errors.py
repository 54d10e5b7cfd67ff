"""User mistakes on the sync/fleet command line give one line and exit status 2, and create
nothing (issue 13, item 10, and what a sweep of bad inputs over every subcommand found)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sync._fixtures import base_manifest, tiles_meta, write_inputs
from tools.cli import main

BROKEN_YAML = "version: planner-1\nplanner:\n  speed_factor: [1\ntimezone: x\n"


def one_line_error(capsys: Any, *argv: str) -> str:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("nagashi: error: ") and "Traceback" not in err
    return str(err)


def test_bundle_build_with_a_broken_params_yaml(
    capsys: Any, tmp_path: Path, monaco_tiles: Path
) -> None:
    m = base_manifest(tiles_meta(monaco_tiles)["source_sha256"])
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(m))
    paths = write_inputs(tmp_path / "inputs", monaco_tiles, m)
    paths["params"].write_text(BROKEN_YAML)
    err = one_line_error(
        capsys,
        *("bundle", "build", "--manifest", str(manifest), "--out", str(tmp_path / "out")),
        *("--tiles", str(paths["tiles"]), "--demand", str(paths["demand"])),
        *("--params", str(paths["params"]), "--area", str(paths["area"])),
    )
    assert str(paths["params"]) in err and "line 4, column 9" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_broken_yaml_manifest_and_pipeline(capsys: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    assert "line 4, column 9" in one_line_error(capsys, "manifest", "compose", str(bad))
    assert "line 4, column 9" in one_line_error(capsys, "pipeline", "run", str(bad), "--dry-run")
    bad.write_bytes(b"a: \x01\n")  # a YAML reader error (not a parser one)
    assert "character" in one_line_error(capsys, "manifest", "compose", str(bad))


@pytest.mark.parametrize(
    "argv",
    [
        ("fleet", "token", "add", "--vehicle", "cab-1"),
        ("fleet", "token", "revoke", "cab-1"),
        ("fleet", "timestamp"),
        ("fleet", "keys", "rotate", "--role", "targets"),
        ("fleet", "keys", "renew-root"),
        ("fleet", "prune"),
        ("fleet", "status"),
    ],
)
def test_fleet_commands_on_a_mistyped_root_create_nothing(
    capsys: Any, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    typo = tmp_path / "fleet-typo"
    one_line_error(capsys, *argv, "--root", str(typo))
    assert not typo.exists()


def test_bundle_status_of_a_missing_store_creates_nothing(capsys: Any, tmp_path: Path) -> None:
    err = one_line_error(capsys, "bundle", "status", "--store", str(tmp_path / "nostore"))
    assert "not found" in err and not (tmp_path / "nostore").exists()


def test_bad_server_urls_are_refused_before_any_retry(capsys: Any, tmp_path: Path) -> None:
    root = tmp_path / "root.json"
    root.write_text("{}")
    token = tmp_path / "token"
    token.write_text("t")
    err = one_line_error(
        capsys,
        *("bundle", "pull", "--store", str(tmp_path / "s"), "--server", "fleet.example"),
        *("--area", "monaco", "--trusted-root", str(root)),
    )
    assert "--server: expected http://" in err and not (tmp_path / "s").exists()
    err = one_line_error(
        capsys,
        *("logs", "pull", "--server", "ftp://fleet.example", "--vehicle", "cab-1"),
        *("--since", "6h", "--token-file", str(token), "--out", str(tmp_path / "o.msgpack")),
    )
    assert "--server: expected http://" in err
    err = one_line_error(
        capsys,
        *("agent", "run", "--bundle-dir", str(tmp_path), "--sync-server", "http://h:port"),
        *("--token-file", str(token), "--no-api"),
    )
    assert "--sync-server: expected http://" in err
