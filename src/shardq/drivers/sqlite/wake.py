"""Wake-ups between processes on one machine: a Unix datagram socket beside the database.

The runner binds the socket and holds an exclusive lock file, so there is one runner per
database file. Any other process that commits work sends a small datagram; when no runner is
up the send fails quietly and the work waits in the database for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import secrets
import socket
import tempfile
from collections.abc import Callable, Iterable

from ...errors import RunnerLockedError

#: Longest path a Unix socket address may have on Linux, minus the terminating NUL.
_MAX_SOCKET_PATH = 107
#: Ids per datagram; larger announcements are sent as "rescan".
_MAX_IDS = 200


def socket_path(db_path: str) -> str:
    """Where the runner of ``db_path`` listens: beside the file, or in the temp dir when that
    path is too long for a socket address."""
    real = os.path.realpath(db_path)
    beside = real + ".wake"
    if len(beside) <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(real.encode()).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"shardq-{digest}.wake")


class RunnerLock:
    """An exclusive, process-wide lock on a database file, released when the process dies."""

    def __init__(self, db_path: str) -> None:
        self.path = os.path.realpath(db_path) + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise RunnerLockedError at once."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunnerLockedError(
                f"another runner already holds {self.path}; run one runner per database file "
                "(other processes can submit with JobService(url, runner=False))"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def held_elsewhere(self) -> bool:
        """True when some other process holds the lock right now."""
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def encode(kind: str, ids: Iterable[int]) -> list[bytes]:
    """Datagrams announcing ``kind`` for ``ids``."""
    ids = list(ids)
    if kind == "submitted" and len(ids) > _MAX_IDS:
        return [b"rescan"]
    if not ids:
        return [kind.encode()]
    out = []
    for i in range(0, len(ids), _MAX_IDS):
        out.append(f"{kind} {','.join(map(str, ids[i : i + _MAX_IDS]))}".encode())
    return out


def decode(data: bytes) -> tuple[str, list[int], str] | None:
    """The (kind, ids, path) of a datagram, or None if it is not one of ours.

    ``path`` is set only for "watch" datagrams, whose sender wants to hear of finished jobs.
    """
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    kind, _, rest = text.partition(" ")
    if kind == "watch":
        return (kind, [], rest) if rest else None
    if kind not in ("submitted", "cancel", "rescan", "finished", "schedules", "controls"):
        return None
    try:
        ids = [int(x) for x in rest.split(",")] if rest else []
    except ValueError:
        return None
    return kind, ids, ""


def watcher_path(db_path: str) -> str:
    """A socket path, unique to this process, on which it hears of finished jobs."""
    suffix = f".{os.getpid()}.{secrets.token_hex(4)}"
    path = socket_path(db_path) + suffix
    if len(path) <= _MAX_SOCKET_PATH:
        return path
    return os.path.join(tempfile.gettempdir(), f"shardq-w{suffix}")


class Announcer:
    """Sends datagrams to the runner of one database (or to a watcher); never blocks long,
    never raises."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # A full receive queue blocks a Unix datagram sender; wait briefly rather than drop.
        self._sock.settimeout(0.5)

    def send(self, kind: str, ids: Iterable[int], to: str | None = None) -> bool:
        """Announce to the runner (or to ``to``); False when nobody listens there (the work
        then waits in the database)."""
        target = to or self.path
        try:
            for datagram in encode(kind, ids):
                self._sock.sendto(datagram, target)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            if to is None:
                # Timed out or the queue is full: ask for a full rescan so nothing is missed.
                with contextlib.suppress(OSError):
                    self._sock.sendto(b"rescan", target)
            return False
        return True

    def watch(self, own_path: str) -> bool:
        """Ask the runner to announce finished jobs to ``own_path``."""
        try:
            self._sock.sendto(f"watch {own_path}".encode(), self.path)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_message: Callable[[str, list[int], str], None]) -> None:
        self._on_message = on_message

    def datagram_received(self, data: bytes, addr: object) -> None:
        msg = decode(data)
        if msg is not None:
            self._on_message(*msg)


class Listener:
    """The runner's end: receives wake-ups and hands them to a callback on the loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, on_message: Callable[[str, list[int], str], None]) -> None:
        """Bind the socket (replacing a stale one left by a dead runner) and listen."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(on_message), sock=sock)
        self._transport = transport

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
