"""Helpers shared by the agent tests (real tiles, real routes)."""

from __future__ import annotations

from agent.api import AgentState
from agent.instruction import Instruction, build_instruction
from tiles import TileStore, match_fix, shortest_path

TIMES_SQUARE = (-73.98553, 40.75796)
MADISON_42ND = (-73.97960, 40.75290)


def route_instruction(
    store: TileStore, ok: bool = True, locale: str = "en", message: str = ""
) -> Instruction:
    g = store.all()
    r = shortest_path(store, TIMES_SQUARE, MADISON_42ND)
    m = match_fix(g, *TIMES_SQUARE)
    names = store.way_names(int(w) for w in g.way_id)
    return build_instruction(
        g,
        ok=ok,
        route=r.edges if ok else (),
        continuation=() if ok else r.edges[:3],
        message=message,
        reason_codes=() if ok else ("GPS_STALE",),
        locale=locale,
        time_s=1433284200.0,
        position=(m.best.lon, m.best.lat),
        heading_deg=200.0,
        fraction=m.best.fraction,
        names=names,
    )


def state_with(store: TileStore, instruction: Instruction) -> AgentState:
    state = AgentState(locale=instruction.locale, store=store, bundle={"hash": "test"})
    state.publish(instruction)
    return state
