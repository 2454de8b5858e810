"""A private PostgreSQL server that a test or a fault run starts, restarts and stops at will.

The shared server on port 5432 must never be restarted (other tests use it); faults that take
the whole server down run against one of these instead. It lives in a temporary directory,
listens on loopback only, on a free port, and is gone after ``stop(remove=True)``.

PostgreSQL refuses to run as root, so when this process is root the server runs as the
``postgres`` system user (which the Debian packages create).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    raise FileNotFoundError(f"{name} not found: install PostgreSQL's server binaries")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """One throw-away PostgreSQL cluster on 127.0.0.1."""

    def __init__(self, base: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="shardq-pg-", dir=base))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(
            [_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nfsync = on\n"
                "max_connections = 200\n"
            )

    def url(self, database: str = "postgres") -> str:
        """The connection URL of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, wait: bool = True) -> None:
        """Start the server; with ``wait``, return once it accepts connections."""
        self._run(
            [
                _bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w" if wait else "-W",
                "start",
            ]
        )

    def stop(self, mode: str = "fast", remove: bool = False) -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint, recovery on start)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, mode: str = "fast") -> None:
        """Stop the server in ``mode`` and start it again."""
        self.stop(mode)
        self.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once the server accepts connections (raise after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            ok = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ok.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {self.port} not ready after {timeout}s")
            time.sleep(0.05)

    def _run(self, argv: list[str]) -> None:
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
