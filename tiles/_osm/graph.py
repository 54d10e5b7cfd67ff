"""The imported road graph before tiling (:class:`RawGraph`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tiles.conditional import Area


@dataclass
class RawGraph:
    """A directed road graph in memory, edges in a deterministic order (global ids = index)."""

    node_osm_id: npt.NDArray[np.int64]
    node_lon: npt.NDArray[np.float64]
    node_lat: npt.NDArray[np.float64]
    edge_u: npt.NDArray[np.int32]
    edge_v: npt.NDArray[np.int32]
    edge_way: npt.NDArray[np.int64]
    edge_length_m: npt.NDArray[np.float32]
    edge_speed_kph: npt.NDArray[np.float32]
    edge_highway: npt.NDArray[np.uint8]
    edge_flags: npt.NDArray[np.uint16]
    edge_bearing_start: npt.NDArray[np.float32]
    edge_bearing_end: npt.NDArray[np.float32]
    geom_offsets: npt.NDArray[np.int64]
    geom_lonlat: npt.NDArray[np.float64]
    turn_offsets: npt.NDArray[np.int64]
    turn_to: npt.NDArray[np.int32]
    win_edge: npt.NDArray[np.int32]
    win_start: npt.NDArray[np.int16]
    win_end: npt.NDArray[np.int16]
    ways: dict[int, dict[str, str]]
    restrictions: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    #: one row per ``*:conditional`` tag: way_id, key, value, status, reason
    conditionals: list[dict[str, Any]] = field(default_factory=list)
    #: (edge index, value, closing kind) of every rule of the edges with a date-dependent one
    dated: list[tuple[int, str, str]] = field(default_factory=list)
    area: Area = field(default_factory=Area)

    @property
    def n_edges(self) -> int:
        return int(self.edge_u.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.node_osm_id.shape[0])
