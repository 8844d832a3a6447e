"""sd_notify against a real AF_UNIX datagram listener, as systemd's NOTIFY_SOCKET is."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.service.sdnotify import Notifier, watchdog_usec


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def test_messages_arrive_in_order(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("serving") and n.reloading() and n.ready() and n.stopping()
    got = [sock.recv(4096).decode() for _ in range(4)]
    assert got[0] == "READY=1\nSTATUS=serving"
    assert got[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(got[1].rpartition("=")[2]) > 0
    assert got[2:] == ["READY=1", "STOPPING=1"]
    n.close()


def test_abstract_socket_address() -> None:
    name = f"pylvs-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(100) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_without_systemd_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()


def test_a_vanished_socket_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.ready()
    assert not n.stopping()
    assert sum("cannot notify" in r.message for r in caplog.records) == 1


def test_watchdog_usec_is_only_for_its_pid() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "2000000"}) == 2_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 2_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) == 0
    assert watchdog_usec({"WATCHDOG_USEC": "soon"}) == 0


def test_watchdog_pings_from_the_loop(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})

    async def main() -> None:
        n.start_watchdog()
        await asyncio.sleep(0.22)
        n.close()

    asyncio.run(main())
    sock.settimeout(0.5)
    pings = []
    while True:
        try:
            pings.append(sock.recv(100))
        except TimeoutError:
            break
    assert pings and set(pings) == {b"WATCHDOG=1"} and 3 <= len(pings) <= 6
