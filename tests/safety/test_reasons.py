"""Reason codes are stable strings, each belongs to a stage, and each is exercised by a test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safety import CHECKING_POSITION, FOLLOW_THE_ROAD, Family, Reason, fallback_message
from safety.reasons import normalise_locale


def test_codes_are_their_names() -> None:
    for r in Reason:
        assert r.value == r.name
        assert re.fullmatch(r"[A-Z][A-Z_]+", r.value)
        assert isinstance(r.family, Family)
    assert Reason("GPS_STALE") is Reason.GPS_STALE
    assert Reason.ROUTE_LOOP.family is Family.ROUTE
    assert Reason.HARD_TO_JUDGE_ROAD.family is Family.ROAD
    assert Reason.INTERNAL_ERROR.family is Family.INTERNAL


def test_every_code_is_exercised_by_a_test() -> None:
    here = Path(__file__).parent
    text = "\n".join(p.read_text() for p in here.glob("test_*.py") if p.name != Path(__file__).name)
    missing = [
        r.value for r in Reason if f"Reason.{r.value}" not in text and f'"{r.value}"' not in text
    ]
    assert missing == []


@pytest.mark.parametrize(
    "locale,expected",
    [
        ("ja", "ja"),
        ("ja_JP.UTF-8", "ja"),
        ("JA-jp", "ja"),
        ("en_US", "en"),
        ("fr", "en"),
        (None, "en"),
        (3, "en"),
    ],
)
def test_locale(locale: object, expected: str) -> None:
    assert normalise_locale(locale) == expected


def test_messages_are_calm_and_short() -> None:
    assert FOLLOW_THE_ROAD["ja"] == "みちなりに走行してください"
    for table in (FOLLOW_THE_ROAD, CHECKING_POSITION):
        for text in table.values():
            assert "!" not in text and "！" not in text and len(text) <= 60
    assert fallback_message([Reason.BUNDLE_EXPIRED], "ja") == FOLLOW_THE_ROAD["ja"]
    assert fallback_message([Reason.ROUTE_LOOP, Reason.GPS_JUMP], "en") == CHECKING_POSITION["en"]
