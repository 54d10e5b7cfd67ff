"""Japanese people-flow (MLIT 1 km mesh) and the spatial shaping of transferred demand.

There is no Japanese taxi trip data here. The Shibuya demand is transferred from Manhattan by
road class and local time (``tools/pipeline/transfer.py``): every link of a class gets the same
hails per km, wherever it is. This package brings in real Japanese demand-side evidence to say
*where* in the area that demand falls: MLIT's 全国の人流オープンデータ (people-flow open data),
the average number of people present in each JIS X 0410 1 km mesh, per month of 2019, for
weekdays and holidays, at midday (11-14 h) and at night (1-4 h), measured from mobile phones
(Agoop) and aggregated by MLIT. Licence CC BY 4.0; attribution
「全国の人流オープンデータ」（国土交通省）.

**Mesh codes (JIS X 0410, 地域メッシュコード).** An 8-digit 1 km mesh code ``pq rs t u v w``
(the standard's 第3次地域区画, 基準地域メッシュ) decodes as:

* 1st-level square (第1次地域区画, 40' of latitude x 1 degree of longitude): south edge
  ``pq / 1.5`` degrees north, west edge ``100 + rs`` degrees east;
* 2nd level (第2次地域区画): the first-level square cut 8 x 8, ``t`` the row from the south,
  ``u`` the column from the west (0-7): 5' of latitude x 7'30" of longitude;
* 3rd level (第3次地域区画): the second-level square cut 10 x 10, ``v`` the row, ``w`` the
  column (0-9): 30" of latitude x 45" of longitude, about 0.93 x 1.13 km at Tokyo.

MLIT's figures are in JGD2000/JGD2011 latitude and longitude, which agree with WGS84 (OSM) to
well under a metre: no datum shift is applied.

**Shaping (the choice).** For each day type and 30-minute slot, a link's transferred rate
``r_l`` becomes ``r_l * P_m(l)^exponent * R / sum_l r_l P_m(l)^exponent``, where ``P_m(l)`` is
the people present in the mesh of the link's midpoint and ``R = sum_l r_l`` the area's total in
that slot, which is kept exactly. So hails per km of a road class scale with the people around
the road, and the transfer still sets the area's level, its daily and weekly profile and the
mix between road classes inside a mesh. The people-flow figure used for a slot:

* day type: weekday -> MLIT weekday (``dayflag`` 1); Saturday and Sunday/holiday -> MLIT
  holiday (``dayflag`` 0, which covers Saturdays, Sundays and public holidays);
* time band: slots from 11:00 to 14:00 -> midday (``timezone`` 0); 01:00 to 04:00 -> night
  (``timezone`` 1); every other slot -> the all-day figure (``timezone`` 2), the only measured
  figure for those hours (MLIT publishes no morning or evening band);
* months: the mean over the months read (``ShapeConfig.months``; default every month in the
  files), since the demand table has no month.

A link whose mesh has no figure (outside the files, or a value MLIT omitted because it was under
10) gets the neutral weight, the rate-weighted mean of the area's known weights in that slot, so
its share is left as the transfer gave it; such links are counted in the report, never dropped.

The package: :mod:`models.peopleflow.mesh` (JIS X 0410 mesh codes),
:mod:`models.peopleflow.reader` (MLIT's file format, :class:`PeopleFlow`,
:func:`read_people_flow`) and :mod:`models.peopleflow.shaping` (:class:`ShapeConfig`,
:func:`shape_by_people_flow` and its report).
"""

from __future__ import annotations

from models.peopleflow.mesh import MESH_DEG_LAT, MESH_DEG_LON, mesh1km_box, mesh1km_of
from models.peopleflow.reader import (
    ATTRIBUTION,
    BAND_ALL_DAY,
    BAND_MIDDAY,
    BAND_NAMES,
    BAND_NIGHT,
    COLUMNS,
    DAYFLAG_ALL,
    DAYFLAG_HOLIDAY,
    DAYFLAG_WEEKDAY,
    FORMAT,
    FORMAT_KIND,
    LICENCE,
    MIDDAY_HOURS,
    NIGHT_HOURS,
    PeopleFlow,
    read_people_flow,
)
from models.peopleflow.shaping import (
    DAYFLAG_OF_DAY_TYPE,
    SLOT_BAND,
    ShapeConfig,
    band_of_slot,
    link_people,
    shape_by_people_flow,
    shape_rates,
    shape_weights,
)

__all__ = [
    "ATTRIBUTION",
    "BAND_ALL_DAY",
    "BAND_MIDDAY",
    "BAND_NAMES",
    "BAND_NIGHT",
    "COLUMNS",
    "DAYFLAG_ALL",
    "DAYFLAG_HOLIDAY",
    "DAYFLAG_OF_DAY_TYPE",
    "DAYFLAG_WEEKDAY",
    "FORMAT",
    "FORMAT_KIND",
    "LICENCE",
    "MESH_DEG_LAT",
    "MESH_DEG_LON",
    "MIDDAY_HOURS",
    "NIGHT_HOURS",
    "SLOT_BAND",
    "PeopleFlow",
    "ShapeConfig",
    "band_of_slot",
    "link_people",
    "mesh1km_box",
    "mesh1km_of",
    "read_people_flow",
    "shape_by_people_flow",
    "shape_rates",
    "shape_weights",
]
