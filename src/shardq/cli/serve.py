"""``shardq serve``: a runner, the HTTP API and the live dashboard in one process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import secrets
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .._internal.tasks import cancel_and_wait
from ..jobs import JobService
from . import database_url
from .worker import add_connect_timeout, start_when_reachable

ENV_TOKEN = "SHARDQ_API_TOKEN"
ENV_METRICS_TOKEN = "SHARDQ_METRICS_TOKEN"
ENV_ALLOWED_HOSTS = "SHARDQ_ALLOWED_HOSTS"
log = logging.getLogger("shardq.serve")


#: The signals that stop a server (after which its service drains).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def register(sub: Any) -> None:
    """Add ``serve`` and the other operator commands of the HTTP package to ``sub``."""
    p = sub.add_parser(
        "serve",
        help="run a runner, the HTTP API and the live dashboard in one process",
        description=(
            "Run jobs (with the handlers of --app, or the demo's with --demo) and serve the"
            " JSON API, /metrics, /healthz, /openapi.json and the dashboard on one port."
            f" Every API request needs 'Authorization: Bearer ${ENV_TOKEN}'; without"
            f" ${ENV_TOKEN} a token is generated for this run and the dashboard link printed"
            f" with it. A non-loopback --host is refused unless ${ENV_TOKEN} is set. Only the"
            " loopback names, the --host name and the --allowed-host names are served."
        ),
        epilog="Try: shardq serve --demo   (then open the printed link)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            "a host name (or address) clients use to reach the server, besides 127.0.0.1,"
            f" localhost, [::1] and --host; repeat for more, or set ${ENV_ALLOWED_HOSTS}"
            " (comma-separated); '*' serves any name"
        ),
    )
    p.add_argument(
        "--metrics-token",
        metavar="TOKEN",
        help=(
            "a second token that /metrics also accepts and nothing else does (for a Prometheus"
            f" scraper); default ${ENV_METRICS_TOKEN}, which keeps it out of the process list"
        ),
    )
    p.add_argument("--app", metavar="MODULE:ATTRIBUTE", help="a JobService with your handlers")
    p.add_argument(
        "--demo",
        action="store_true",
        help="register the demo handlers and keep submitting a mixed demo workload",
    )
    p.add_argument(
        "--demo-rate",
        type=float,
        default=200.0,
        metavar="JOBS_PER_S",
        help="jobs per second the demo submits (default 200)",
    )
    p.add_argument("--concurrency", type=int, default=None, help="handlers run at once")
    p.add_argument(
        "--max-body",
        type=int,
        default=2 * 1024 * 1024,
        metavar="BYTES",
        help="largest request body accepted (default 2 MiB)",
    )
    add_connect_timeout(p)
    p.set_defaults(run=run_serve)

    from . import ops

    ops.register(sub)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the API beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to bind {host} without ${ENV_TOKEN}: anyone who can reach it could"
            f" submit, cancel and replay jobs. Set ${ENV_TOKEN}, or bind 127.0.0.1."
        )


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The host names ``serve`` answers to: loopback names, the bound address unless it is
    a wildcard, ``extra`` and the comma-separated names of $SHARDQ_ALLOWED_HOSTS."""
    from ..http.security import LOOPBACK_HOSTS, normalize_host

    names = list(LOOPBACK_HOSTS)
    if host not in ("0.0.0.0", "::", "[::]", ""):
        names.append(host)
    env = os.environ.get(ENV_ALLOWED_HOSTS, "")
    names += extra + [n for n in env.split(",") if n.strip()]
    out: list[str] = []
    for name in names:
        try:
            out.append(normalize_host(name))
        except ValueError as e:
            raise ValueError(
                f"--allowed-host: {e} (give a name such as jobs.example.com)"
            ) from None
    return list(dict.fromkeys(out))


def build_jobs(args: argparse.Namespace) -> JobService:
    """The JobService of ``serve``: the user's (--app), the demo's (--demo) or a bare one."""
    concurrency: int | None = args.concurrency
    if args.app and args.demo:
        raise ValueError("--app and --demo cannot be combined")
    if args.app:
        from .worker import load_app

        jobs = load_app(args.app)
        changes: dict[str, Any] = {}
        if args.database_url:
            changes["database_url"] = args.database_url
        if concurrency is not None:
            changes["concurrency"] = concurrency
        if changes:
            jobs.config = jobs.config.with_(**changes)
        if not jobs.runs_jobs:
            raise ValueError(f"{args.app} was made with runner=False; serve runs jobs")
        return jobs
    url = database_url(args)
    if args.demo:
        return build_demo_service(url, concurrency or 64)
    settings: dict[str, Any] = {"concurrency": concurrency} if concurrency is not None else {}
    return JobService(url, **settings)


def build_demo_service(url: str, concurrency: int) -> JobService:
    """The demo's handlers, plus a slow ``video.transcode`` so there is something to cancel."""
    from .demo import Recorder, build_service

    rng = random.Random()
    rec = Recorder()
    jobs = build_service(url, concurrency, rec, rng)

    def forget(job_id: str, status: str) -> None:
        # The demo's recorder keeps per-job notes for its summary; a server runs for long.
        if len(rec.first_start) > 10_000:
            rec.first_start.clear()
            rec.submitted_at.clear()
            rec.account_order.clear()

    jobs.add_listener(forget)

    @jobs.handler("video.transcode")
    async def transcode(p: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(p.get("seconds", 2.0))
        return {"frames": p.get("frames", 0)}

    return jobs


async def feed_demo(jobs: JobService, rate: float, *, seed: int | None = None) -> None:
    """Submit the demo workload at about ``rate`` jobs per second, until cancelled."""
    from ..models import JobPayload
    from .demo import workload

    rng = random.Random(seed)
    interval = 0.25
    carry = 0.0
    while True:
        carry += rate * interval
        n, carry = int(carry), carry - int(carry)
        if n:
            specs = workload(n, 50, rng)
            if rng.random() < 0.3:
                specs.append(
                    JobPayload(
                        "video.transcode",
                        {"seconds": round(rng.uniform(1, 6), 2), "frames": rng.randrange(10**5)},
                        priority="low",
                        duration="long",
                    )
                )
            await jobs.submit_many(specs)
        await asyncio.sleep(interval)


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, calling back once it listens."""

        def __init__(
            self,
            config: uvicorn.Config,
            on_ready: Callable[[], None] | None,
            before_shutdown: Callable[[], Awaitable[None]],
        ) -> None:
            super().__init__(config)
            self._on_ready = on_ready
            self._before_shutdown = before_shutdown

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and self._on_ready is not None:
                self._on_ready()

        async def shutdown(self, sockets: Any = None) -> None:
            # End the dashboards' event streams first, so connections close at once.
            await self._before_shutdown()
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """SIGTERM and SIGINT end the server (a second SIGINT at once); unlike
            uvicorn's own, the signal is not raised again afterwards, so the service
            behind the server still drains and the process exits 0."""
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self._exit) for sig in _STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def _exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    return Server


async def serve(
    jobs: JobService,
    *,
    host: str,
    port: int,
    token: str | None,
    max_body: int = 2 * 1024 * 1024,
    demo_rate: float | None = None,
    on_ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    metrics_token: str | None = None,
    extra_hosts: list[str] | None = None,
    connect_timeout: float = 0.0,
) -> None:
    """Run ``jobs`` and serve its API and dashboard until SIGINT/SIGTERM (or ``stop``).

    The JobService is started here (waiting up to ``connect_timeout`` seconds for a
    database that is starting or not reachable yet) and stopped on the way out. The server
    answers to the host names of :func:`allowed_hosts` (``extra_hosts`` added).
    """
    import uvicorn

    from ..http import LiveFeed, create_app

    check_bind(host, token)
    hosts = allowed_hosts(host, extra_hosts or [])
    _Server = _server_class()
    waiting = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = []
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # Until the server runs (it then handles them), a signal ends the wait at once.
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, waiting.set)
            signals.append(sig)
    try:
        started = await start_when_reachable(jobs, waiting, connect_timeout, log)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if not started:
        log.info("stopped before the database could be reached")
        return
    try:
        feed = LiveFeed(jobs)
        app = create_app(
            jobs,
            token,
            max_body=max_body,
            feed=feed,
            metrics_token=metrics_token,
            allowed_hosts=hosts,
        )
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
        server = _Server(config, on_ready, feed.close)
        tasks: list[asyncio.Task[Any]] = []
        if demo_rate:
            tasks.append(asyncio.create_task(feed_demo(jobs, demo_rate), name="shardq-demo"))
        if stop is not None:

            async def watch(stop: asyncio.Event) -> None:
                await stop.wait()
                server.should_exit = True

            tasks.append(asyncio.create_task(watch(stop), name="shardq-serve-stop"))
        try:
            await server.serve()
        finally:
            for t in tasks:
                await cancel_and_wait(t)
    finally:
        await jobs.stop()


async def run_serve(args: argparse.Namespace) -> int:
    """The ``serve`` command."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    token = os.environ.get(ENV_TOKEN) or None
    check_bind(args.host, token)
    hosts = allowed_hosts(args.host, args.allowed_host)
    from ..http.security import LOOPBACK_HOSTS

    if args.host in ("0.0.0.0", "::") and len(hosts) == len(LOOPBACK_HOSTS):
        log.warning(
            "bound to every address but only loopback names are served: name the host clients"
            " use with --allowed-host (or $%s)",
            ENV_ALLOWED_HOSTS,
        )
    if not 1 <= args.port <= 65535:
        raise ValueError("--port must be within 1..65535")
    if args.demo_rate < 0:
        raise ValueError("--demo-rate must not be negative")
    generated = token is None
    if token is None:
        token = secrets.token_urlsafe(24)
    jobs = build_jobs(args)
    if not jobs.handlers:
        log.warning("no handlers registered (use --app module:attr or --demo)")
    shown = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{shown}:{args.port}/"

    def ready() -> None:
        link = f"{base}#token={token}" if generated else base
        print(f"shardq: dashboard at {link}", file=sys.stderr)
        print(
            f"shardq: API at {base}api/ (spec {base}openapi.json), metrics at {base}metrics",
            file=sys.stderr,
        )
        if generated:
            print(
                f"shardq: ${ENV_TOKEN} is not set; the API needs this run's token: {token}",
                file=sys.stderr,
            )
        if args.demo:
            print(
                f"shardq: feeding the demo workload at ~{args.demo_rate:g} jobs/s", file=sys.stderr
            )
        sys.stderr.flush()

    await serve(
        jobs,
        host=args.host,
        port=args.port,
        token=token,
        max_body=args.max_body,
        demo_rate=args.demo_rate if args.demo else None,
        on_ready=ready,
        metrics_token=args.metrics_token or os.environ.get(ENV_METRICS_TOKEN) or None,
        extra_hosts=args.allowed_host,
        connect_timeout=args.connect_timeout,
    )
    return 0
