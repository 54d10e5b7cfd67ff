"""Opening a bundle for the agent: tiles, demand, parameters, business area, time zone.

``--bundle-dir`` is either one bundle directory (``manifest.yaml`` inside, named by its id) or a
sync bundle store (``current.json`` naming the active bundle under ``bundles/``). Parameters
come from the bundle's ``params.yaml``::

    version: params-1            # planner_parameters.version of the manifest
    timezone: America/New_York   # local time of the area (demand slots, no-entry windows)
    planner: {radius_m: 3000, horizon_s: 2700, speed_factor: 0.42, ...}   # PlannerParams

The supply prior (``supply.npz``, :class:`models.SupplyTable`: the fleet's usual vacant passes
per link and slot) is ``LoadedBundle.supply`` when the bundle ships one, else None; a supply
file that does not load, or names links the tiles lack, refuses the bundle like any damaged
file. Unknown keys are kept (``LoadedBundle.params_doc``) and ignored. A planner parameter the file
does not name takes its default, except ``speed_factor``, which is then measured from the
bundle's own trips (:func:`agent.planner.speed_factor_from_demand`), so it is never a guess.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agent.errors import BundleLoadError, GpsError
from agent.planner import PlannerParams, minute_of_week_of, monday_of, speed_factor_from_demand
from models import DemandModel, DemandTable, ModelsError, open_demand
from safety import BusinessArea, SafetyConfig, SafetyError
from sync import Bundle, SyncError, UnsafeNameError, check_bundle_id
from tiles import TilesError, TileStore
from tiles.fileio import one_line_error

if TYPE_CHECKING:  # imported where used: a bundle without supply.npz, not in a store (issue 20)
    from models import SupplyTable

log = logging.getLogger(__name__)
#: libyaml's parser when PyYAML has it (the same objects as yaml.safe_load, ~10x faster at start-up)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_PARAMS_BYTES = 1 << 20
MAX_AREA_BYTES = 16 << 20


@dataclass(frozen=True, eq=False)
class LoadedBundle:
    """Everything a tick reads from one bundle (read-only, shared by threads)."""

    bundle_id: str
    path: Path
    manifest: dict[str, Any]
    store: TileStore
    demand: DemandTable
    model: DemandModel | None  # predicted demand (ONNX), when the bundle ships one
    planner: PlannerParams
    safety: SafetyConfig
    area: BusinessArea | None
    timezone: zoneinfo.ZoneInfo
    params_doc: dict[str, Any]
    #: the fleet's usual vacant passes per link and slot (the planner's supply without a live
    #: snapshot), when the bundle ships one
    supply: SupplyTable | None = None

    def minute_of_week(self, time_s: float) -> float:
        """Fractional local minute of week of a UNIX time (Monday 00:00 = 0).

        :class:`GpsError` for a time no clock shows (NaN, inf, beyond year 9999): the time
        comes from the GPS source, and a bad one must not end in a traceback."""
        try:
            return minute_of_week_of(datetime.fromtimestamp(time_s, tz=self.timezone))
        except (OverflowError, ValueError, OSError) as e:
            raise GpsError(f"GPS time {time_s!r} is not a usable time: {e}") from e

    def monday(self, time_s: float) -> date:
        """Local date of the Monday of the week of a UNIX time (where minute of week 0 is)."""
        return monday_of(datetime.fromtimestamp(time_s, tz=self.timezone))

    def params_record(self) -> dict[str, Any]:
        return {
            "planner": self.planner.to_json(),
            "safety": dataclasses.asdict(self.safety),
            "timezone": str(self.timezone.key),
            "demand_model": None if self.model is None else self.model.version,
            "params_version": self.params_doc.get("version"),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.bundle_id,
            "area": self.manifest.get("area"),
            "path": str(self.path),
            "timezone": str(self.timezone.key),  # the page's clock shows the area's local time
            "versions": {
                k: v.get("version")
                for k, v in sorted(self.manifest.items())
                if isinstance(v, dict) and "version" in v
            },
        }

    def close(self) -> None:
        self.store.close()


def _read_bounded(path: Path, limit: int) -> bytes:
    """The file's bytes; OSError when it is larger than ``limit``."""
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path.name} is larger than {limit} bytes")
    return data


def resolve_bundle_path(bundle_dir: str | os.PathLike[str], bundle_id: str | None = None) -> Path:
    """The bundle directory to open: the store's active one, a given id in a store, or DIR."""
    d = Path(bundle_dir)
    if bundle_id is not None:  # from a trip log, i.e. from outside: never a path
        try:
            check_bundle_id(bundle_id, "trip log")
        except UnsafeNameError as e:
            raise BundleLoadError(str(e)) from e
    if (d / "current.json").is_file() or (d / "bundles").is_dir():
        from sync import BundleStore

        try:
            store = BundleStore(d)
            if bundle_id is not None:
                p = store.bundle_path(bundle_id)
                if not p.is_dir():
                    raise BundleLoadError(f"bundle {bundle_id[:12]} is not installed in {d}")
                return p
            active = store.active()
        except SyncError as e:
            raise BundleLoadError(f"bundle store {d}: {e}") from e
        if active is None:
            raise BundleLoadError(f"bundle store {d} has no active bundle")
        return active.path
    if (d / "manifest.yaml").is_file():
        return d
    if bundle_id is not None and (d / bundle_id / "manifest.yaml").is_file():
        return d / bundle_id
    raise BundleLoadError(f"{d} is neither a bundle (manifest.yaml) nor a bundle store")


def _planner_params(doc: dict[str, Any], table: DemandTable, store: TileStore) -> PlannerParams:
    raw = doc.get("planner") or {}
    try:
        params = PlannerParams.from_mapping(raw)
    except ValueError as e:
        raise BundleLoadError(str(e)) from e
    if not isinstance(raw, dict) or "speed_factor" not in raw:
        params = dataclasses.replace(
            params, speed_factor=speed_factor_from_demand(table, store.all())
        )
    return params


def load_bundle(
    bundle_dir: str | os.PathLike[str],
    *,
    bundle_id: str | None = None,
    timezone: str | None = None,
    verify: bool = False,
) -> LoadedBundle:
    """Open a bundle (see module docstring); ``verify`` re-hashes every file first."""
    path = resolve_bundle_path(bundle_dir, bundle_id)
    try:
        b = Bundle(path)
        if verify:
            b.verify()
    except SyncError as e:
        raise BundleLoadError(str(e)) from e
    try:
        doc = yaml.load(_read_bounded(b.params_path, MAX_PARAMS_BYTES), Loader=_SAFE_LOADER) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BundleLoadError(
            f"bundle {b.bundle_id[:12]}: {b.params_path} unreadable ({one_line_error(e)})"
        ) from e
    if not isinstance(doc, dict):
        raise BundleLoadError(f"bundle {b.bundle_id[:12]}: params.yaml is not a mapping")
    tz_name = doc.get("timezone") or timezone
    if not tz_name:
        raise BundleLoadError(
            f"bundle {b.bundle_id[:12]}: params.yaml names no timezone; pass --timezone"
        )
    try:
        tz = zoneinfo.ZoneInfo(str(tz_name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise BundleLoadError(f"unknown time zone {tz_name!r}") from e
    try:
        store = TileStore(b.tiles_path)
        table = DemandTable.load(b.demand_dir)
    except (TilesError, ModelsError) as e:
        raise BundleLoadError(f"bundle {b.bundle_id[:12]}: {e}") from e
    model: DemandModel | None = None
    try:
        _, model = open_demand(b.demand_dir, table=table)  # the same table, read once
    except ModelsError as e:  # the statistics still drive; say so loudly
        log.error(
            "bundle %s: demand model unusable, planning on statistics: %s", b.bundle_id[:12], e
        )
    area: BusinessArea | None = None
    if b.area_path.is_file():
        try:
            area_doc = json.loads(_read_bounded(b.area_path, MAX_AREA_BYTES))
            area = BusinessArea.from_geojson(area_doc)
        except (OSError, json.JSONDecodeError, SafetyError) as e:
            raise BundleLoadError(f"bundle {b.bundle_id[:12]}: area.geojson: {e}") from e
    supply = _load_supply(b, store)
    planner = _planner_params(doc, table, store)
    return LoadedBundle(
        bundle_id=b.bundle_id,
        path=path,
        manifest=b.manifest,
        store=store,
        demand=table,
        model=model,
        planner=planner,
        safety=SafetyConfig(),
        area=area,
        timezone=tz,
        params_doc=doc,
        supply=supply,
    )


def _load_supply(b: Bundle, store: TileStore) -> SupplyTable | None:
    """The bundle's supply prior, if it ships one; BundleLoadError when it is unusable."""
    path = b.supply_path
    if path is None:
        return None
    from models import SupplyTable

    try:
        table = SupplyTable.load(path)
    except ModelsError as e:
        store.close()
        raise BundleLoadError(f"bundle {b.bundle_id[:12]}: {e}") from e
    want = (b.manifest.get("fleet_supply") or {}).get("version")
    problem = None
    if want is not None and table.version != want:
        problem = f"supply.npz is {table.version}, the manifest says {want}"
    elif table.edge_id.size and int(table.edge_id[-1]) >= store.n_edges_total:
        problem = (
            f"supply.npz names link {int(table.edge_id[-1])}, the tiles have "
            f"{store.n_edges_total} links"
        )
    if problem is not None:
        store.close()
        raise BundleLoadError(f"bundle {b.bundle_id[:12]}: {problem}")
    return table


def load_start_bundle(
    bundle_dir: str | os.PathLike[str],
    *,
    timezone: str | None = None,
    repair: Callable[[], object] | None = None,
) -> LoadedBundle:
    """The bundle to start the agent on, every file hashed.

    The store's active bundle when it is intact. When it is damaged (or its folder gone): the
    store's last good or previous bundle, if one is intact (the sync thread re-fetches the
    active one and the agent switches back to it); else ``repair()`` once (a verified pull from
    the fleet, when sync is configured) and the active bundle again. A single bundle directory
    (not a store) has nothing to fall back on: its error is raised.
    """
    try:
        return load_bundle(bundle_dir, timezone=timezone, verify=True)
    except BundleLoadError as e:
        first = e
    d = Path(bundle_dir)
    if not ((d / "current.json").is_file() or (d / "bundles").is_dir()):
        raise first
    from sync import BundleStore

    try:
        fallbacks = BundleStore(d).fallback_ids()
    except SyncError as e:
        raise BundleLoadError(f"{first}; bundle store {d}: {e}") from e
    for bid in fallbacks:
        try:
            b = load_bundle(d, bundle_id=bid, timezone=timezone, verify=True)
        except BundleLoadError as e:
            log.error("fallback bundle %s is unusable too: %s", bid[:12], e)
            continue
        log.error(
            "active bundle unusable (%s); starting on the previous good bundle %s until it is "
            "fetched again",
            first,
            bid[:12],
        )
        return b
    if repair is None:
        raise first
    log.error("active bundle unusable (%s) and no good bundle to fall back on: re-pulling", first)
    try:
        repair()
    except (SyncError, OSError) as e:
        raise BundleLoadError(f"{first}; fetching it again failed: {e}") from e
    return load_bundle(d, timezone=timezone, verify=True)
