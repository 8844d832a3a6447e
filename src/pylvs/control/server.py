"""The daemon's side of the control socket: a Unix stream socket serving ``IPVSBackend`` calls.

What this is for: letting ``pylvsadm`` change and read the live table of a running director.
Changes are applied to the same objects the data plane reads, on the data plane's event loop,
so they take effect on the next new connection with no restart and no locking.

Access control is the file system's: the socket is created mode 0600 (root only when the
daemon runs as root). A stale socket file from a crashed daemon is replaced; a live one makes
start-up fail instead of stealing it.

Limits, so no client can hold the daemon's resources: a connection that sends no complete
request for ``idle_timeout`` seconds (60 by default) is closed (``idle_closed``), and past
``max_clients`` open connections (64) a new one gets one error line (EUSERS, "too many control
connections") and is closed (``refused_clients``). ``ControlClient`` reconnects by itself before
using a connection it left idle for half that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

from pylvs.control import protocol as P
from pylvs.core.api import IPVSBackend

log = logging.getLogger("pylvs.control")

IDLE_TIMEOUT = 60.0
MAX_CLIENTS = 64


class ControlSocketBusy(Exception):
    """Another daemon already serves this control socket."""


def _socket_is_live(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


class ControlServer:
    """Serves one backend on one socket path. ``extra`` adds daemon-specific operations."""

    def __init__(
        self,
        backend: IPVSBackend,
        path: str,
        extra: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
        on_change: Callable[[str], None] | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.backend = backend
        self.path = path
        self.extra = extra or {}
        self.on_change = on_change
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self.idle_closed = 0  # connections closed for sending nothing in idle_timeout
        self.refused_clients = 0  # connections refused past max_clients
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    def counters(self) -> dict[str, int]:
        return {"clients": len(self._clients), "idle_closed": self.idle_closed,
                "refused_clients": self.refused_clients}

    async def start(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if os.path.exists(self.path):
            if not stat.S_ISSOCK(os.stat(self.path).st_mode):
                raise ControlSocketBusy(f"{self.path} exists and is not a socket")
            if _socket_is_live(self.path):
                raise ControlSocketBusy(f"a director is already running on {self.path}")
            os.unlink(self.path)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=P.MAX_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        log.info("control socket listening on %s", self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_clients:
            self.refused_clients += 1
            with contextlib.suppress(ConnectionError):
                writer.write(P.encode({"ok": False, "errno": errno.EUSERS,
                                       "error": "too many control connections"}))
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        line = await reader.readline()
                except TimeoutError:
                    self.idle_closed += 1
                    break
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(P.encode({"ok": False, "errno": 90, "error": "request too long"}))
                    break
                if not line:
                    break
                try:
                    request = P.decode(line)
                except P.ProtocolError as exc:
                    reply: dict[str, Any] = {"ok": False, "errno": 22, "error": str(exc)}
                else:
                    reply = P.dispatch(self.backend, request, self.extra)
                    op = request.get("op") if isinstance(request, dict) else None
                    if (
                        isinstance(op, str) and op in P.OPERATIONS and op not in P.READ_ONLY
                        and reply.get("ok") and self.on_change is not None
                    ):
                        self.on_change(op)
                writer.write(P.encode(reply))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
