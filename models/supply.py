"""The supply prior: how many vacant cabs of the own fleet usually pass each link, per slot.

A :class:`SupplyTable` is what the bundle ships for a cab that has no fresh live snapshot of
the fleet (issue 17, "Offline"): for every link the fleet was seen on, the mean number of
*vacant passes per hour* of the fleet's cabs, in each of the 336 half-hour slots of the week
(Monday 00:00 = slot 0; slot ``s`` covers minutes ``[30 s, 30 s + 30)`` of the week, local
wall-clock time of the area, the same convention as :mod:`models.demand`). The planner takes
it as its ``supply_per_h`` instead of an empty road, so that an offline fleet does not herd.

It is measured from the fleet's own trip logs (``nagashi fleet supply``) or, in simulation, from
the reference fleet; ``cabs`` is the fleet size it was measured with, and :meth:`scaled` gives
the rates of a fleet of another size (rates are proportional to the number of cabs).

File format (one compressed ``.npz``, never pickled): ``edge_id`` (int64, sorted, unique),
``passes_per_h`` (float32, (336, n)) and ``meta_json`` (uint8: the UTF-8 JSON of
``schema_version``, ``slot_minutes``, ``cabs`` and ``meta``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.demand import SLOT_MINUTES, SLOTS_PER_DAY
from models.errors import DemandDataError
from tiles.fileio import atomic_write_bytes

SUPPLY_SCHEMA_VERSION = 1
#: half-hour slots of a week
SLOTS_PER_WEEK = 7 * SLOTS_PER_DAY
MINUTES_PER_WEEK = 7 * 1440
_ARRAYS = ("edge_id", "passes_per_h", "meta_json")


@dataclass(frozen=True, eq=False)
class SupplyTable:
    """Mean vacant passes per hour of the own fleet per link and slot of the week (see the
    module docstring)."""

    edge_id: npt.NDArray[np.int64]  # (n,) sorted, unique global edge ids
    slot_minutes: int  # 30
    passes_per_h: npt.NDArray[np.float32]  # (336, n)
    cabs: int  # the fleet size the rates were measured with
    meta: dict[str, Any] = field(default_factory=dict)  # source, days, records, ...

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`DemandDataError` unless the fields are consistent."""
        e = self.edge_id
        if e.ndim != 1 or e.dtype != np.int64:
            raise DemandDataError(f"supply table edge_id is {e.dtype} {e.shape}, not int64 (n,)")
        if e.size and (e[0] < 0 or np.any(np.diff(e) <= 0)):
            raise DemandDataError("supply table edge_id is not sorted, unique and non-negative")
        if self.slot_minutes != SLOT_MINUTES:
            raise DemandDataError(
                f"supply table slot_minutes is {self.slot_minutes}, expected {SLOT_MINUTES}"
            )
        want = (SLOTS_PER_WEEK, e.size)
        p = self.passes_per_h
        if p.shape != want or p.dtype != np.float32:
            raise DemandDataError(
                f"supply table passes_per_h is {p.dtype} {p.shape}, expected float32 {want}"
            )
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            raise DemandDataError("supply table passes_per_h has NaN, infinite or negative values")
        if isinstance(self.cabs, bool) or not isinstance(self.cabs, int) or self.cabs < 1:
            raise DemandDataError(f"supply table cabs is {self.cabs!r}, not a count >= 1")
        if not isinstance(self.meta, dict):
            raise DemandDataError("supply table meta is not a mapping")

    @staticmethod
    def from_passes(
        edge_ids: npt.ArrayLike,
        minute_of_week: npt.ArrayLike,
        *,
        days_per_slot: npt.ArrayLike | float,
        cabs: int,
        meta: dict[str, Any],
    ) -> SupplyTable:
        """The table of observed vacant passes: one entry per pass (the link's global id and the
        minute of week it was entered, local time; minutes past a week wrap). ``days_per_slot``
        is how many days each of the 336 slots was observed (a scalar for all, or 336 values),
        so a slot's rate is its passes / (days x 0.5 h). A slot observed on no day has rate 0
        and must have no pass. ``meta`` is kept; ``records`` (the number of passes) and
        ``days_per_slot`` are added unless given."""
        e = np.asarray(edge_ids)
        m = np.asarray(minute_of_week)
        if e.ndim != 1 or m.ndim != 1 or e.shape != m.shape:
            raise DemandDataError(
                f"supply passes: {e.shape} edge ids against {m.shape} minutes of week"
            )
        if e.size and not np.issubdtype(e.dtype, np.integer):
            raise DemandDataError(f"supply passes: edge ids are {e.dtype}, not integers")
        e = e.astype(np.int64)
        mf = m.astype(np.float64)
        if e.size and e.min() < 0:
            raise DemandDataError("supply passes: negative edge id")
        if not np.all(np.isfinite(mf)):
            raise DemandDataError("supply passes: a minute of week is NaN or infinite")
        days = np.asarray(days_per_slot, dtype=np.float64)
        if days.shape not in ((), (SLOTS_PER_WEEK,)):
            raise DemandDataError(
                f"supply passes: days per slot has shape {days.shape}, not () or (336,)"
            )
        days = np.broadcast_to(days, (SLOTS_PER_WEEK,))
        if not np.all(np.isfinite(days)) or np.any(days < 0):
            raise DemandDataError("supply passes: days per slot must be finite and >= 0")
        slot = _slot_of(mf)
        uniq, col = np.unique(e, return_inverse=True)
        counts = np.zeros((SLOTS_PER_WEEK, uniq.size), dtype=np.float64)
        np.add.at(counts, (slot, col), 1.0)
        unobserved = days == 0
        if np.any(counts[unobserved] > 0):
            bad = int(np.flatnonzero(unobserved & (counts.sum(axis=1) > 0))[0])
            raise DemandDataError(f"supply passes in slot {bad}, which was observed on no day")
        hours = np.where(unobserved, 1.0, days * (SLOT_MINUTES / 60.0))
        rates = (counts / hours[:, None]).astype(np.float32)
        full_meta = dict(meta)
        full_meta.setdefault("records", int(e.size))
        full_meta.setdefault("days_per_slot", [float(d) for d in days])
        return SupplyTable(
            edge_id=uniq.astype(np.int64),
            slot_minutes=SLOT_MINUTES,
            passes_per_h=rates,
            cabs=_cabs(cabs),
            meta=full_meta,
        )

    @property
    def version(self) -> str:
        """``supply-`` and 12 hex digits of the sha256 of the rates, links and fleet size (not
        of ``meta``): the ``fleet_supply.version`` a bundle manifest names for this table."""
        h = hashlib.sha256()
        h.update(f"{SUPPLY_SCHEMA_VERSION}:{self.slot_minutes}:{self.cabs}:".encode())
        h.update(self.edge_id.astype("<i8").tobytes())
        h.update(self.passes_per_h.astype("<f4").tobytes())
        return f"supply-{h.hexdigest()[:12]}"

    def rates(self, edge_ids: npt.ArrayLike, minute_of_week: float) -> npt.NDArray[np.float64]:
        """Vacant passes per hour on ``edge_ids`` in the slot of ``minute_of_week`` (wrapped
        to the week); 0 for links the table does not know."""
        q = np.asarray(edge_ids, dtype=np.int64).reshape(-1)
        if not math.isfinite(minute_of_week):
            raise DemandDataError(f"supply rates at minute of week {minute_of_week!r}")
        slot = int(_slot_of(np.asarray([float(minute_of_week)]))[0])
        out = np.zeros(q.size, dtype=np.float64)
        if self.edge_id.size == 0 or q.size == 0:
            return out
        pos = np.searchsorted(self.edge_id, q)
        pos_ok = np.minimum(pos, self.edge_id.size - 1)
        known = self.edge_id[pos_ok] == q
        out[known] = self.passes_per_h[slot, pos_ok[known]]
        return out

    def scaled(self, cabs: int) -> SupplyTable:
        """The same prior for a fleet of ``cabs`` cabs: rates x cabs / self.cabs."""
        n = _cabs(cabs)
        factor = n / self.cabs
        return SupplyTable(
            edge_id=self.edge_id,
            slot_minutes=self.slot_minutes,
            passes_per_h=(self.passes_per_h.astype(np.float64) * factor).astype(np.float32),
            cabs=n,
            meta={**self.meta, "scaled_from_cabs": self.cabs},
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table to ``path`` (one ``.npz``, atomically)."""
        doc = {
            "schema_version": SUPPLY_SCHEMA_VERSION,
            "slot_minutes": self.slot_minutes,
            "cabs": self.cabs,
            "meta": self.meta,
        }
        meta_bytes = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()
        buf = io.BytesIO()
        # compressed: 1.3 MB instead of 4.6 for a midtown-sized table (3,431 links) whose
        # links all carry passes, for the cab's cellular link; loads in ~70 ms
        np.savez_compressed(
            buf,
            edge_id=self.edge_id.astype("<i8"),
            passes_per_h=self.passes_per_h.astype("<f4"),
            meta_json=np.frombuffer(meta_bytes, dtype=np.uint8),
        )
        return atomic_write_bytes(path, buf.getvalue())

    @staticmethod
    def load(path: str | os.PathLike[str]) -> SupplyTable:
        """Read a table written by :meth:`save`; anything else is a :class:`DemandDataError`
        with a one-line message."""
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                missing = [k for k in _ARRAYS if k not in z.files]
                if missing:
                    raise DemandDataError(f"supply table {p} lacks {', '.join(missing)}")
                arrays = {k: z[k] for k in _ARRAYS}
        except FileNotFoundError as e:
            raise DemandDataError(f"no supply table at {p}") from e
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DemandDataError(f"supply table {p} is not a readable .npz: {reason}") from e
        try:
            doc = json.loads(arrays["meta_json"].astype(np.uint8).tobytes().decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise DemandDataError(f"supply table {p} has unreadable meta: {e}") from e
        if not isinstance(doc, dict):
            raise DemandDataError(f"supply table {p} has meta that is not a mapping")
        if doc.get("schema_version") != SUPPLY_SCHEMA_VERSION:
            raise DemandDataError(
                f"supply table {p} has schema {doc.get('schema_version')!r}, "
                f"expected {SUPPLY_SCHEMA_VERSION}"
            )
        edge_id, passes = arrays["edge_id"], arrays["passes_per_h"]
        if edge_id.dtype != np.dtype("<i8") or passes.dtype != np.dtype("<f4"):
            raise DemandDataError(
                f"supply table {p} has arrays of {edge_id.dtype} and {passes.dtype}, "
                "expected int64 and float32"
            )
        cabs, slot_minutes = doc.get("cabs"), doc.get("slot_minutes")
        if not isinstance(cabs, int) or not isinstance(slot_minutes, int):
            raise DemandDataError(f"supply table {p} lacks an integer cabs or slot_minutes")
        try:
            return SupplyTable(
                edge_id=edge_id.astype(np.int64),
                slot_minutes=slot_minutes,
                passes_per_h=passes.astype(np.float32),
                cabs=cabs,
                meta=doc.get("meta", {}),
            )
        except DemandDataError as e:
            raise DemandDataError(f"{p}: {e}") from e


def _slot_of(minute_of_week: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Slot of the week (0..335) of minutes of week, wrapped to the week."""
    m = np.mod(minute_of_week, MINUTES_PER_WEEK)
    return np.minimum((m // SLOT_MINUTES).astype(np.int64), SLOTS_PER_WEEK - 1)


def _cabs(cabs: int) -> int:
    if isinstance(cabs, bool) or not isinstance(cabs, int | np.integer) or cabs < 1:
        raise DemandDataError(f"a fleet of {cabs!r} cabs: expected a count >= 1")
    return int(cabs)
