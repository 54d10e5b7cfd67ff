"""Bundles: build one from a composed manifest and its inputs, open and verify one.

A bundle is a directory named by its *bundle id*, the sha256 of its ``manifest.yaml``, which
lists every other file with its sha256 and size. Once written it is never modified::

    manifest.yaml        composed version manifest + every file's sha256 and size
    tiles.sqlite         road tiles
    demand/demand.npz    statistical demand (DemandTable)
    demand/demand.json
    demand/model.json    predicted-demand spec and release-gate decision (when models/ wrote one)
    demand/model.onnx    predicted demand (only when predicted_demand.version is not "none")
    demand/features.npz  its static per-link features
    params.yaml          planner / safety parameters
    area.geojson         business area polygon (lon, lat)
    supply.npz           the fleet's usual vacant passes per link and slot (models.SupplyTable;
                         only when the manifest names fleet_supply.version)
    ATTRIBUTION.txt      © OpenStreetMap contributors (ODbL 1.0)

Version checks at build time (a mismatch refuses the build): the tile database's
``source_sha256`` equals ``road_network.source_sha256``; ``demand/demand.json`` has
``version == statistical_demand.version`` and ``network_sha256`` equal to the tiles'
``source_sha256``; ``demand/model.json`` has ``version == predicted_demand.version`` and
``shipped: true`` (and no shipped model when that is ``"none"``); ``params.yaml`` has ``version ==
planner_parameters.version`` (and ``cost_features_version == cost_features.version`` when it
names one); ``area.geojson`` has a top-level ``"version"`` equal to ``business_area.version``;
``supply.npz`` is given exactly when the manifest names ``fleet_supply.version``, loads as a
``SupplyTable`` whose ``version`` is that one, and names only links of the tiles (and the
tiles' network, when its meta names one).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sync._fs import fsync_dir, fsync_file, read_bounded, sha256_bytes, sha256_file, storage_errors
from sync.errors import BundleInputError, BundleVerifyError, UnsafeNameError
from sync.names import check_file_name, is_hex64
from tiles.fileio import one_line_error, sqlite_readonly_uri

if TYPE_CHECKING:  # composing is the build side's: opening a bundle needs none of it (issue 20)
    from sync.manifest import Composed

log = logging.getLogger(__name__)
#: libyaml's parser when PyYAML has it (the same objects as yaml.safe_load, ~10x faster at start-up)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MANIFEST_FILE = "manifest.yaml"
TILES_FILE = "tiles.sqlite"
DEMAND_DIR = "demand"
DEMAND_FILES = ("demand.npz", "demand.json")
MODEL_JSON = "model.json"
MODEL_SHIPPED_FILES = ("model.onnx", "features.npz")  # present only when the gate passed
PARAMS_FILE = "params.yaml"
AREA_FILE = "area.geojson"
SUPPLY_FILE = "supply.npz"
ATTRIBUTION_FILE = "ATTRIBUTION.txt"
MAX_BUNDLE_MANIFEST_BYTES = 4 << 20
MAX_SIDE_FILE_BYTES = 16 << 20  # params, area, json sidecars read at build time
BUNDLE_FORMAT = 1
ATTRIBUTION_TEXT = (
    "Road data © OpenStreetMap contributors, available under the Open Database License "
    "(ODbL 1.0): https://www.openstreetmap.org/copyright\n"
)


def _attributions(node: object) -> list[str]:
    """Every ``attribution`` string in a JSON document (the demand table names its sources)."""
    if isinstance(node, dict):
        found = [node["attribution"]] if isinstance(node.get("attribution"), str) else []
        return found + [a for v in node.values() for a in _attributions(v)]
    if isinstance(node, list):
        return [a for v in node for a in _attributions(v)]
    return []


def attribution_text(sources: Sequence[tuple[str, Path]]) -> str:
    """ATTRIBUTION.txt: OpenStreetMap's notice, then the attributions the bundle's demand
    table asks for (e.g. MLIT's people-flow, CC BY 4.0), each once."""
    extra: list[str] = []
    for name, src in sources:
        if Path(name).name != "demand.json":
            continue
        try:
            doc = json.loads(Path(src).read_bytes()[:MAX_SIDE_FILE_BYTES])
        except (OSError, ValueError):
            continue  # check_inputs already read it; a file that cannot be read adds nothing
        for a in _attributions(doc):
            if a not in extra:
                extra.append(a)
    return ATTRIBUTION_TEXT + "".join(f"Demand data: {a}\n" for a in extra)


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size_bytes: int


def _parse_bundle_manifest(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, FileEntry]]:
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=_SAFE_LOADER)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise BundleVerifyError(
            f"{where}: manifest.yaml is not valid YAML ({one_line_error(e)})"
        ) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise BundleVerifyError(f"{where}: manifest.yaml lacks a files mapping")
    if doc.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleVerifyError(
            f"{where}: bundle_format {doc.get('bundle_format')!r} is not {BUNDLE_FORMAT}"
        )
    files: dict[str, FileEntry] = {}
    for name, ent in doc["files"].items():
        try:
            check_file_name(name, where)
        except UnsafeNameError as e:
            raise BundleVerifyError(f"{e} (manifest.yaml)") from e
        if (
            name == MANIFEST_FILE
            or not isinstance(ent, dict)
            or not is_hex64(ent.get("sha256"))
            or not isinstance(ent.get("size_bytes"), int)
            or isinstance(ent.get("size_bytes"), bool)
            or ent["size_bytes"] < 0
        ):
            raise BundleVerifyError(f"{where}: bad file entry {name!r} in manifest.yaml")
        files[name] = FileEntry(ent["sha256"], ent["size_bytes"])
    return doc, files


class Bundle:
    """An installed bundle directory (read-only). Opening checks the manifest's own hash;
    :meth:`verify` checks every file."""

    def __init__(self, path: str | os.PathLike[str], *, expect_id: str | None = None) -> None:
        self.path = Path(path).resolve()
        try:
            data = read_bounded(self.path / MANIFEST_FILE, MAX_BUNDLE_MANIFEST_BYTES)
        except OSError as e:
            raise BundleVerifyError(f"{self.path}: no readable manifest.yaml ({e})") from e
        self.bundle_id = sha256_bytes(data)
        want = expect_id if expect_id is not None else self.path.name
        if self.bundle_id != want:
            raise BundleVerifyError(
                f"{self.path}: manifest.yaml hashes to {self.bundle_id}, expected {want}"
            )
        self.doc, self.files = _parse_bundle_manifest(data, str(self.path))
        m = self.doc.get("manifest")
        self.manifest: dict[str, Any] = m if isinstance(m, dict) else {}

    # paths the agent uses (resolved; never through a pointer that may be swapped)
    @property
    def tiles_path(self) -> Path:
        return self.path / TILES_FILE

    @property
    def demand_dir(self) -> Path:
        return self.path / DEMAND_DIR

    @property
    def onnx_path(self) -> Path | None:
        p = self.path / DEMAND_DIR / MODEL_SHIPPED_FILES[0]
        return p if f"{DEMAND_DIR}/{MODEL_SHIPPED_FILES[0]}" in self.files else None

    @property
    def supply_path(self) -> Path | None:
        """The supply prior (``supply.npz``), when the bundle ships one."""
        return self.path / SUPPLY_FILE if SUPPLY_FILE in self.files else None

    @property
    def params_path(self) -> Path:
        return self.path / PARAMS_FILE

    @property
    def area_path(self) -> Path:
        return self.path / AREA_FILE

    @property
    def area(self) -> str | None:
        a = self.manifest.get("area")
        return a if isinstance(a, str) else None

    @property
    def manifest_sha256(self) -> str:
        return str(self.doc.get("manifest_sha256", ""))

    def verify(self) -> None:
        """Every listed file exists with its size and sha256, and nothing else is there."""
        seen = {MANIFEST_FILE}
        for name, ent in sorted(self.files.items()):
            p = self.path / name
            try:
                size = p.stat().st_size
            except OSError as e:
                raise BundleVerifyError(f"bundle {self.bundle_id[:12]}: {name} missing") from e
            if size != ent.size_bytes:
                raise BundleVerifyError(
                    f"bundle {self.bundle_id[:12]}: {name} has {size} bytes, "
                    f"manifest says {ent.size_bytes}"
                )
            if sha256_file(p) != ent.sha256:
                raise BundleVerifyError(f"bundle {self.bundle_id[:12]}: {name} hash mismatch")
            seen.add(name)
        for p in self.path.rglob("*"):
            if p.is_file() and p.relative_to(self.path).as_posix() not in seen:
                raise BundleVerifyError(
                    f"bundle {self.bundle_id[:12]}: unexpected file {p.relative_to(self.path)}"
                )

    def __repr__(self) -> str:
        return f"Bundle({self.bundle_id[:12]}, area={self.area!r})"


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class BundleInputs:
    """Where ``bundle build`` reads its inputs (flags override the manifest's ``inputs``)."""

    tiles: Path  # a tiles.sqlite (or a directory holding one)
    demand_dir: Path  # holds demand.npz + demand.json (+ model.onnx + model.json)
    params: Path  # params.yaml
    area: Path  # area.geojson
    supply: Path | None = None  # supply.npz (optional: the manifest's fleet_supply)

    @staticmethod
    def resolve(composed: Composed, **flags: Path | None) -> BundleInputs:
        found: dict[str, Path] = dict(composed.inputs)
        for k, v in flags.items():
            if v is not None:
                found[k] = Path(v).resolve()
        missing = [k for k in ("tiles", "demand", "params", "area") if k not in found]
        if missing:
            raise BundleInputError(
                "bundle inputs not given (flag or manifest inputs.*): " + ", ".join(missing)
            )
        tiles = found["tiles"]
        if tiles.is_dir():
            tiles = tiles / TILES_FILE
        return BundleInputs(
            tiles, found["demand"], found["params"], found["area"], found.get("supply")
        )


def _read_json(p: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(read_bounded(p, MAX_SIDE_FILE_BYTES))
    except FileNotFoundError as e:
        raise BundleInputError(f"{what} not found: {p}") from e
    except (OSError, ValueError) as e:
        raise BundleInputError(f"{what} {p} is not readable JSON ({e})") from e
    if not isinstance(doc, dict):
        raise BundleInputError(f"{what} {p}: expected a JSON object")
    return doc


def _tiles_meta(p: Path) -> dict[str, str]:
    if not p.is_file():
        raise BundleInputError(f"tile database not found: {p}")
    try:
        conn = sqlite3.connect(sqlite_readonly_uri(p), uri=True)
        try:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise BundleInputError(f"{p} is not a tile database ({e})") from e


def _mismatch(what: str, got: Any, want: Any) -> BundleInputError:
    return BundleInputError(f"refusing to build: {what} is {got!r}, the manifest says {want!r}")


def _model_files(want: str, demand_dir: Path) -> list[tuple[str, Path]]:
    """The predicted-demand files to ship, checked against ``predicted_demand.version``.

    models/ writes ``model.json`` (with ``shipped`` saying whether the model passed the release
    gate) and, when it passed, ``model.onnx`` + ``features.npz``.
    """
    from sync.manifest import NO_MODEL

    model_json = demand_dir / MODEL_JSON
    doc = _read_json(model_json, "model spec") if model_json.exists() else None
    shipped = bool(doc and doc.get("shipped", False))
    out: list[tuple[str, Path]] = []
    if doc is not None:
        out.append((f"{DEMAND_DIR}/{MODEL_JSON}", model_json))
    if want == NO_MODEL:
        if shipped:
            raise BundleInputError(
                "refusing to build: the demand directory ships model "
                f"{doc and doc.get('version')!r}, the manifest says predicted_demand.version "
                f"is {NO_MODEL!r}"
            )
        for name in MODEL_SHIPPED_FILES:
            if (demand_dir / name).exists():
                log.warning("predicted_demand is 'none': leaving %s out", demand_dir / name)
        return out
    if doc is None:
        raise BundleInputError(f"predicted demand {want!r} needs {model_json}: model spec missing")
    if doc.get("version") != want:
        raise _mismatch("predicted_demand.version (model.json)", doc.get("version"), want)
    if not shipped:
        raise BundleInputError(
            f"refusing to build: model {want!r} did not pass the release gate (model.json "
            "shipped is false); set predicted_demand.version to 'none'"
        )
    for name in MODEL_SHIPPED_FILES:
        if not (demand_dir / name).is_file():
            raise BundleInputError(f"predicted demand {want!r} needs {demand_dir / name}")
        out.append((f"{DEMAND_DIR}/{name}", demand_dir / name))
    return out


def _supply_files(
    manifest: Mapping[str, Any], supply: Path | None, tiles_meta: Mapping[str, str]
) -> list[tuple[str, Path]]:
    """The supply prior to ship, checked against ``fleet_supply.version`` and the tiles."""
    section = manifest.get("fleet_supply")
    want = section.get("version") if isinstance(section, dict) else None
    if want is None and supply is None:
        return []
    if want is None:
        raise BundleInputError(
            f"refusing to build: a supply table is given ({supply}) but the manifest names no "
            "fleet_supply.version (add fleet_supply: {version: ...} to the overlay)"
        )
    if supply is None:
        raise BundleInputError(
            f"fleet supply {want!r} needs a supply table (--supply or inputs.supply)"
        )
    from models import ModelsError
    from models.supply import SupplyTable

    try:
        table = SupplyTable.load(supply)
    except ModelsError as e:
        raise BundleInputError(f"refusing to build: {e}") from e
    if table.version != want:
        raise _mismatch(f"fleet_supply.version ({supply.name})", table.version, want)
    network = table.meta.get("network_sha256")
    if network is not None and network != tiles_meta.get("source_sha256"):
        raise BundleInputError(
            f"refusing to build: the supply table was measured on network {network!r}, the "
            f"tiles are {tiles_meta.get('source_sha256')!r}"
        )
    n_edges = int(tiles_meta.get("n_edges", "0"))
    if table.edge_id.size and int(table.edge_id[-1]) >= n_edges:
        raise BundleInputError(
            f"refusing to build: the supply table names link {int(table.edge_id[-1])}, the "
            f"tiles have {n_edges} links"
        )
    return [(SUPPLY_FILE, supply)]


def check_inputs(manifest: Mapping[str, Any], inputs: BundleInputs) -> list[tuple[str, Path]]:
    """Check every input's version against the manifest; the (bundle name, source) pairs."""
    meta = _tiles_meta(inputs.tiles)
    want_src = manifest["road_network"]["source_sha256"]
    if meta.get("source_sha256") != want_src:
        raise _mismatch("road_network.source_sha256 (tiles)", meta.get("source_sha256"), want_src)
    demand_json = inputs.demand_dir / DEMAND_FILES[1]
    dj = _read_json(demand_json, "demand table")
    want = manifest["statistical_demand"]["version"]
    if dj.get("version") != want:
        raise _mismatch("statistical_demand.version (demand.json)", dj.get("version"), want)
    if dj.get("network_sha256") != want_src:
        raise BundleInputError(
            f"refusing to build: the demand table was built on network "
            f"{dj.get('network_sha256')!r}, the tiles are {want_src!r}"
        )
    files: list[tuple[str, Path]] = [
        (TILES_FILE, inputs.tiles),
        *((f"{DEMAND_DIR}/{n}", inputs.demand_dir / n) for n in DEMAND_FILES),
    ]
    files += _model_files(manifest["predicted_demand"]["version"], inputs.demand_dir)
    try:
        params = yaml.safe_load(read_bounded(inputs.params, MAX_SIDE_FILE_BYTES))
    except FileNotFoundError as e:
        raise BundleInputError(f"params not found: {inputs.params}") from e
    except (OSError, yaml.YAMLError) as e:
        raise BundleInputError(
            f"params {inputs.params} is not readable YAML ({one_line_error(e)})"
        ) from e
    if not isinstance(params, dict):
        raise BundleInputError(f"params {inputs.params}: expected a mapping")
    want = manifest["planner_parameters"]["version"]
    if params.get("version") != want:
        raise _mismatch("planner_parameters.version (params.yaml)", params.get("version"), want)
    want = manifest["cost_features"]["version"]
    if "cost_features_version" in params and params["cost_features_version"] != want:
        raise _mismatch(
            "cost_features.version (params.yaml)", params["cost_features_version"], want
        )
    area = _read_json(inputs.area, "business area")
    want = manifest["business_area"]["version"]
    if area.get("version") != want:
        raise _mismatch("business_area.version (area.geojson)", area.get("version"), want)
    files += [(PARAMS_FILE, inputs.params), (AREA_FILE, inputs.area)]
    files += _supply_files(manifest, inputs.supply, meta)
    return files


@storage_errors
def build_bundle(composed: Composed, inputs: BundleInputs, out_dir: str | Path) -> Bundle:
    """Assemble a bundle under ``out_dir/<bundle id>``; the same inputs give the same bytes."""
    from sync.manifest import SCHEMA_VERSION, dump_yaml, manifest_hash

    manifest = composed.manifest
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BundleInputError("manifest is not composed (no schema_version)")
    sources = check_inputs(manifest, inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out))
    try:
        entries: dict[str, dict[str, Any]] = {}
        for name, src in sources:
            dst = stage / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            fsync_file(dst)
        (stage / ATTRIBUTION_FILE).write_bytes(attribution_text(sources).encode())
        fsync_file(stage / ATTRIBUTION_FILE)
        for name in sorted([*(n for n, _ in sources), ATTRIBUTION_FILE]):
            p = stage / name
            entries[name] = {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
        doc = {
            "schema_version": SCHEMA_VERSION,
            "bundle_format": BUNDLE_FORMAT,
            "manifest": manifest,
            "manifest_sha256": manifest_hash(manifest),
            "files": entries,
        }
        data = dump_yaml(doc).encode("utf-8")
        (stage / MANIFEST_FILE).write_bytes(data)
        fsync_file(stage / MANIFEST_FILE)
        for d in {stage, stage / DEMAND_DIR}:
            fsync_dir(d)
        bundle_id = sha256_bytes(data)
        final = out / bundle_id
        if final.exists():
            existing = Bundle(final)
            existing.verify()
            log.info("bundle %s already built at %s", bundle_id[:12], final)
            return existing
        os.rename(stage, final)
        fsync_dir(out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    bundle = Bundle(final)
    bundle.verify()
    return bundle
