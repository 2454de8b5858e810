"""A runner's housekeeping: prune finished jobs past retention, evict idle mailboxes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from ..clock import Clock
from ..config import Config
from ..drivers.base import Driver
from .mailboxes import Mailboxes

log = logging.getLogger("shardq.runner")


class Maintenance:
    """Every ``prune_interval``: delete finished jobs and dead letters past their retention,
    ``prune_batch`` rows per transaction (tables never hold long locks or bloat), then drop
    mailboxes idle for ``max_idle``."""

    def __init__(
        self,
        config: Config,
        driver: Driver,
        clock: Clock,
        mailboxes: Mailboxes,
        handlers: Collection[str] = (),
        runner: str = "",
    ) -> None:
        self._config = config
        self._driver = driver
        self._clock = clock
        self._mailboxes = mailboxes
        self._handlers = handlers
        self._runner = runner

    async def advertise(self) -> None:
        """Record now that this runner has its handlers' job types (see ``handler_grace``)."""
        if self._handlers:
            await self._driver.advertise_handlers(
                list(self._handlers), self._runner, self._clock.now_ms()
            )

    async def advertising(self) -> None:
        """Renew the advertisement four times per ``handler_grace``, until cancelled."""
        while True:
            await self._clock.sleep(self._config.handler_grace / 4)
            try:
                await self.advertise()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("advertising the job types handled failed")

    async def run(self) -> None:
        """Run until cancelled; a failed round is logged and tried again next interval."""
        while True:
            await self._clock.sleep(self._config.prune_interval)
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance failed")

    async def once(self) -> int:
        """One round; returns the rows pruned."""
        cfg = self._config
        now = self._clock.now_ms()
        total = 0
        while True:
            n = await self._driver.prune(
                now - int(cfg.retention * 1000),
                now - int(cfg.dlq_retention * 1000),
                cfg.prune_batch,
            )
            total += n
            if n < cfg.prune_batch:
                break
            await asyncio.sleep(0)
        self._mailboxes.evict_idle(cfg.max_idle)
        return total
