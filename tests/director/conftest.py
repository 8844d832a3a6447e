"""What the pylvsd daemon tests share: a real server that holds its connections open without a
word, and pylvsd (or another daemon) as a real process whose stderr is kept, stopped and reaped
at the end of the test even when it fails."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A real server on a random 127.0.x.y that accepts and never says anything (connections
    held until the end)."""
    addr = f"127.0.{random.randint(2, 250)}.{random.randint(2, 250)}"
    srv = socket.create_server((addr, 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield addr, srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def connect_when_listening(vip: str, port: int) -> socket.socket:
    """A connection to ``vip:port`` once something listens there (a listener the daemon opens
    after a service is added), within 20 s."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return socket.create_connection((vip, port), timeout=2)
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {vip}:{port}"
            time.sleep(0.1)


class Daemon:
    """A daemon started for a test; its stderr read as it comes (so it never blocks on a full
    pipe) and kept in ``log``."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def stderr(self) -> str:
        return b"".join(self.log).decode(errors="replace")

    def wait_started(self, ready: Callable[[], bool], what: str) -> None:
        """Until ``ready``; fails with the daemon's stderr if it exits first."""
        wait_for(lambda: ready() or self.proc.poll() is not None, what)
        assert self.proc.poll() is None, f"{what}: exited {self.proc.returncode}: {self.stderr}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal, reap (SIGKILL after 15 s) and read the rest of stderr; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons a test appends here are killed at its end, whatever happened."""
    made: list[Daemon] = []
    try:
        yield made
    finally:
        for d in made:
            d.stop(signal.SIGKILL)
