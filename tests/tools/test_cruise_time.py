"""``nagashi cruise --time``: a time with an offset is converted to the area's local time, and a
local time that daylight saving makes ambiguous or skips is refused with one line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tools.cli import main
from tools.cmd_cruise import local_time
from tools.errors import ToolsError

NY = "America/New_York"


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("2015-06-02T22:30:00Z", "2015-06-02T18:30:00"),  # the demo prints UTC times
        ("2015-06-02T22:30:00+00:00", "2015-06-02T18:30:00"),
        ("2015-06-03T07:30:00+09:00", "2015-06-02T18:30:00"),
        ("2015-06-02T18:30", "2015-06-02T18:30:00"),  # local: as given
        ("2015-11-01T05:30Z", "2015-11-01T01:30:00"),  # the repeated hour, made definite
    ],
)
def test_times_are_read_as_the_area_local_time(text: str, local: str) -> None:
    assert local_time(text, NY) == dt.datetime.fromisoformat(local)


@pytest.mark.parametrize(
    ("text", "zone", "fragment"),
    [
        ("2015-11-01T01:30", NY, "ambiguous"),  # EDT ends: 01:30 happens twice
        ("2015-03-08T02:30", NY, "does not exist"),  # EST ends: 02:00-03:00 skipped
        ("2015-06-02T22:30Z", None, "time zone is unknown"),
        ("2015-06-02T18:30", "Mars/Olympus", "unknown time zone"),
        ("6pm", NY, "ISO 8601"),
    ],
)
def test_times_that_name_no_single_instant_are_refused(
    text: str, zone: str | None, fragment: str
) -> None:
    with pytest.raises(ToolsError, match=fragment):
        local_time(text, zone)


def test_cruise_reads_a_utc_time_as_the_same_instant(
    manhattan_tiles: Path, manhattan_demand: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cruise", "--bundle-or-tiles", str(manhattan_tiles), "--demand", str(manhattan_demand)]
    argv += ["--at", "-73.98551,40.75800", "--heading", "200", "--timezone", NY, "--json"]
    assert main([*argv, "--time", "2015-06-02T18:30"]) == 0
    local = capsys.readouterr().out
    assert main([*argv, "--time", "2015-06-02T22:30:00Z"]) == 0
    assert capsys.readouterr().out == local  # 22:30 UTC is 18:30 in New York
    assert main([*argv, "--time", "2015-06-02T22:30"]) == 0
    assert capsys.readouterr().out != local  # 22:30 local is another slot
    assert main([*argv, "--time", "2015-11-01T01:30"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ambiguous" in err and "\n" not in err
