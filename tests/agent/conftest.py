"""Agent test fixtures: the Manhattan bundle built from the real data (once per session)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DRIVE_CSV = Path(__file__).resolve().parent.parent / "data" / "midtown_drive.csv"


@pytest.fixture(scope="session")
def manhattan_bundle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A real bundle (tiles, TLC demand, params, area) built by the demo's builder."""
    from agent.demo import build_manhattan_bundle

    return build_manhattan_bundle(shared_data, tmp_path_factory.mktemp("bundle-work"))


@pytest.fixture(scope="session")
def drive_run(manhattan_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole recorded drive through the agent, paced on a manual clock (no waiting), with
    the meter switched on at the 60th tick and off at the 150th."""
    from agent.api import AgentState
    from agent.clock import ManualClock
    from agent.gps import TraceReplay, read_csv_trace
    from agent.instruction import Instruction
    from agent.runtime import Agent, AgentConfig
    from agent.triplog import read_records

    data = tmp_path_factory.mktemp("agent-data")
    clock = ManualClock()
    source = TraceReplay(read_csv_trace(DRIVE_CSV), clock, speed=1.0)
    state = AgentState()
    shown: list[Instruction] = []
    agent: Agent

    def on_instruction(ins: Instruction) -> None:
        shown.append(ins)
        if len(shown) in (60, 150):
            agent.meter(len(shown) == 60)

    agent = Agent(
        AgentConfig(bundle_dir=manhattan_bundle, data_dir=data),
        source,
        clock,
        state,
        on_instruction=on_instruction,
    )
    summary = agent.run()
    return {
        "data": data,
        "summary": summary,
        "shown": shown,
        "state": state,
        "records": list(read_records(data / "trips")),
    }
