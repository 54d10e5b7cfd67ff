"""The state the runtime publishes into and the local API reads (:class:`AgentState`).

It needs no web framework: the runtime creates and fills it before the API server (starlette,
uvicorn: :mod:`agent.api.app`, :mod:`agent.api.server`) is imported, so the first instruction
does not wait for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.api.openapi import API_SCHEMA_VERSION
from agent.instruction import Instruction, waiting

if TYPE_CHECKING:
    from tiles import TileStore

__all__ = ["AgentState"]


@dataclass
class AgentState:
    """What the runtime publishes and the API reads; every access goes through the lock."""

    locale: str = "en"
    instruction: Instruction = field(default_factory=lambda: waiting(0.0, "en"))
    bundle: dict[str, Any] = field(default_factory=dict)
    store: TileStore | None = None
    status_providers: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    on_meter: Callable[[bool], None] | None = None
    ticks: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self, instruction: Instruction, *, tick: bool = True) -> None:
        """Show ``instruction``; ``tick=False`` for a position update between planning ticks."""
        with self.lock:
            self.instruction = instruction
            if tick:
                self.ticks += 1

    def snapshot(self) -> tuple[Instruction, dict[str, Any], TileStore | None, int]:
        with self.lock:
            return self.instruction, dict(self.bundle), self.store, self.ticks

    def status(self) -> dict[str, Any]:
        instruction, bundle, _, ticks = self.snapshot()
        out: dict[str, Any] = {
            "schema_version": API_SCHEMA_VERSION,
            "bundle": bundle,
            "ticks": ticks,
            "instruction_kind": instruction.kind,
            "last_error": self.last_error,
        }
        for name, provider in list(self.status_providers.items()):
            try:
                out[name] = provider()
            except Exception as e:  # a status page must not fail because one part did
                out[name] = {"error": f"{type(e).__name__}: {e}"}
        return out

    def health(self) -> dict[str, Any]:
        _instruction, bundle, store, ticks = self.snapshot()
        checks = {
            "bundle_loaded": bool(bundle) and store is not None,
            "ticking": ticks > 0,
        }
        status = "ok" if all(checks.values()) else ("starting" if ticks == 0 else "degraded")
        return {"schema_version": API_SCHEMA_VERSION, "status": status, "checks": checks}
