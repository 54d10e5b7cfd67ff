"""Release steps: ``bundle_params`` (params.yaml + area.geojson), ``build_bundle`` (compose the
manifest, assemble the bundle with sync/) and ``publish`` (to a local fleet repository, behind
the gates).

The gates meet here. ``build_bundle`` ships the ONNX model only when the demand gate passed
(otherwise statistics, and the manifest says ``predicted_demand: none`` and why); ``publish``
refuses, with the reason, when the planner did not beat hotspot in simulation, and also when a
bundle carries a model the demand gate rejected. A refusal is the step's *result* (a ``release``
verdict that did not pass, and a receipt saying why), not a crash: the same inputs give the
same refusal without re-running anything, and the run's status is ``refused``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from tiles.fileio import atomic_write_bytes as write_atomic
from tools.pipeline.step import OutputDecl, StepContext, StepKind, StepResult, Verdict

log = logging.getLogger(__name__)


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def read_verdict(path: Path | None) -> dict[str, Any] | None:
    """A gate's verdict file (``{"gate", "passed", "reason", ...}``), or None when not given."""
    if path is None:
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("passed"), bool):
        raise ValueError(f"{path} is not a gate verdict")
    return doc


# --------------------------------------------------------------------------- bundle_params


@dataclass(frozen=True)
class BundleParamsParams:
    """What goes into params.yaml and area.geojson. Planner values left None take the
    planner's defaults on the device; ``speed_factor`` None is measured from the demand
    table's trips (``agent.planner.speed_factor_from_demand``) here, at build time."""

    timezone: str  # IANA name of the area's local time (demand slots, no-entry windows)
    area_name: str = ""
    radius_m: float | None = None
    horizon_s: float | None = None
    speed_factor: float | None = None
    competing_vacant_per_h: float | None = None
    cost_per_m: float | None = None
    cost_per_s: float | None = None
    patience_s: float | None = None
    #: the route read-out's spread without a live snapshot (agent.planner.ROUTE_SPREAD_EPS)
    route_spread_eps: float | None = 0.05
    #: the value iteration's layer length (agent.planner.SHIPPED_STEP_S; the planner's own
    #: default, 10 s, is the exact solver)
    step_s: float | None = 20.0

    def __post_init__(self) -> None:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None


_PLANNER_KEYS = (
    "radius_m",
    "horizon_s",
    "speed_factor",
    "competing_vacant_per_h",
    "cost_per_m",
    "cost_per_s",
    "patience_s",
    "route_spread_eps",
    "step_s",
)


def run_bundle_params(ctx: StepContext) -> StepResult:
    from agent.planner import PlannerParams, speed_factor_from_demand
    from models import DemandTable
    from safety import BusinessArea, bbox_area_geojson
    from tiles import TileStore

    p: BundleParamsParams = ctx.params
    table = DemandTable.load(ctx.input("demand"))
    planner: dict[str, Any] = {k: getattr(p, k) for k in _PLANNER_KEYS if getattr(p, k) is not None}
    with TileStore(ctx.input("tiles")) as store:
        if "speed_factor" not in planner:
            planner["speed_factor"] = round(float(speed_factor_from_demand(table, store.all())), 6)
        bbox = store.bbox
    PlannerParams(**planner)  # rejects out-of-range values here, not on the device
    params: dict[str, Any] = {
        "timezone": p.timezone,
        "planner": planner,
        "demand": {
            "version": table.version,
            "scale_factor": table.scale_factor,
            "source": table.meta.get("source", "statistical"),
        },
    }
    params["version"] = "params-" + _short(yaml.safe_dump(params, sort_keys=True).encode())
    write_atomic(ctx.output("params"), yaml.safe_dump(params, sort_keys=True).encode())
    area_in = ctx.optional_input("area")
    if area_in is not None:
        doc = json.loads(area_in.read_text(encoding="utf-8"))
        BusinessArea.from_geojson(doc)  # a polygon, or an error now
        geom_src = "given"
    else:
        doc = bbox_area_geojson(bbox, p.area_name)
        geom_src = "bbox of the road tiles"
    doc = {k: v for k, v in doc.items() if k != "version"}
    doc["version"] = "area-" + _short(json.dumps(doc, sort_keys=True).encode())
    write_atomic(ctx.output("area"), json.dumps(doc, sort_keys=True).encode())
    return StepResult(
        metrics={
            "params_version": params["version"],
            "area_version": doc["version"],
            "area_from": geom_src,
            "planner": planner,
            "timezone": p.timezone,
        },
        summary=f"{params['version']}, {doc['version']} ({geom_src})",
    )


# --------------------------------------------------------------------------- build_bundle


@dataclass(frozen=True)
class BuildBundleParams:
    """No tunables: what the bundle holds is decided by its inputs and the demand gate."""


def _demand_decision(
    statistics_dir: Path, model_dir: Path | None, verdict: dict[str, Any] | None
) -> tuple[Path, str, str]:
    """(demand directory to ship, predicted_demand version or "none", why).

    The model directory (its own statistics, built from the training data, + model.onnx) ships
    only when the demand gate passed it; otherwise the statistics directory ships alone.
    """
    from models.predict import MODEL_JSON, MODEL_ONNX

    if model_dir is None:
        return statistics_dir, "none", "statistics only: no predicted-demand model for this area"
    if verdict is None:
        return statistics_dir, "none", "statistics only: the model was not evaluated at the gate"
    if not verdict["passed"]:
        return statistics_dir, "none", f"statistics only: {verdict['reason']}"
    if not (model_dir / MODEL_ONNX).is_file():
        raise ValueError(f"the demand gate passed but {model_dir} holds no {MODEL_ONNX}")
    doc = json.loads((model_dir / MODEL_JSON).read_text(encoding="utf-8"))
    return model_dir, str(doc["version"]), f"statistics + predicted model: {verdict['reason']}"


def run_build_bundle(ctx: StepContext) -> StepResult:
    from sync import BundleInputs, build_bundle, compose
    from sync.manifest import compose_docs

    verdict = read_verdict(ctx.optional_input("demand_gate"))
    demand_dir, model_version, why = _demand_decision(
        ctx.input("demand"), ctx.optional_input("model"), verdict
    )
    demand_doc = json.loads((demand_dir / "demand.json").read_text(encoding="utf-8"))
    params_doc = yaml.safe_load(ctx.input("params").read_text(encoding="utf-8"))
    area_doc = json.loads(ctx.input("area").read_text(encoding="utf-8"))
    base = compose(ctx.input("base"), *ctx.input_list("overlay"))
    desc = base.manifest.get("description", "")
    built_layer = {
        "statistical_demand": {"version": str(demand_doc["version"])},
        "predicted_demand": {"version": model_version},
        "planner_parameters": {"version": str(params_doc["version"])},
        "business_area": {"version": str(area_doc["version"])},
        "description": f"{desc}; demand: {why}" if desc else f"demand: {why}",
    }
    composed = compose_docs(base.manifest, [built_layer])
    inputs = BundleInputs(
        tiles=ctx.input("tiles"),
        demand_dir=demand_dir,
        params=ctx.input("params"),
        area=ctx.input("area"),
    )
    out = ctx.output("bundles")
    bundle = build_bundle(composed, inputs, out)
    for p in out.iterdir():  # exactly one bundle: the step's output is this build only
        if p.name != bundle.bundle_id:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return StepResult(
        metrics={
            "bundle_id": bundle.bundle_id,
            "manifest_sha256": composed.sha256,
            "manifest": composed.manifest,
            "files_bytes": {k: v.size_bytes for k, v in sorted(bundle.files.items())},
            "predicted_demand": model_version,
            "demand_decision": why,
        },
        summary=f"bundle {bundle.bundle_id[:16]} ({why})",
    )


# --------------------------------------------------------------------------- publish


@dataclass(frozen=True)
class PublishParams:
    fleet_root: str  # local fleet repository directory (relative to the pipeline file)
    area: str = ""  # default: the manifest's area
    init_repository: bool = False  # create keys + metadata when the directory holds none


def _the_bundle(bundles: Path) -> Path:
    found = [p for p in bundles.iterdir() if (p / "manifest.yaml").is_file()]
    if len(found) != 1:
        raise ValueError(f"{bundles} holds {len(found)} bundles, expected one")
    return found[0]


def run_publish(ctx: StepContext) -> StepResult:
    from sync import Bundle, FleetRepository

    p: PublishParams = ctx.params
    bundle = Bundle(_the_bundle(ctx.input("bundle")))
    planner = read_verdict(ctx.input("planner_gate"))
    demand = read_verdict(ctx.optional_input("demand_gate"))
    assert planner is not None
    refusal = None
    if not planner["passed"]:
        refusal = f"planner gate failed: {planner['reason']}"
    elif bundle.onnx_path is not None and (demand is None or not demand["passed"]):
        why = demand["reason"] if demand else "the model was not evaluated at the demand gate"
        refusal = (
            f"the bundle carries a predicted-demand model the demand gate did not pass ({why})"
        )
    if refusal is not None:
        reason = f"refused to publish bundle {bundle.bundle_id[:16]}: {refusal}"
        receipt = {
            "published": False,
            "bundle_id": bundle.bundle_id,
            "reason": reason,
            "planner_gate": planner,
            "demand_gate": demand,
        }
        write_atomic(ctx.output("receipt"), json.dumps(receipt, indent=2, sort_keys=True).encode())
        return StepResult(
            metrics={"published": False, "bundle_id": bundle.bundle_id, "reason": reason},
            verdict=Verdict("release", False, reason),
            summary=reason,
        )
    root = (ctx.pipeline_dir / p.fleet_root).resolve()
    repo = FleetRepository(root)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if not (repo.metadata_dir / "1.root.json").exists():
        if not p.init_repository:
            raise ValueError(
                f"no fleet repository at {root}: run `nagashi fleet keys init --root {root}` "
                "(or set init_repository: true)"
            )
        repo.init(now)
    area = p.area or bundle.area or ""
    result = repo.publish(bundle.path, area, now)
    demand_line = bundle.manifest.get("description", "")
    receipt = {
        "published": True,
        **asdict(result),
        "fleet_root": str(root),
        "published_at": now.isoformat(),
        "planner_gate": planner,
        "demand_gate": demand,
        "predicted_demand": bundle.manifest.get("predicted_demand", {}).get("version"),
        "manifest_description": demand_line,
    }
    write_atomic(ctx.output("receipt"), json.dumps(receipt, indent=2, sort_keys=True).encode())
    shipped = "statistics + model" if bundle.onnx_path is not None else "statistics only"
    return StepResult(
        metrics={k: v for k, v in receipt.items() if k not in ("planner_gate", "demand_gate")},
        verdict=Verdict("release", True, f"published {result.bundle_id[:16]}: gates passed"),
        summary=f"published {result.bundle_id[:16]} for {area} (targets v{result.targets_version},"
        f" {result.chunks_new}/{result.chunks_total} chunks new; {shipped})",
    )


KINDS: tuple[StepKind, ...] = (
    StepKind(
        name="bundle_params",
        run=run_bundle_params,
        params_type=BundleParamsParams,
        inputs=("tiles", "demand"),
        optional_inputs=("area",),
        outputs=(OutputDecl("params", "params.yaml"), OutputDecl("area", "area.geojson")),
        sources=("agent.planner", "safety", "models", "tiles", "tools.pipeline.steps_release"),
        description="params.yaml (timezone, planner values, speed factor) + area.geojson",
    ),
    StepKind(
        name="build_bundle",
        run=run_build_bundle,
        params_type=BuildBundleParams,
        inputs=("base", "tiles", "demand", "params", "area"),
        optional_inputs=("overlay", "model", "demand_gate"),
        outputs=(OutputDecl("bundles", "bundles", is_dir=True),),
        sources=("sync", "models", "tiles", "tools.pipeline.steps_release"),
        description="compose base + overlay + built versions; assemble the bundle (sync)",
    ),
    StepKind(
        name="publish",
        run=run_publish,
        params_type=PublishParams,
        inputs=("bundle", "planner_gate"),
        optional_inputs=("demand_gate",),
        outputs=(OutputDecl("receipt", "published.json"),),
        sources=("sync", "tools.pipeline.steps_release"),
        description="sign and publish to a local fleet repository, only behind passed gates",
    ),
)
