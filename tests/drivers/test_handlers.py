"""Advertised handlers: which job types some runner has had a handler for, and when."""

from __future__ import annotations

from shardq.drivers import Driver


async def test_an_advertisement_answers_for_its_time_and_is_renewed(driver: Driver) -> None:
    assert not await driver.handled_since("email", 0)
    await driver.advertise_handlers(["email", "sms"], "r1", 5000)
    assert await driver.handled_since("email", 5000)
    assert not await driver.handled_since("email", 5001)
    assert not await driver.handled_since("push", 0)
    # Another runner (or the same, later) renews it.
    await driver.advertise_handlers(["email"], "r2", 9000)
    assert await driver.handled_since("email", 9000)
    assert not await driver.handled_since("sms", 9000)
    await driver.advertise_handlers([], "r3", 9500)
