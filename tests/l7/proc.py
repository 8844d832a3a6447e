"""A ``pylvs http`` master as a real process for the signal, command-line and privilege tests:
started with a ``NOTIFY_SOCKET`` datagram listener (so readiness is systemd's READY=1), its
pid file, its error log, and a cleanup that ends only the processes it started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.l7.conftest import free_port

PYLVS = [sys.executable, "-m", "pylvs.cli.main", "http"]


@contextlib.contextmanager
def open_dir() -> Iterator[Path]:
    """A directory the workers' user can reach (pytest's own are root-only, and a worker
    that is no longer root reopens its logs by path, as nginx's do)."""
    d = Path(tempfile.mkdtemp(prefix="pylvs-http-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None,
              timeout: float = 20.0) -> None:
    """Until something listens on 127.0.0.1:``port``; fails at once if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited: {proc.stderr.read() if proc.stderr else b''!r}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


@contextlib.contextmanager
def running(cmd: list[str], port: int,
            stop: signal.Signals = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` (nginx, or pylvs http) running and listening on ``port``; stopped by its pid
    with ``stop`` (SIGQUIT: gracefully, its logs written)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        time.sleep(0.2)  # every worker listening
        yield proc
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def pylvs_http(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYLVS, *args], capture_output=True, text=True, timeout=timeout)


class Notify:
    """An AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, tmp: Path) -> None:
        self.path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def count(self, text: str) -> int:
        return sum(text in m.split("\n") for m in self.messages)

    def wait(self, text: str, timeout: float = 30.0, n: int = 1) -> bool:
        """Wait until ``n`` datagrams have held ``text`` (all are kept, in order)."""
        deadline = time.monotonic() + timeout
        while self.count(text) < n and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())
        return self.count(text) >= n

    def close(self) -> None:
        self.sock.close()


class Http:
    """One ``pylvs http`` master started on ``conf`` (``{port}`` ``{tmp}`` ``{pid}`` filled)."""

    def __init__(self, tmp: Path, conf: str, *extra: str, port: int = 0, **fmt: object) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.port = port or free_port()
        self.pid_file = tmp / "pylvs.pid"
        self.error_log = tmp / "error.log"
        self.conf_text = conf
        self.fmt = fmt
        self.conf = tmp / "nginx.conf"
        self.write(conf)
        self.notify = Notify(tmp)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        self.proc = subprocess.Popen([*PYLVS, "-c", str(self.conf), *extra], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started: set[int] = set()

    def write(self, conf: str) -> None:
        self.conf.write_text(conf.format(port=self.port, tmp=self.tmp, pid=self.pid_file,
                                         err=self.error_log, **self.fmt))

    def ready(self) -> None:
        assert self.notify.wait("READY=1"), (self.proc.poll(), self.log())
        self.started |= set(self.workers())

    def log(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def workers(self) -> list[int]:
        """The master's children (from /proc)."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (d / "stat").read_text()
                    fields = stat[stat.rindex(")") + 2:].split()
                    if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                        out.append(int(d.name))
        return sorted(out)

    def kill(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def close(self) -> None:
        """End the master and every worker this test saw (by pid), even on failure."""
        self.started |= set(self.workers()) if self.proc.poll() is None else set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.started:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.proc.communicate()
        self.notify.close()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
