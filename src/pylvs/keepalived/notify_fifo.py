"""keepalived's notify FIFOs: one line per state change, for a program that follows them all.

What this is for: ``notify_fifo``, ``vrrp_notify_fifo`` and ``lvs_notify_fifo`` in global_defs.
Rather than a script per transition, one long-running reader gets lines such as
``INSTANCE "VI_1" MASTER 100``, ``GROUP "VG_1" BACKUP 0``, ``RS [10.0.1.1]:tcp:80
[10.0.0.1]:tcp:80 DOWN`` or ``VS [10.0.0.1]:tcp:80 UP``. As keepalived does, the FIFO is created
when missing and opened read-write (so a write never blocks for want of a reader); the matching
``*_fifo_script`` is started with the FIFO's path as its last argument before anything is
written, and stopped at exit. A line that does not fit in the pipe (the reader is stuck) is
dropped and counted rather than stalling the daemon.

What this is not for: deciding what changed (the VRRP driver and the health manager do).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shlex
import stat
import subprocess

from pylvs.core.model import DestSpec, ServiceKey

log = logging.getLogger("pylvs.fifo")


class NotifyFifo:
    def __init__(self, path: str, script: str | None = None) -> None:
        self.path = path
        self.script = script
        self.fd: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.dropped = 0

    def open(self) -> None:
        try:
            st = os.stat(self.path)
            if not stat.S_ISFIFO(st.st_mode):
                raise OSError(errno.EEXIST, f"{self.path} exists and is not a FIFO")
        except FileNotFoundError:
            os.mkfifo(self.path, 0o600)
        if self.script:
            self.proc = subprocess.Popen([*shlex.split(self.script), self.path],
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def write(self, line: str) -> None:
        if self.fd is None:
            return
        data = (line + "\n").encode()
        try:
            os.write(self.fd, data)  # one write under PIPE_BUF is atomic: lines never interleave
        except BlockingIOError:
            self.dropped += 1
            log.warning("notify FIFO %s is full: line dropped (%s)", self.path, line)
        except OSError as exc:
            self.dropped += 1
            log.warning("notify FIFO %s: %s", self.path, exc)

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Fifos:
    """The FIFOs of one daemon: the common one takes every line, the vrrp and lvs ones theirs."""

    def __init__(self, common: NotifyFifo | None = None, vrrp: NotifyFifo | None = None,
                 lvs: NotifyFifo | None = None) -> None:
        self.common, self.vrrp_fifo, self.lvs_fifo = common, vrrp, lvs

    def all(self) -> list[NotifyFifo]:
        return [f for f in (self.common, self.vrrp_fifo, self.lvs_fifo) if f is not None]

    def open(self) -> None:
        for f in self.all():
            try:
                f.open()
            except OSError as exc:
                log.error("notify FIFO %s cannot be opened: %s", f.path, exc)
                f.fd = None

    def close(self) -> None:
        for f in self.all():
            f.close()

    def vrrp(self, line: str) -> None:
        for f in (self.common, self.vrrp_fifo):
            if f is not None:
                f.write(line)

    def lvs(self, line: str) -> None:
        for f in (self.common, self.lvs_fifo):
            if f is not None:
                f.write(line)

    def lvs_event(self, key: ServiceKey, dest: DestSpec | None, up: bool) -> None:
        """A health-check change: a real server (or, without one, the virtual server's quorum)
        went up or down."""
        word = "UP" if up else "DOWN"
        if dest is None:
            self.lvs(f"VS {service_text(key)} {word}")
        else:
            self.lvs(f"RS {dest_text(dest, key)} {service_text(key)} {word}")


_PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}


def service_text(key: ServiceKey) -> str:
    """keepalived's way of naming a virtual service in FIFO lines: ``[addr]:tcp:80``."""
    if key.fwmark:
        return f"FWM {key.fwmark}"
    proto = _PROTO_NAMES.get(int(key.protocol), str(int(key.protocol)))
    return f"[{key.addr}]:{proto}:{key.port}"


def dest_text(dest: DestSpec, key: ServiceKey) -> str:
    """A real server of that service, named the same way (keepalived clears the protocol of a
    firewall-mark service, so its real servers say ``none``)."""
    proto = "none" if key.fwmark else _PROTO_NAMES.get(int(key.protocol), "tcp")
    return f"[{dest.addr}]:{proto}:{dest.port}"
