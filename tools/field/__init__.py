"""The field-trial engineer's tools, on top of the agent: ``replay`` (a logged decision
recomputed byte for byte), ``export`` (GeoJSON, offline HTML), ``trial`` (the trial report),
``shifts`` (a log split into driving shifts), ``logs_pull`` (a cab's logs from the fleet server),
``demo`` (the one-command demo bundle and drive), ``logpaths`` (an agent's data folder
stands for its ``trips/`` folder), ``supply`` (the fleet's usual vacant passes per link and slot,
from its trip logs). The ``nagashi`` commands call them."""
