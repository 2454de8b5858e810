"""A real ``shardq serve`` (runner, API and dashboard) on 127.0.0.1, in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from shardq import JobService
from shardq.cli.serve import serve

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """``serve(jobs, ...)`` on its own event loop; ``call`` runs a coroutine on that loop."""

    def __init__(
        self,
        make_jobs: Callable[[], JobService],
        token: str,
        demo_rate: float | None = None,
        *,
        metrics_token: str | None = None,
        extra_hosts: list[str] | None = None,
    ) -> None:
        self._make_jobs = make_jobs
        self.token = token
        self.demo_rate = demo_rate
        self.metrics_token = metrics_token
        self.extra_hosts = extra_hosts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.jobs: JobService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._main, name="shardq-test-server", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.jobs = self._make_jobs()
            await serve(
                self.jobs,
                host="127.0.0.1",
                port=self.port,
                token=self.token,
                demo_rate=self.demo_rate,
                on_ready=self._ready.set,
                stop=self._stop,
                metrics_token=self.metrics_token,
                extra_hosts=self.extra_hosts,
            )

        try:
            asyncio.run(run())
        except BaseException as e:
            self._error.append(e)
        finally:
            self._ready.set()

    def start(self, timeout: float = 30) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"server on {self.url} did not start within {timeout}s")
        if self._error:
            raise RuntimeError(f"server failed to start: {self._error[0]!r}") from self._error[0]
        return self

    def call(self, make: Callable[[JobService], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        """Run ``make(jobs)`` on the server's loop and return its result."""
        assert self._loop is not None and self.jobs is not None
        jobs = self.jobs
        return asyncio.run_coroutine_threadsafe(make(jobs), self._loop).result(timeout)

    def stop(self, timeout: float = 30) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            stop = self._stop
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("server did not stop")
