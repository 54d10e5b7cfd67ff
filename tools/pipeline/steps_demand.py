"""Demand steps: ``build_demand`` (statistical demand), ``train_model`` (the ONNX link model),
``train_recent_model`` (the ONNX recent-demand cell model on a month of pickups, as ``nagashi
demand train --train-days``), ``evaluate_demand`` (held-out evaluation + the demand release gate,
for either model), ``transfer_demand``
(demand for an area without its own taxi data, by a documented transfer) and ``shape_demand``
(that demand spread over the area by MLIT's people-flow, models/peopleflow.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from tools.pipeline.step import OutputDecl, StepContext, StepKind, StepResult

log = logging.getLogger(__name__)


def _overrides(params: Any) -> dict[str, Any]:
    """The parameters set in the pipeline (None means: the package's documented default)."""
    return {
        f.name: getattr(params, f.name)
        for f in dataclasses.fields(params)
        if getattr(params, f.name) is not None
    }


def _check_days(days: str | None) -> None:
    """``days`` as ``models.trips.parse_days`` reads it (a bad value: the parameter's error)."""
    if days is None:
        return
    from models.errors import ModelsError
    from models.trips import parse_days

    try:
        parse_days(days)
    except ModelsError as e:
        raise ValueError(str(e)) from None


@dataclass(frozen=True)
class BuildDemandParams:
    """Overrides of ``models.statistics.StatsConfig`` (None: the models/ default), and ``days``:
    the local dates whose pickups make the rates (``2014-04-01..2014-04-20``, as ``nagashi
    demand build --days``; None: every date), so that a simulation can replay other days; fares,
    trip times and drop-offs still come from every record that carries them."""

    trips_per_day_citywide: float | None = None
    cell_m: float | None = None
    k_cell: float | None = None
    k_link: float | None = None
    k_length: float | None = None
    days: str | None = None

    def __post_init__(self) -> None:
        _check_days(self.days)


def run_build_demand(ctx: StepContext) -> StepResult:
    from models.statistics import StatsConfig, build_demand_table
    from models.trips import parse_days
    from tiles import TileStore

    p: BuildDemandParams = ctx.params
    over = {k: v for k, v in _overrides(p).items() if k != "days"}
    config = dataclasses.replace(StatsConfig(), **over)
    days = parse_days(p.days) if p.days is not None else None
    with TileStore(ctx.input("tiles")) as store:
        table, report = build_demand_table(store, list(ctx.input_list("trips")), config, days=days)
    table.save(ctx.output("demand"))
    metrics = {
        "version": table.version,
        "scale_factor": table.scale_factor,
        "pickups_snapped": report["pickups_snapped"],
        "network_area_pickups_per_day": report["network_area_pickups_per_day"],
        "max_link_pickups_per_h": report["max_link_pickups_per_h"],
        "inputs": [
            {k: f.get(k) for k in ("rows", "kept", "outside_days", "mode", "sha256")}
            for f in report["inputs"]
        ],
        # the dates the rates were built from (demand.json ``days``): the simulate step refuses
        # to replay them
        "days": report["days"],
    }
    built_from = f" from {p.days}" if p.days is not None else ""
    return StepResult(
        metrics=metrics,
        summary=f"{table.version}: {report['pickups_snapped']} pickups snapped{built_from}, "
        f"{report['network_area_pickups_per_day']} hails/day in the area",
    )


KINDS: tuple[StepKind, ...] = (
    StepKind(
        name="build_demand",
        run=run_build_demand,
        params_type=BuildDemandParams,
        inputs=("tiles", "trips"),
        outputs=(OutputDecl("demand", "demand", is_dir=True),),
        sources=("tiles", "models", "tools.pipeline.steps_demand"),
        description="road tiles + trip files -> statistical demand (models.statistics)",
    ),
)


@dataclass(frozen=True)
class TransferDemandParams:
    """See :class:`tools.pipeline.transfer.TransferConfig` (None: its default)."""

    scale: float | None = None
    min_class_km: float | None = None
    cell_m: float | None = None
    currency: str | None = None


def run_transfer_demand(ctx: StepContext) -> StepResult:
    from models import DemandTable
    from tiles import TileStore
    from tools.pipeline.transfer import TransferConfig, transfer_demand

    config = TransferConfig(**_overrides(ctx.params))
    source = DemandTable.load(ctx.input("source_demand"))
    with TileStore(ctx.input("source_tiles")) as s, TileStore(ctx.input("tiles")) as t:
        if s.meta.get("source_sha256") != source.network_sha256:
            raise ValueError("source_demand was not built on source_tiles")
        table, report = transfer_demand(
            source, s.all(), t.all(), t.meta.get("source_sha256", ""), config
        )
    table.save(ctx.output("demand"))
    return StepResult(
        metrics={
            "version": table.version,
            "source_version": source.version,
            "area_hails_per_day": report["area_hails_per_day"],
            "mean_trip_distance_m": report["mean_trip_distance_m"],
            "dropoff_outside_share": report["dropoff_outside_share"],
            "config": report["config"],
        },
        summary=f"{table.version} from {source.version}: "
        f"{report['area_hails_per_day']} hails/day (transferred, not measured)",
    )


KINDS += (
    StepKind(
        name="transfer_demand",
        run=run_transfer_demand,
        params_type=TransferDemandParams,
        inputs=("tiles", "source_tiles", "source_demand"),
        outputs=(OutputDecl("demand", "demand", is_dir=True),),
        sources=("tiles", "models", "tools.pipeline.transfer", "tools.pipeline.steps_demand"),
        description="demand for an area without trip data: transfer by road class and time",
    ),
)


@dataclass(frozen=True)
class ShapeDemandParams:
    """See :class:`models.peopleflow.ShapeConfig` (None: its default)."""

    months: tuple[int, ...] | None = None
    exponent: float | None = None


def run_shape_demand(ctx: StepContext) -> StepResult:
    from models import DemandTable
    from models.peopleflow import ShapeConfig, read_people_flow, shape_by_people_flow
    from tiles import TileStore

    config = ShapeConfig(**_overrides(ctx.params))
    table = DemandTable.load(ctx.input("demand"))
    flow = read_people_flow(list(ctx.input_list("people_flow")), months=config.months)
    with TileStore(ctx.input("tiles")) as t:
        if t.meta.get("source_sha256") != table.network_sha256:
            raise ValueError("demand was not built on tiles")
        shaped, report = shape_by_people_flow(table, t.all(), flow, config)
    shaped.save(ctx.output("demand"))
    keys = (
        "months_read",
        "links_with_demand",
        "links_without_people_figure",
        "share_moved_between_meshes_week",
        "correlation_old_new_link_rates",
    )
    return StepResult(
        metrics={"version": shaped.version, "input_version": table.version}
        | {k: report[k] for k in keys},
        summary=f"{shaped.version} from {table.version}: "
        f"{100 * report['share_moved_between_meshes_week']:.1f} % of the week's demand moved "
        "between 1 km meshes by MLIT people-flow",
    )


KINDS += (
    StepKind(
        name="shape_demand",
        run=run_shape_demand,
        params_type=ShapeDemandParams,
        inputs=("tiles", "demand", "people_flow"),
        outputs=(OutputDecl("demand", "demand", is_dir=True),),
        sources=("tiles", "models", "tools.pipeline.steps_demand"),
        description="spread demand over the area by the people present per 1 km mesh (MLIT)",
    ),
)


@dataclass(frozen=True)
class TrainModelParams:
    """``models.train.train_model``: which windows of windows-mode training files to train on
    (the others stay held out for ``evaluate_demand``) and TrainConfig overrides."""

    train_windows: tuple[int, ...] | None = None  # None: every window (nothing held out)
    n_estimators_max: int | None = None
    learning_rate: float | None = None
    max_depth: int | None = None
    min_samples_leaf: int | None = None
    seed: int | None = None


def run_train_model(ctx: StepContext) -> StepResult:
    from models.train import TrainConfig, train_model
    from tiles import TileStore

    p: TrainModelParams = ctx.params
    over = {k: v for k, v in _overrides(p).items() if k != "train_windows"}
    config = dataclasses.replace(TrainConfig(), **over)
    with TileStore(ctx.input("tiles")) as store:
        doc = train_model(
            store,
            list(ctx.input_list("train")),
            list(ctx.input_list("valid")),
            ctx.output("model"),
            train_windows=set(p.train_windows) if p.train_windows is not None else None,
            config=config,
        )
    t = doc["training"]
    metrics = {
        "version": doc["version"],
        "statistics_version": doc["statistics_version"],
        "rows": t["rows"],
        "trees": t["n_estimators_selected"],
        "valid_poisson_deviance_model": t["valid_poisson_deviance_model"],
        "valid_poisson_deviance_statistics": t["valid_poisson_deviance_statistics"],
    }
    return StepResult(
        metrics=metrics,
        summary=f"{doc['version']}: {t['n_estimators_selected']} trees, valid deviance "
        f"{t['valid_poisson_deviance_model']} (statistics "
        f"{t['valid_poisson_deviance_statistics']})",
    )


#: the slot lengths a cell model is trained at (``models.predict.DemandModel`` loads these)
RECENT_SLOT_MINUTES = (15, 30)


@dataclass(frozen=True)
class TrainRecentModelParams:
    """``models.rolling.train_recent_model``, as ``nagashi demand train --train-days``: the
    training dates (consecutive dates of the pickup files, e.g. ``2014-04-01..2014-04-23``; the
    model's choices are made on the last 14 of them), the slot length (15, the release model,
    or 30), and ``RecentConfig`` overrides (None: its default), which make a test's model
    small: ``kinds`` (candidates), ``n_estimators_max``, ``folds`` (cross-fitting),
    ``valid_weeks``, ``seed``."""

    train_days: str
    slot_minutes: int = 15
    kinds: tuple[str, ...] | None = None
    n_estimators_max: int | None = None
    folds: int | None = None
    valid_weeks: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        from models.rolling import RecentConfig

        _check_days(self.train_days)
        if self.slot_minutes not in RECENT_SLOT_MINUTES:
            raise ValueError(f"slot_minutes must be 15 or 30, not {self.slot_minutes}")
        known = RecentConfig().kinds
        if self.kinds is not None and (not self.kinds or set(self.kinds) - set(known)):
            raise ValueError(f"kinds must be some of {', '.join(known)}, not {list(self.kinds)}")
        for name in ("n_estimators_max", "folds", "valid_weeks"):
            v = getattr(self, name)
            least = 2 if name == "folds" else 1
            if v is not None and v < least:
                raise ValueError(f"{name} must be at least {least}, not {v}")


def run_train_recent_model(ctx: StepContext) -> StepResult:
    from models.rolling import RecentConfig, train_recent_model
    from models.trips import parse_days
    from tiles import TileStore

    p: TrainRecentModelParams = ctx.params
    over = {k: v for k, v in _overrides(p).items() if k != "train_days"}
    config = dataclasses.replace(RecentConfig(), **over)
    with TileStore(ctx.input("tiles")) as store:
        doc = train_recent_model(
            store,
            list(ctx.input_list("train")),
            list(ctx.input_list("values")),
            ctx.output("model"),
            parse_days(p.train_days),
            config,
        )
    t = doc["training"]
    sel = t["selection"]
    metrics = {
        "version": doc["version"],
        "statistics_version": doc["statistics_version"],
        "kind": sel["chosen"],
        "slot_minutes": doc["slot_minutes"],
        "trees": t["n_estimators_selected"],
        "train_days": [t["train_days"][0], t["train_days"][-1]],
        "valid_days": [sel["valid_days"][0], sel["valid_days"][-1]],
        "candidates": sel["candidates"],
        "recent_level_window_min": sel["recent_level_window_min"],
        "offline": sel["offline"],
        "pickups_per_hail": doc["recent"]["pickups_per_hail"],
    }
    trees = f", {t['n_estimators_selected']} trees" if t["n_estimators_selected"] else ""
    dev = sel["candidates"][sel["chosen"]]["valid_poisson_deviance"]
    return StepResult(
        metrics=metrics,
        summary=f"{doc['version']}: {sel['chosen']}{trees}, {doc['slot_minutes']}-min slots, "
        f"trained on {t['train_days'][0]}..{t['train_days'][-1]}, valid deviance {dev}",
    )


@dataclass(frozen=True)
class EvaluateDemandParams:
    """``models.evaluate``: for a link model the held-out ``windows`` (None: those it was not
    trained on); for a cell model (``train_recent_model``) the held-out ``days`` (None: the 7
    dates of the trip files after its last training date, as ``nagashi demand eval`` finds
    them). Each is refused for the other kind of model."""

    windows: tuple[int, ...] | None = None
    days: str | None = None
    threads: int = 1  # onnxruntime intra-op threads

    def __post_init__(self) -> None:
        _check_days(self.days)


#: the evaluation's keys kept as the step's metrics (those the model's kind has)
_EVALUATION_METRICS = (
    "model",
    "statistics",
    "recent_baseline",
    "model_offline",
    "ratio_model_over_statistics",
    "ratio_model_over_recent_baseline",
    "ratio_offline_model_over_statistics",
    "heldout_pickups",
    "evaluated_on",
    "slot_minutes",
    "recent_level_window_min",
    "model_version",
    "statistics_version",
)


def _ratios(ratios: dict[str, float]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(ratios.items()))


def _demand_reason(result: dict[str, Any], passed: bool) -> str:
    """The verdict's one line: what the model was compared with, on what, and the ratios.

    The model's version stays out of it (it goes into the bundle's manifest): the link model's
    ONNX export names its graph with a random id, so its version differs on every training even
    when the predictions do not (docs/pipeline.md, limitations)."""
    if "gate_passed" not in result:  # the link model: against statistics
        detail = _ratios(result["ratio_model_over_statistics"])
        if passed:
            return (
                "the predicted-demand model beats statistics on held-out data "
                f"(model/statistics: {detail})"
            )
        return (
            "the predicted-demand model lost to statistics on held-out data "
            f"(model/statistics: {detail})"
        )
    days = result["evaluated_on"][0]["days"]
    held = f"{days[0]}..{days[-1]}" if days else "none"
    measured = (
        f"held-out days {held}, {result['slot_minutes']}-min slots "
        f"(model/recent baseline: {_ratios(result['ratio_model_over_recent_baseline'])}; "
        f"offline model/statistics: {_ratios(result['ratio_offline_model_over_statistics'])})"
    )
    if passed:
        return (
            "the recent-demand model beats the recent-level baseline, and offline is no worse "
            f"than statistics, on {measured}"
        )
    why = (
        "is not better offline than statistics"
        if result["model_beats_recent_baseline"]
        else "lost to the recent-level baseline"
    )
    return f"the recent-demand model {why} on {measured}"


def run_evaluate_demand(ctx: StepContext) -> StepResult:
    import shutil

    from models.evaluate import apply_gate, evaluate
    from models.predict import DemandModel, InferenceConfig
    from models.trips import parse_days
    from tiles import TileStore
    from tiles.fileio import atomic_write_bytes as write_atomic
    from tools.pipeline.step import Verdict

    p: EvaluateDemandParams = ctx.params
    gated = ctx.output("model")
    gated.rmdir()  # the runner made it; copytree wants to create it
    shutil.copytree(ctx.input("model"), gated)  # the trained model stays untouched
    model = DemandModel(gated, config=InferenceConfig(intra_op_threads=p.threads))
    cell = model.granularity == "cell"
    if cell and p.windows is not None:
        raise ValueError("windows: the model is a cell model, evaluated on held-out days")
    if not cell and p.days is not None:
        raise ValueError("days: the model is a link model, evaluated on held-out windows")
    with TileStore(ctx.input("tiles")) as store:
        result = evaluate(
            store,
            gated,
            list(ctx.input_list("trips")),
            windows=set(p.windows) if p.windows is not None else None,
            model=model,
            days=parse_days(p.days) if p.days is not None else None,
        )
    passed = apply_gate(gated, result)
    reason = _demand_reason(result, passed)
    verdict = Verdict("demand", passed, reason)
    write_atomic(
        ctx.output("verdict"),
        json.dumps({**verdict.to_json(), "evaluation": result}, indent=2, sort_keys=True).encode(),
    )
    return StepResult(
        metrics={k: result[k] for k in _EVALUATION_METRICS if k in result} | {"passed": passed},
        verdict=verdict,
        summary=("pass: " if passed else "FAIL (ships statistics): ") + reason,
    )


KINDS += (
    StepKind(
        name="train_model",
        run=run_train_model,
        params_type=TrainModelParams,
        inputs=("tiles", "train", "valid"),
        outputs=(OutputDecl("model", "model", is_dir=True),),
        sources=("tiles", "models", "tools.pipeline.steps_demand"),
        description="ONNX predicted demand (models.train), selected on the valid files",
    ),
    StepKind(
        name="evaluate_demand",
        run=run_evaluate_demand,
        params_type=EvaluateDemandParams,
        inputs=("tiles", "model", "trips"),
        outputs=(
            OutputDecl("model", "gated", is_dir=True),
            OutputDecl("verdict", "verdict.json"),
        ),
        sources=("tiles", "models", "tools.pipeline.steps_demand", "tools.pipeline.step"),
        description="held-out evaluation + the demand release gate (link model: vs statistics;"
        " cell model: vs the recent-level baseline)",
    ),
    StepKind(
        name="train_recent_model",
        run=run_train_recent_model,
        params_type=TrainRecentModelParams,
        inputs=("tiles", "train", "values"),
        outputs=(OutputDecl("model", "model", is_dir=True),),
        sources=("tiles", "models", "tools.pipeline.steps_demand"),
        description="ONNX recent-demand cell model (models.rolling) on a month of pickups;"
        " fares, trip times and drop-offs from the values files",
    ),
)
