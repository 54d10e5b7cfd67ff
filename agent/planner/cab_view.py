"""One cab's view of a table under the fleet's live snapshot, made whole only when read
(:meth:`agent.planner.fleet.SnapshotReadout.table_for`; the simulator's fleet reads thousands a
tick, each different from the snapshot's shared view on a few links of its own route and
passes). The C read-out (:mod:`agent.planner.walk_c`) reads the overlay as it is."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from agent.planner.core import F64, ValueTable


class CabOverlay:
    """One cab's ``W``, ``P`` and pass ages as :meth:`SnapshotReadout.table_for` gives them:
    the snapshot's shared ``window`` and ``prob``, but on the links :attr:`claim_links` of the
    cab's own route (sorted) :attr:`claim_w` and :attr:`claim_p` (per slot: its own claim
    taken off); and where ``seen`` is given (uint8 per link: another vacant cab is there;
    None: the table's own pass ages ``base_age``, unchanged) the pass age ``min(base_age, s -
    seen_off)`` with ``s`` the seen age ``seen_age`` where ``seen``, else inf, but on
    :attr:`pass_links` (sorted: the cab's own passes and its own link) :attr:`pass_seen`.

    ``buf`` holds, in its first ``n_links`` words, the claimed links then the passes' (``k``
    and ``m`` of them, as int64), then the claimed links' ``W``, their ``P`` slot by slot and
    the passes' seen ages. ``shared``: the addresses of ``P``, ``W``, the rates, ``base_age``
    and ``seen`` as the C walk reads them (set once per snapshot); with them
    :attr:`addresses` gives those of the links and values, and ``k`` and ``m`` (``at``:
    ``buf``'s address, where known); ``base``: the table the view is of."""

    __slots__ = (
        "addresses", "base", "base_age", "buf", "k", "m", "n_links", "prob", "seen", "seen_age",
        "seen_off", "shared", "slots", "window",
    )  # fmt: skip

    def __init__(
        self,
        window: F64,
        prob: F64,
        seen: npt.NDArray[np.uint8] | None,
        seen_age: float,
        seen_off: float,
        base_age: F64 | None,
        buf: F64,
        n_links: int,
        k: int,
        m: int,
        shared: tuple[int | None, ...] | None = None,
        at: int | None = None,
        *,
        base: ValueTable,
    ) -> None:
        self.base = base
        self.window, self.prob, self.base_age = window, prob, base_age
        self.seen, self.seen_age, self.seen_off = seen, seen_age, seen_off
        self.buf, self.n_links, self.k, self.m = buf, n_links, k, m
        self.slots = prob.shape[0]
        self.shared = shared
        self.addresses: tuple[int, int, int, int] | None = None
        if shared is not None:
            at = buf.ctypes.data if at is None else at
            self.addresses = (at, at + 8 * n_links, k, m)

    @property
    def links(self) -> npt.NDArray[np.int64]:
        return self.buf[: self.n_links].view(np.int64)

    @property
    def vals(self) -> F64:
        return self.buf[self.n_links :]

    @property
    def claim_links(self) -> npt.NDArray[np.int64]:
        return self.links[: self.k]

    @property
    def pass_links(self) -> npt.NDArray[np.int64]:
        return self.links[self.k : self.k + self.m]

    @property
    def claim_w(self) -> F64:
        return self.vals[: self.k]

    @property
    def claim_p(self) -> F64:
        k, slots = self.k, self.slots
        return self.vals[k : k + slots * k].reshape(slots, k)

    @property
    def pass_seen(self) -> F64:
        at = self.k * (self.slots + 1)
        return self.vals[at : at + self.m]

    def window_s(self) -> F64:
        if not self.k:
            return self.window
        out = self.window.copy()
        out[self.claim_links] = self.claim_w
        return out

    def pickup_prob(self) -> F64:
        if not self.k:
            return self.prob
        out = self.prob.copy()
        out[:, self.claim_links] = self.claim_p
        return out

    def pass_age_s(self) -> F64 | None:
        if self.seen is None:
            return self.base_age
        # fleet_view's seen ages, then with_fleet's offset and minimum
        seen = np.where(self.seen != 0, self.seen_age, np.inf)
        seen[self.pass_links] = self.pass_seen
        at_start = seen - self.seen_off
        return at_start if self.base_age is None else np.minimum(self.base_age, at_start)


class CabTable(ValueTable):
    """A :class:`ValueTable` whose ``window_s``, ``pickup_prob`` and ``pass_age_s`` are
    :attr:`overlay`'s (:class:`CabOverlay`), made whole the first time they are read (the C
    read-out reads the overlay instead: thousands of cabs a tick, each with a few links of its
    own). Every other field is the table's it was made from."""

    overlay: CabOverlay

    @classmethod
    def of(cls, table: ValueTable, overlay: CabOverlay) -> CabTable:
        out = object.__new__(cls)
        d = out.__dict__
        d.update(table.__dict__)
        for name in _LAZY:
            d.pop(name, None)
        d["overlay"] = overlay
        return out

    @functools.cached_property
    def window_s(self) -> F64:
        return self.overlay.window_s()

    @functools.cached_property
    def pickup_prob(self) -> F64:
        return self.overlay.pickup_prob()

    @functools.cached_property
    def pass_age_s(self) -> F64 | None:
        return self.overlay.pass_age_s()


_LAZY = ("window_s", "pickup_prob", "pass_age_s")
