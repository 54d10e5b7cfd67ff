"""Road graph: OSM import, area tiles in SQLite, graph queries (routing, map matching).

Imports nothing else of nagashi.
"""

from tiles.build import build_tiles
from tiles.conditional import Windows, minute_of_week, parse_conditional
from tiles.errors import NoMatchError, NoRouteError, TilesDataError, TilesError
from tiles.graph import Graph
from tiles.matching import Candidate, Match, MatchConfig, match_fix
from tiles.routing import Route, allowed_mask, edge_cost, edge_path, shortest_path
from tiles.store import ATTRIBUTION, TileStore, open_tiles, resolve_tiles_path, tile_of

__all__ = [
    "ATTRIBUTION",
    "Candidate",
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
    "match_fix",
    "minute_of_week",
    "open_tiles",
    "parse_conditional",
    "resolve_tiles_path",
    "shortest_path",
    "tile_of",
]
