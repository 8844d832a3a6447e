"""systemd's service notification protocol (``sd_notify(3)``), spoken by the daemons themselves.

Why hand-written: the protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket
named by ``$NOTIFY_SOCKET``. The Python binding ``systemd-python`` needs libsystemd's headers to
build and the small PyPI clients are unmaintained; twenty lines here have no such cost.

What the daemons send, in systemd's order:
- ``READY=1`` once what the unit promises is up (VRRP instances and checkers, listeners, the
  control socket), so a ``Type=notify`` unit is started and ``After=`` units may run;
- ``RELOADING=1`` (with ``MONOTONIC_USEC``, as systemd 253+ asks) when a reload starts and
  ``READY=1`` when it is done, so ``systemctl reload`` waits for it;
- ``STOPPING=1`` when a stop begins;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` when the unit sets ``WatchdogSec=`` (only if
  ``$WATCHDOG_PID`` is unset or names this process, as sd_watchdog_enabled(3) says).

Without ``$NOTIFY_SOCKET`` (not started by systemd) every call does nothing. A send that fails
(socket gone, systemd restarted) is logged once and never ends the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

log = logging.getLogger("pylvs.service")


class Notifier:
    """Sends state changes to the service manager named by ``$NOTIFY_SOCKET`` (if any)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@' and addressed with a leading NUL.
        self.address: str | None = ("\0" + path[1:]) if path.startswith("@") else (path or None)
        self.watchdog_usec = watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._warned = False
        self._watchdog_task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False when not under systemd or the send failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager at %s: %s",
                            self.address.replace("\0", "@"), exc.strerror or exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def start_watchdog(self) -> None:
        """Ping the watchdog every half interval from the running loop, if the unit asks for it.

        The ping runs on the daemon's own event loop on purpose: a loop that stalls stops the
        pings, and systemd restarts a daemon that no longer serves.
        """
        if not self.enabled or not self.watchdog_usec or self._watchdog_task is not None:
            return
        interval = self.watchdog_usec / 2e6

        async def ping() -> None:
            while True:
                self.watchdog()
                await asyncio.sleep(interval)

        self._watchdog_task = asyncio.get_running_loop().create_task(ping())

    def close(self) -> None:
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            self._watchdog_task = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def watchdog_usec(env: dict[str, str] | os._Environ[str]) -> int:
    """``$WATCHDOG_USEC`` when it is meant for this process (sd_watchdog_enabled(3)), else 0."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return 0
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
    return max(usec, 0)
