"""The bundle's optional supply prior (``supply.npz``): built only under the manifest's
``fleet_supply.version``, verified like every file, loaded by the agent as
``LoadedBundle.supply``, refused when damaged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.bundle import load_bundle
from agent.errors import BundleLoadError
from models.supply import SupplyTable
from sync import (
    Bundle,
    BundleInputError,
    BundleInputs,
    BundleVerifyError,
    HealthCheckError,
    build_bundle,
    default_health_check,
)
from sync._fixtures import base_manifest, composed, tiles_meta, write_inputs
from tools.cli import main


@pytest.fixture
def inputs(tmp_path: Path, monaco_tiles: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    meta = tiles_meta(monaco_tiles)
    m = base_manifest(meta["source_sha256"])
    p = write_inputs(tmp_path / "in", monaco_tiles, m)
    n_edges = int(meta["n_edges"])
    table = _table([0, 7, n_edges - 1], network=meta["source_sha256"])
    p["supply"] = table.save(tmp_path / "in" / "supply.npz")
    m["fleet_supply"] = {"version": table.version}
    return m, p


def _table(edges: list[int], network: str | None = None, cabs: int = 40) -> SupplyTable:
    meta: dict[str, Any] = {"source": "test"}
    if network is not None:
        meta["network_sha256"] = network
    return SupplyTable.from_passes(
        edges, [8 * 60 + 5] * len(edges), days_per_slot=2.0, cabs=cabs, meta=meta
    )


def _inputs(p: dict[str, Path], supply: bool = True) -> BundleInputs:
    return BundleInputs(
        p["tiles"], p["demand"], p["params"], p["area"], p["supply"] if supply else None
    )


def test_a_bundle_carries_the_supply_and_the_agent_loads_it(tmp_path: Path, inputs: Any) -> None:
    m, p = inputs
    bundle = build_bundle(composed(m), _inputs(p), tmp_path / "out")
    assert "supply.npz" in bundle.files and bundle.supply_path == bundle.path / "supply.npz"
    assert bundle.manifest["fleet_supply"] == m["fleet_supply"]
    bundle.verify()
    default_health_check(bundle)
    loaded = load_bundle(bundle.path, timezone="Europe/Monaco", verify=True)
    try:
        assert loaded.supply is not None
        want = SupplyTable.load(p["supply"])
        np.testing.assert_array_equal(loaded.supply.passes_per_h, want.passes_per_h)
        assert loaded.supply.cabs == 40 and loaded.supply.version == m["fleet_supply"]["version"]
        assert loaded.supply.rates([7], 8 * 60 + 10).tolist() == [1.0]  # 1 pass / (2 x 0.5 h)
    finally:
        loaded.close()
    plain = dict(m)
    del plain["fleet_supply"]
    without = build_bundle(composed(plain), _inputs(p, supply=False), tmp_path / "plain")
    assert without.supply_path is None and "supply.npz" not in without.files
    loaded = load_bundle(without.path, timezone="Europe/Monaco")
    try:
        assert loaded.supply is None
    finally:
        loaded.close()


def test_the_cli_builds_with_supply(
    tmp_path: Path, inputs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    m, p = inputs
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(m))
    args = ["bundle", "build", "--manifest", str(manifest), "--out", str(tmp_path / "out")]
    for k in ("tiles", "demand", "params", "area"):
        args += [f"--{k}", str(p[k])]
    assert main([*args, "--supply", str(p["supply"])]) == 0
    built = Path(capsys.readouterr().out.strip())
    assert Bundle(built).supply_path is not None
    assert main(args) == 2  # the manifest names a supply: the file is needed
    err = capsys.readouterr().err
    assert "needs a supply table" in err and len(err.strip().splitlines()) == 1


def test_build_refuses_a_supply_that_does_not_fit(
    tmp_path: Path, inputs: Any, monaco_tiles: Path
) -> None:
    m, p = inputs
    n_edges = int(tiles_meta(monaco_tiles)["n_edges"])
    cases: list[tuple[str, dict[str, Any], Path | None, str]] = []
    plain = {k: v for k, v in m.items() if k != "fleet_supply"}
    cases.append(("not in the manifest", plain, p["supply"], "names no fleet_supply.version"))
    cases.append(("not given", m, None, "needs a supply table"))
    other = _table([0, 7], cabs=41).save(tmp_path / "other.npz")
    cases.append(("other version", m, other, r"fleet_supply\.version \(other\.npz\)"))
    for name, table in {
        "far link": _table([0, n_edges]),
        "other network": _table([0], network="ab" * 32),
    }.items():
        path = table.save(tmp_path / f"{name}.npz")
        cases.append((name, {**m, "fleet_supply": {"version": table.version}}, path, ""))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(p["supply"].read_bytes()[:100])
    cases.append(("malformed", m, broken, "not a readable .npz"))
    messages = {"far link": f"tiles have {n_edges} links", "other network": "network 'abab"}
    for name, manifest, supply, message in cases:
        ins = BundleInputs(p["tiles"], p["demand"], p["params"], p["area"], supply)
        with pytest.raises(BundleInputError, match=message or messages[name]) as err:
            build_bundle(composed(manifest), ins, tmp_path / "out")
        assert "\n" not in str(err.value), name
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_damaged_supply_file_refuses_the_bundle(tmp_path: Path, inputs: Any) -> None:
    m, p = inputs
    good = build_bundle(composed(m), _inputs(p), tmp_path / "out")
    bad = tmp_path / "copy" / good.bundle_id
    shutil.copytree(good.path, bad)
    data = bytearray((bad / "supply.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "supply.npz").write_bytes(bytes(data))
    with pytest.raises(BundleVerifyError, match=r"supply\.npz hash mismatch"):
        Bundle(bad).verify()
    with pytest.raises(BundleLoadError, match=r"supply\.npz hash mismatch"):
        load_bundle(bad, timezone="Europe/Monaco", verify=True)
    # without re-hashing, the damaged file still does not load as a table: refused in one line
    (bad / "supply.npz").write_bytes(b"not an npz at all")
    with pytest.raises(BundleLoadError) as err:
        load_bundle(bad, timezone="Europe/Monaco")
    assert "supply" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(HealthCheckError, match="supply prior does not load"):
        default_health_check(Bundle(bad))
