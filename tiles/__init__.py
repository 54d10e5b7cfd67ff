"""Road graph: OSM import, area tiles in SQLite, graph queries (routing, map matching).

Imports nothing else of nagashi. The names below are imported on first use, so that a light
module (``tiles.fileio``, ``tiles.tags``) does not load the graph code, scipy or pyosmium.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tiles._lazy import lazy_attribute

if TYPE_CHECKING:  # the types, for mypy and editors; at run time see __getattr__
    from tiles.build import build_tiles
    from tiles.conditional import Area, Windows, minute_of_week, parse_conditional
    from tiles.errors import NoMatchError, NoRouteError, TilesDataError, TilesError
    from tiles.graph import Graph
    from tiles.matching import Candidate, Match, MatchConfig, match_fix
    from tiles.routing import (
        EdgeRouter,
        Route,
        allowed_mask,
        edge_cost,
        edge_path,
        router,
        routing_backend,
        shortest_path,
    )
    from tiles.store import ATTRIBUTION, TileStore, open_tiles, resolve_tiles_path, tile_of
    from tiles.traps import escape_links, trapped_links

_LAZY: dict[str, str] = {
    "ATTRIBUTION": "tiles.store",
    "Area": "tiles.conditional",
    "Candidate": "tiles.matching",
    "EdgeRouter": "tiles.routing",
    "Graph": "tiles.graph",
    "Match": "tiles.matching",
    "MatchConfig": "tiles.matching",
    "NoMatchError": "tiles.errors",
    "NoRouteError": "tiles.errors",
    "Route": "tiles.routing",
    "TileStore": "tiles.store",
    "TilesDataError": "tiles.errors",
    "TilesError": "tiles.errors",
    "Windows": "tiles.conditional",
    "allowed_mask": "tiles.routing",
    "build_tiles": "tiles.build",
    "edge_cost": "tiles.routing",
    "edge_path": "tiles.routing",
    "escape_links": "tiles.traps",
    "match_fix": "tiles.matching",
    "minute_of_week": "tiles.conditional",
    "open_tiles": "tiles.store",
    "parse_conditional": "tiles.conditional",
    "resolve_tiles_path": "tiles.store",
    "router": "tiles.routing",
    "routing_backend": "tiles.routing",
    "shortest_path": "tiles.routing",
    "tile_of": "tiles.store",
    "trapped_links": "tiles.traps",
}

__all__ = [
    "ATTRIBUTION",
    "Area",
    "Candidate",
    "EdgeRouter",
    "Graph",
    "Match",
    "MatchConfig",
    "NoMatchError",
    "NoRouteError",
    "Route",
    "TileStore",
    "TilesDataError",
    "TilesError",
    "Windows",
    "allowed_mask",
    "build_tiles",
    "edge_cost",
    "edge_path",
    "escape_links",
    "match_fix",
    "minute_of_week",
    "open_tiles",
    "parse_conditional",
    "resolve_tiles_path",
    "router",
    "routing_backend",
    "shortest_path",
    "tile_of",
    "trapped_links",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
