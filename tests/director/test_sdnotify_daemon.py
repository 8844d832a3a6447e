"""pylvsd speaks systemd's notify protocol: a real pylvsd process, a real AF_UNIX datagram
listener as ``$NOTIFY_SOCKET``, the messages in systemd's order (READY=1 once the control socket
answers, RELOADING=1/READY=1 around a SIGHUP, STOPPING=1 on SIGTERM, WATCHDOG=1 when asked)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PY = sys.executable


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()


def adm(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pylvs.cli.ipvsadm", "--control-socket", sock, *args],
                          capture_output=True, text=True, timeout=30)


def receive(sock: socket.socket, timeout: float, skip_watchdog: bool = True) -> str:
    """The next message (WATCHDOG=1 pings skipped unless asked for)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no message from pylvsd"
        sock.settimeout(left)
        msg = sock.recv(4096).decode()
        if not (skip_watchdog and msg == "WATCHDOG=1"):
            return msg


def test_ready_reloading_stopping_and_watchdog_in_order(
    tmp_path: Path, notify: tuple[socket.socket, str]
) -> None:
    listener, path = notify
    rules = tmp_path / "rules"
    rules.write_text("-A -t 10.78.0.1:80 -s rr\n")
    ctl = str(tmp_path / "ctl.sock")
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    started = time.monotonic()
    proc = subprocess.Popen(
        [PY, "-m", "pylvs.director.main", "--control-socket", ctl, "--dataplane", "none",
         "--no-state-file", "--restore", str(rules)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        ready = receive(listener, 30)
        took = time.monotonic() - started
        assert ready.startswith("READY=1\nSTATUS="), ready
        # READY means served: the control socket answers at once, with the restored table
        assert adm(ctl, "-Sn").stdout == "-A -t 10.78.0.1:80 -s rr\n"
        assert took < 30

        # the watchdog pings every half WATCHDOG_USEC (0.2 s): several in a second
        listener.setblocking(False)  # what queued up meanwhile is pings only; then count afresh
        with contextlib.suppress(BlockingIOError):
            while True:
                assert listener.recv(4096) == b"WATCHDOG=1"
        pings = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            listener.settimeout(max(0.01, end - time.monotonic()))
            try:
                pings += listener.recv(4096) == b"WATCHDOG=1"
            except TimeoutError:
                break
        assert 2 <= pings <= 8, pings

        rules.write_text("-A -t 10.78.0.1:80 -s wlc\n")
        proc.send_signal(signal.SIGHUP)
        reloading = receive(listener, 10)
        assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC="), reloading
        assert int(reloading.rpartition("=")[2]) > 0
        assert receive(listener, 10) == "READY=1"
        assert adm(ctl, "-Sn").stdout == "-A -t 10.78.0.1:80 -s wlc\n"  # reloaded before READY

        proc.send_signal(signal.SIGTERM)
        assert receive(listener, 10) == "STOPPING=1"
        assert proc.wait(15) == 0
        # nothing after STOPPING (no ping from a stopped loop)
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            while listener.recv(4096) == b"WATCHDOG=1":
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_a_start_that_fails_sends_no_ready(tmp_path: Path, notify: tuple[socket.socket, str]) -> None:
    listener, path = notify
    bad = tmp_path / "bad.rules"
    bad.write_text("-A -t 10.78.0.1:80 -s nosuch\n")
    out = subprocess.run(
        [PY, "-m", "pylvs.director.main", "--control-socket", str(tmp_path / "c.sock"),
         "--dataplane", "none", "--no-state-file", "--restore", str(bad)],
        env={**os.environ, "NOTIFY_SOCKET": path}, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 1
    assert out.stderr.startswith(f"pylvsd: {bad}:1: ")
    listener.settimeout(0.3)
    with pytest.raises(TimeoutError):
        listener.recv(4096)
