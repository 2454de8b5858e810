"""Schedules as values: checks, ticks in a time zone (daylight saving included) and misfires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shardq import JobError
from shardq.schedules import MISFIRE_CAP, MISFIRE_GRACE_MS, ScheduleSpec, make_spec

BERLIN = ZoneInfo("Europe/Berlin")
NOW = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def ms(*parts: int, tz: ZoneInfo = UTC, fold: int = 0) -> int:  # type: ignore[assignment]
    return round(datetime(*parts, tzinfo=tz, fold=fold).timestamp() * 1000)  # type: ignore[misc]


def spec(**options: Any) -> ScheduleSpec:
    options.setdefault("job_type", "t")
    options.setdefault("payload", "{}")
    options.setdefault("now_ms", NOW)
    return make_spec("s", **options)


def utc(tick: int | None) -> str:
    assert tick is not None
    return datetime.fromtimestamp(tick / 1000, tz=UTC).isoformat()


def test_every_ticks_on_multiples_of_its_interval_from_the_epoch() -> None:
    s = spec(every=30)
    assert s.next_tick(NOW) == NOW + 30_000
    assert s.next_tick(NOW + 1) == NOW + 30_000
    assert s.next_tick(NOW - 1) == NOW
    assert spec(every=timedelta(minutes=1)).every_ms == 60_000
    assert spec(every=0.2).next_tick(NOW + 150) == NOW + 200


def test_cron_ticks_on_the_wall_clock_of_its_zone() -> None:
    s = spec(cron="0 8 * * MON", tz="Europe/Berlin")
    # 2026-01-01 is a Thursday; the next Monday 08:00 in Berlin is 07:00 UTC.
    assert utc(s.next_tick(NOW)) == "2026-01-05T07:00:00+00:00"
    tick = ms(2026, 1, 5, 7)
    assert s.next_tick(tick) == ms(2026, 1, 12, 7), "strictly after a tick"
    assert s.next_tick(tick - 1) == tick


def test_a_skipped_0230_fires_once_at_0300_after_the_spring_jump() -> None:
    # Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    s = spec(cron="30 2 * * *", tz="Europe/Berlin")
    day_before = ms(2026, 3, 28, 2, 30, tz=BERLIN)
    ticks = s.ticks(day_before - 1, ms(2026, 3, 31, tz=BERLIN), 10)
    assert [utc(t) for t in ticks] == [
        "2026-03-28T01:30:00+00:00",  # 02:30 CET
        "2026-03-29T01:00:00+00:00",  # 03:00 CEST, the first minute after the gap
        "2026-03-30T00:30:00+00:00",  # 02:30 CEST
    ]


def test_a_repeated_0230_fires_once_in_the_autumn() -> None:
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    s = spec(cron="30 2 * * *", tz="Europe/Berlin")
    first = ms(2026, 10, 25, 2, 30, tz=BERLIN, fold=0)
    second = ms(2026, 10, 25, 2, 30, tz=BERLIN, fold=1)
    assert second - first == 3_600_000
    ticks = s.ticks(first - 1, ms(2026, 10, 27, tz=BERLIN), 10)
    assert [utc(t) for t in ticks] == ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
    # Asked from inside the second pass, the first 02:30 is not answered again.
    assert s.next_tick(second - 600_000) == ms(2026, 10, 26, 2, 30, tz=BERLIN)


def test_an_hourly_expression_fires_in_both_passes_of_a_repeated_hour() -> None:
    s = spec(cron="30 * * * *", tz="Europe/Berlin")
    first = ms(2026, 10, 25, 2, 30, tz=BERLIN, fold=0)
    assert s.ticks(first - 1, first + 3_600_000, 10) == [first, first + 3_600_000]


def test_misfire_all_fires_every_missed_tick_up_to_the_cap() -> None:
    s = spec(every=60, misfire="all")
    plan = s.plan(NOW, NOW + 5 * 60_000 + 10)
    assert plan.fire == [NOW + i * 60_000 for i in range(1, 6)]
    assert plan.through == NOW + 5 * 60_000
    long = s.plan(NOW, NOW + 1000 * 60_000)
    assert len(long.fire) == MISFIRE_CAP
    assert long.fire[-1] == long.through == NOW + 1000 * 60_000


def test_misfire_all_on_a_cron_after_a_long_downtime_keeps_the_latest_ticks() -> None:
    s = spec(cron="* * * * * *", misfire="all")  # every second
    plan = s.plan(NOW, NOW + 86_400_000)
    assert len(plan.fire) == MISFIRE_CAP
    assert plan.fire[-1] == NOW + 86_400_000
    assert plan.fire == sorted(plan.fire)


def test_misfire_latest_fires_one_job_for_the_most_recent_tick() -> None:
    plan = spec(every=60, misfire="latest").plan(NOW, NOW + 5 * 60_000 + 10)
    assert plan.fire == [NOW + 5 * 60_000]
    assert plan.through == NOW + 5 * 60_000


def test_misfire_skip_fires_only_a_tick_within_the_grace() -> None:
    s = spec(every=60, misfire="skip")
    late = s.plan(NOW, NOW + 5 * 60_000 + MISFIRE_GRACE_MS + 1)
    assert (late.fire, late.through) == ([], NOW + 5 * 60_000)
    on_time = s.plan(NOW, NOW + 5 * 60_000 + MISFIRE_GRACE_MS)
    assert on_time.fire == [NOW + 5 * 60_000]


def test_nothing_due_plans_nothing() -> None:
    assert spec(every=60).plan(NOW, NOW + 59_999).fire == []
    assert spec(every=60).plan(NOW, NOW + 59_999).through is None


def test_queue_overlap_gives_the_jobs_a_key_of_the_schedule() -> None:
    assert spec(every=1, overlap="queue").job_key == "schedule:s"
    assert spec(every=1, overlap="queue", key="k").job_key == "k"
    assert spec(every=1).job_key is None
    assert spec(every=1).dedupe_key(5) == "shardq.schedule:s@5"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "* * * *"}, "invalid cron expression"),
        ({"cron": ""}, "cron must be a cron expression"),
        ({"cron": 5}, "cron must be a cron expression"),
        ({"cron": "0 0 30 2 *"}, "invalid cron expression"),
        ({"every": 0}, "every must be more than 0"),
        ({"every": -1}, "every must be more than 0"),
        ({"every": float("nan")}, "every must be more than 0"),
        ({"every": True}, "every must be more than 0"),
        ({"every": 0.0001}, "at least 0.001 seconds"),
        ({"every": timedelta(0)}, "every must be more than 0"),
        ({}, "give a schedule cron= (an expression) or every= (seconds)"),
        ({"cron": "* * * * *", "every": 1}, "not both"),
        ({"every": 1, "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": 1, "tz": "../etc/passwd"}, "unknown time zone"),
        ({"every": 1, "tz": ""}, "tz must be a time zone name"),
        ({"every": 1, "misfire": "sometimes"}, "unknown misfire policy"),
        ({"every": 1, "overlap": "maybe"}, "unknown overlap policy"),
        ({"every": 1, "priority": "urgent"}, "unknown priority"),
        ({"every": 1, "key": ""}, "key must be a non-empty string"),
        ({"every": 1, "job_type": ""}, "job type must be a non-empty string"),
    ],
)
def test_bad_input_says_what_is_wrong(options: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError) as e:
        spec(**options)
    assert e.value.reason == "Validation"
    assert message in str(e.value)


def test_a_bad_name_is_refused() -> None:
    with pytest.raises(JobError, match="schedule name must be a non-empty string"):
        make_spec(" ", job_type="t", every=1, payload="{}", now_ms=NOW)
