"""Demand/supply simulator of street-hail cruising (``nagashi simulate``).

``world`` (graph, rates, seeded passengers, calibration), ``policies`` (random, hotspot,
greedy, nagashi), ``engine`` (the event loop of one shift), ``experiment`` (seeds, confidence
intervals, the release gate; laid out in ``calibration``, ``runs`` and ``summary``) and ``plot``
(one shift's routes). The core is pure and seeded: the same inputs and seeds give the same
numbers.
"""
