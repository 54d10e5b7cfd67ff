"""Read an OSM extract with pyosmium into a directed, edge-based road graph (untiled).

Ways are split at junctions (nodes shared by two drivable ways), at their ends and at the via
nodes of turn restrictions; each piece becomes one directed edge per allowed direction. Turn
restrictions (``type=restriction``, ``no_*``/``only_*``, via a node) are applied to the
edge-to-edge successor lists. Via-way restrictions cannot be expressed exactly without splitting
states; they are applied conservatively, for every approach to the via way: ``no_*`` bans the
final turn from the via way into the ``to`` way, ``only_*`` makes the ``to`` way the only way on
from the via way at that junction.
Conditional turn restrictions are applied at all times (conservative). Restrictions for other
vehicle classes (``restriction:hgv``, ``restriction:bus``) and those with ``except`` naming
``taxi``/``psv``/``motorcar`` do not bind a taxi and are skipped.

The steps, one module each: :mod:`~tiles._osm.collect` (the pyosmium pass: drivable ways, pier
areas, restriction relations), :mod:`~tiles._osm.edges` (splitting ways into pieces, directed
edges with their flags and piers, geometry and bearings), :mod:`~tiles._osm.conditionals`
(``*:conditional`` tags into no-entry rules and report rows), :mod:`~tiles._osm.turns` (legal
turns after U-turn and restriction rules, complex junctions), and :mod:`~tiles._osm.read`
(:func:`read_osm`, which runs them in order into a :class:`RawGraph`, :mod:`~tiles._osm.graph`).
"""

from __future__ import annotations

from tiles._osm.collect import ProgressFn, RawRestriction, RawWay
from tiles._osm.graph import RawGraph
from tiles._osm.read import read_osm

__all__ = ["ProgressFn", "RawGraph", "RawRestriction", "RawWay", "read_osm"]
