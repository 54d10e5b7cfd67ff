"""The demand contract between models/ (which builds it) and the planner, simulator and safety.

Statistical demand is a :class:`DemandTable`: for every directed link of one road network
(identified by its tile database's ``source_sha256`` and edge count), the expected number of
street hails per hour, per 30-minute slot and day type, already scaled to absolute rates (the
factor is kept in ``scale_factor`` and documented where it is computed), plus what a pickup on
the link pays and where it goes. The rates may rest on app pickups (the Uber April 2014 month)
scaled to the yellow-cab volume; fares, trip times and drop-offs only on records that carry
them (yellow cabs). ``demand.json`` says which file gave which column (``sources``, schema 2).

A planning tick reads a :class:`TickDemand`: the same quantities restricted to the links it
considers and to the slots its horizon covers, whichever source produced them (statistics or the
ONNX model). The trip log stores the TickDemand so replay sees exactly what the planner saw.

Day types: 0 weekday (Mon-Fri), 1 Saturday, 2 Sunday or holiday. Slots: 48 per day, slot ``s``
covers minutes ``[30 s, 30 s + 30)`` of the day. Times are local wall-clock time of the area.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import DemandDataError
from tiles.fileio import atomic_write_bytes

#: 2: demand.json says which input file gave which column (``sources``) and the days it was
#: built from (``days``); a schema-1 table (without them) still loads
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
DAY_TYPES: tuple[str, ...] = ("weekday", "saturday", "sunday_holiday")
SLOT_MINUTES = 30
SLOTS_PER_DAY = 24 * 60 // SLOT_MINUTES
TABLE_NPZ = "demand.npz"
TABLE_JSON = "demand.json"

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]


def day_type_of_weekday(weekday: int) -> int:
    """ISO weekday (Monday=0) to day type (holidays are the caller's business)."""
    return 0 if weekday < 5 else (1 if weekday == 5 else 2)


def slot_of_minute_of_week(
    minute_of_week: npt.ArrayLike,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(day type, slot of day) for minutes of week (Monday 00:00 = 0)."""
    m = np.asarray(minute_of_week, dtype=np.int64) % (7 * 1440)
    weekday = m // 1440
    day_type = np.where(weekday < 5, 0, np.where(weekday == 5, 1, 2))
    slot = (m % 1440) // SLOT_MINUTES
    return day_type, slot


@dataclass(frozen=True, eq=False)
class CellGrid:
    """A regular grid of ~500 m cells over the network's bounding box (for drop-offs and the
    production-style evaluation level)."""

    min_lon: float
    min_lat: float
    cell_deg_lon: float
    cell_deg_lat: float
    ncols: int
    nrows: int

    @property
    def n_cells(self) -> int:
        return self.ncols * self.nrows

    def cell_of(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Cell index of points; -1 outside the grid."""
        cx = np.floor((np.asarray(lon, dtype=np.float64) - self.min_lon) / self.cell_deg_lon)
        cy = np.floor((np.asarray(lat, dtype=np.float64) - self.min_lat) / self.cell_deg_lat)
        ok = (cx >= 0) & (cx < self.ncols) & (cy >= 0) & (cy < self.nrows)
        return np.where(ok, cy * self.ncols + cx, -1).astype(np.int64)

    def to_json(self) -> dict[str, Any]:
        return {
            "min_lon": self.min_lon,
            "min_lat": self.min_lat,
            "cell_deg_lon": self.cell_deg_lon,
            "cell_deg_lat": self.cell_deg_lat,
            "ncols": self.ncols,
            "nrows": self.nrows,
        }


@dataclass(frozen=True, eq=False)
class DemandTable:
    """Statistical demand for every link of one road network (see module docstring)."""

    network_sha256: str  # tiles meta ``source_sha256`` of the network it was built on
    n_edges: int  # edges of that network: arrays below are indexed by global edge id
    pickups_per_h: F32  # (3 day types, 48 slots, n_edges): expected street hails per hour
    fare_mean: F32  # (n_edges,) mean fare of trips starting on the link, currency units
    fare_quantiles: F32  # (n_edges, 3): 10 %, 50 %, 90 %
    trip_duration_s: F32  # (n_edges,) mean occupied time of a trip starting on the link
    trip_distance_m: F32  # (n_edges,) mean trip distance
    grid: CellGrid
    edge_cell: I32  # (n_edges,) cell of each link's midpoint
    dropoff: F32  # (n_cells, n_cells + 1): P(drop-off cell | pickup cell); last column: outside
    scale_factor: float  # absolute rate = sample rate * scale_factor (see models docs)
    version: str
    meta: dict[str, Any] = field(default_factory=dict)  # provenance, counts; unknown keys kept

    def validate(self) -> None:
        n = self.n_edges
        shapes = {
            "pickups_per_h": (len(DAY_TYPES), SLOTS_PER_DAY, n),
            "fare_mean": (n,),
            "fare_quantiles": (n, 3),
            "trip_duration_s": (n,),
            "trip_distance_m": (n,),
            "edge_cell": (n,),
            "dropoff": (self.grid.n_cells, self.grid.n_cells + 1),
        }
        for name, shape in shapes.items():
            got = getattr(self, name).shape
            if got != shape:
                raise DemandDataError(
                    f"demand table field {name} has shape {got}, expected {shape}"
                )
        for name in ("pickups_per_h", "fare_mean", "trip_duration_s", "dropoff"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise DemandDataError(f"demand table field {name} has NaN or negative values")
        if n and (int(self.edge_cell.min()) < 0 or int(self.edge_cell.max()) >= self.grid.n_cells):
            raise DemandDataError(
                f"demand table field edge_cell has cells outside the grid's {self.grid.n_cells}"
            )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``demand.npz`` and ``demand.json`` into ``directory`` (atomically, each)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {
            "pickups_per_h": self.pickups_per_h,
            "fare_mean": self.fare_mean,
            "fare_quantiles": self.fare_quantiles,
            "trip_duration_s": self.trip_duration_s,
            "trip_distance_m": self.trip_distance_m,
            "edge_cell": self.edge_cell,
            "dropoff": self.dropoff,
        }
        _atomic_write(d / TABLE_NPZ, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # stubs: a **dict may fill allow_pickle
        doc = {
            "schema_version": SCHEMA_VERSION,
            "network_sha256": self.network_sha256,
            "n_edges": self.n_edges,
            "grid": self.grid.to_json(),
            "scale_factor": self.scale_factor,
            "version": self.version,
            "day_types": list(DAY_TYPES),
            "slot_minutes": SLOT_MINUTES,
            **{k: v for k, v in self.meta.items() if k not in {"schema_version"}},
        }
        data = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode()
        _atomic_write(d / TABLE_JSON, lambda fh: fh.write(data))
        return d

    @staticmethod
    def load(directory: str | os.PathLike[str]) -> DemandTable:
        d = Path(directory)
        try:
            doc = json.loads((d / TABLE_JSON).read_text())
            with np.load(d / TABLE_NPZ, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError as e:
            raise DemandDataError(f"no demand table in {d}: {e.filename} missing") from e
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise DemandDataError(f"demand table in {d} is corrupt: {e}") from e
        if doc.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
            raise DemandDataError(f"demand table in {d} has schema {doc.get('schema_version')!r}")
        try:
            table = DemandTable(
                network_sha256=doc["network_sha256"],
                n_edges=int(doc["n_edges"]),
                pickups_per_h=arrays["pickups_per_h"].astype(np.float32),
                fare_mean=arrays["fare_mean"].astype(np.float32),
                fare_quantiles=arrays["fare_quantiles"].astype(np.float32),
                trip_duration_s=arrays["trip_duration_s"].astype(np.float32),
                trip_distance_m=arrays["trip_distance_m"].astype(np.float32),
                grid=CellGrid(**doc["grid"]),
                edge_cell=arrays["edge_cell"].astype(np.int32),
                dropoff=arrays["dropoff"].astype(np.float32),
                scale_factor=float(doc["scale_factor"]),
                version=str(doc["version"]),
                meta={
                    k: v
                    for k, v in doc.items()
                    if k not in {"network_sha256", "n_edges", "grid", "scale_factor", "version"}
                },
            )
        except (KeyError, TypeError) as e:
            raise DemandDataError(f"demand table in {d} lacks {e}") from e
        table.validate()
        return table

    @property
    def sources(self) -> dict[str, list[dict[str, Any]]] | None:
        """Which input file gave which column (``pickup_rate``, ``fare``, ``trip_time``,
        ``trip_distance``, ``dropoff``; see :func:`models.statistics.column_sources`); None for
        a table saved before schema 2."""
        src = self.meta.get("sources")
        return src if isinstance(src, dict) else None

    def rates(self, edge_ids: npt.ArrayLike, minutes_of_week: npt.ArrayLike) -> F32:
        """Expected hails per hour, shape (len(minutes), len(edge_ids))."""
        e = np.asarray(edge_ids, dtype=np.int64)
        dt, slot = slot_of_minute_of_week(np.atleast_1d(np.asarray(minutes_of_week)))
        return np.asarray(
            self.pickups_per_h[dt[:, None], slot[:, None], e[None, :]], dtype=np.float32
        )


@dataclass(frozen=True, eq=False)
class TickDemand:
    """What one planning tick knows about demand on the links it considers.

    ``pickups_per_h[k, i]`` is the expected hails per hour on link ``edge_id[i]`` during the
    30-minute slot starting at ``slot_minute_of_week[k]``. Drop-offs: ``cell[i]`` is the link's
    cell (index into ``dropoff`` rows, local to this tick); ``dropoff[c, c2]`` the probability
    that a trip picked up in local cell ``c`` ends in local cell ``c2``; its last column is the
    probability of ending outside the considered area.
    """

    edge_id: I32
    slot_minute_of_week: npt.NDArray[np.int64]
    pickups_per_h: F32
    fare_mean: F32
    trip_duration_s: F32
    cell: I32
    dropoff: F32
    source: str  # "statistical:<version>" or "onnx:<version>"

    def to_record(self) -> dict[str, Any]:
        """Plain, msgpack-able form for the trip log (exact: floats kept as float32 bytes)."""
        return {
            "edge_id": self.edge_id.astype("<i4").tobytes(),
            "slot_minute_of_week": self.slot_minute_of_week.astype("<i8").tobytes(),
            "pickups_per_h": self.pickups_per_h.astype("<f4").tobytes(),
            "shape": list(self.pickups_per_h.shape),
            "fare_mean": self.fare_mean.astype("<f4").tobytes(),
            "trip_duration_s": self.trip_duration_s.astype("<f4").tobytes(),
            "cell": self.cell.astype("<i4").tobytes(),
            "dropoff": self.dropoff.astype("<f4").tobytes(),
            "dropoff_shape": list(self.dropoff.shape),
            "source": self.source,
        }

    @staticmethod
    def from_record(r: dict[str, Any]) -> TickDemand:
        return TickDemand(
            edge_id=np.frombuffer(r["edge_id"], dtype="<i4").astype(np.int32),
            slot_minute_of_week=np.frombuffer(r["slot_minute_of_week"], dtype="<i8").astype(
                np.int64
            ),
            pickups_per_h=np.frombuffer(r["pickups_per_h"], dtype="<f4")
            .astype(np.float32)
            .reshape(r["shape"]),
            fare_mean=np.frombuffer(r["fare_mean"], dtype="<f4").astype(np.float32),
            trip_duration_s=np.frombuffer(r["trip_duration_s"], dtype="<f4").astype(np.float32),
            cell=np.frombuffer(r["cell"], dtype="<i4").astype(np.int32),
            dropoff=np.frombuffer(r["dropoff"], dtype="<f4")
            .astype(np.float32)
            .reshape(r["dropoff_shape"]),
            source=str(r["source"]),
        )


def tick_demand_from_table(
    table: DemandTable, edge_ids: npt.ArrayLike, minute_of_week: int, horizon_min: int
) -> TickDemand:
    """Statistical TickDemand for ``edge_ids`` over slots covering ``horizon_min`` from now."""
    e = np.asarray(edge_ids, dtype=np.int64)
    if e.size and (e.min() < 0 or e.max() >= table.n_edges):
        raise DemandDataError("edge ids outside the demand table's network")
    start = (minute_of_week // SLOT_MINUTES) * SLOT_MINUTES
    n_slots = (minute_of_week - start + horizon_min) // SLOT_MINUTES + 1
    slots = (start + SLOT_MINUTES * np.arange(n_slots, dtype=np.int64)) % (7 * 1440)
    cells = table.edge_cell[e]
    # np.unique(cells, return_inverse=True) by the cells present (validate(): every cell is
    # one of the grid's): the same sorted cells and local indices, without a sort
    present = np.zeros(table.dropoff.shape[0], dtype=bool)
    present[cells] = True
    uniq = np.flatnonzero(present)
    local_cell = (np.cumsum(present) - 1)[cells]
    full = table.dropoff[uniq]  # (c, n_cells+1)
    inside = full[:, uniq]
    outside = 1.0 - inside.sum(axis=1, keepdims=True)
    dropoff = np.concatenate([inside, np.clip(outside, 0.0, 1.0)], axis=1).astype(np.float32)
    return TickDemand(
        edge_id=e.astype(np.int32),
        slot_minute_of_week=slots,
        pickups_per_h=table.rates(e, slots),
        fare_mean=table.fare_mean[e],
        trip_duration_s=table.trip_duration_s[e],
        cell=local_cell.astype(np.int32),
        dropoff=dropoff,
        source=f"statistical:{table.version}",
    )


def _atomic_write(path: Path, write: Any) -> None:
    """``write(fh)`` into memory, then the bytes to ``path`` atomically (tiles.fileio)."""
    buf = io.BytesIO()
    write(buf)
    atomic_write_bytes(path, buf.getvalue())
