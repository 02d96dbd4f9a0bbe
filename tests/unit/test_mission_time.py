"""The mission clock's one family of writers and readers: GET from seconds and from a UTC
nanosecond time, UTC, GMT as NASA wrote it, Moscow time, durations."""

from __future__ import annotations

import pytest

from groundstation.core.mission_time import (
    LIFTOFF_NS,
    NS,
    format_duration,
    format_get,
    format_get_ns,
    format_gmt_ns,
    format_msk_ns,
    format_utc,
    format_utc_ns,
    get_to_utc_ns,
    parse_duration,
    parse_get,
    parse_time_ns,
    utc_ns_to_get,
)

DOCKING_GET = 44 * 3600 + 19 * 60 + 8.0  # 044:19:08, 1975-07-17 16:09:09 UTC
DOCKING_NS = get_to_utc_ns(DOCKING_GET)


def test_the_epoch_is_the_apollo_liftoff() -> None:
    assert format_utc_ns(LIFTOFF_NS) == "1975-07-15T19:50:01Z"
    assert format_get_ns(LIFTOFF_NS) == format_get(0.0) == "000:00:00"
    assert utc_ns_to_get(DOCKING_NS) == DOCKING_GET


def test_get_from_seconds_and_from_a_utc_time_write_alike() -> None:
    assert format_get(DOCKING_GET) == format_get_ns(DOCKING_NS) == "044:19:08"
    assert format_get(DOCKING_GET + 0.25, "ms") == format_get_ns(DOCKING_NS + NS // 4, "ms") \
        == "044:19:08.250"
    assert format_get(DOCKING_GET, "m") == "044:19"
    # Before liftoff: a minus sign, and the clock truncates towards zero.
    assert format_get(-(7 * 3600 + 30 * 60 + 1.9)) == "-007:30:01"
    assert format_get_ns(LIFTOFF_NS - 90 * NS) == "-000:01:30"


def test_utc_gmt_and_moscow_time() -> None:
    assert format_utc(DOCKING_GET) == format_utc_ns(DOCKING_NS) == "1975-07-17T16:09:09Z"
    assert format_utc_ns(DOCKING_NS + 250_000_000, "ms") == "1975-07-17T16:09:09.250Z"
    assert format_utc_ns(DOCKING_NS, "m") == "1975-07-17T16:09Z"
    assert format_gmt_ns(DOCKING_NS) == "198:16:09:09"  # 17 July is day 198
    # Moscow was UTC+3 in 1975, and the date turns at Moscow's midnight, not Greenwich's.
    assert format_msk_ns(DOCKING_NS) == "17.07.1975 19:09:09"
    assert format_msk_ns(DOCKING_NS, with_date=False) == "19:09:09"
    assert format_msk_ns(parse_time_ns("1975-07-17T22:30:00Z")) == "18.07.1975 01:30:00"


@pytest.mark.parametrize("text", ["044:19:08", "GET 044:19:08", "get044:19:08", "44:19:08",
                                  " 044:19:08 ", "+044:19:08"])
def test_one_get_grammar(text: str) -> None:
    assert parse_get(text) == DOCKING_GET
    assert parse_time_ns(text) == DOCKING_NS


def test_reading_times() -> None:
    assert parse_get("-007:30:01") == -(7 * 3600 + 30 * 60 + 1)
    assert parse_get("044:19") == DOCKING_GET - 8
    # Fractions of a second are read exactly, to the nanosecond.
    assert parse_time_ns("044:19:08.123456789") == DOCKING_NS + 123_456_789
    assert parse_time_ns("1975-07-17T16:09:09Z") == DOCKING_NS
    assert parse_time_ns("1975-07-17T19:09:09+03:00") == DOCKING_NS
    assert parse_time_ns(str(DOCKING_NS)) == DOCKING_NS == parse_time_ns(DOCKING_NS)
    for bad in ("044:61:00", "GET 1:2:75"):
        with pytest.raises(ValueError, match="below 60"):
            parse_time_ns(bad)
    with pytest.raises(ValueError, match="not a GET"):
        parse_get("1975-07-17")
    with pytest.raises(ValueError, match="cannot read the time"):
        parse_time_ns("yesterday")


@pytest.mark.parametrize(("seconds", "text"), [(12.5, "12.5 s"), (245.0, "4m05s"),
                                               (3723.0, "1h02m03s")])
def test_durations_read_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
