"""The control socket's limits, on real Unix sockets: a client that connects and says nothing is
closed after the idle timeout, connections past the client limit are refused with a line and a
counter, and a ControlClient left idle reconnects by itself."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from pylvs.control import client as client_mod
from pylvs.control.client import ControlClient
from pylvs.control.server import ControlServer
from pylvs.core.table import IPVSTable


class Served:
    def __init__(self, path: str, idle: float, max_clients: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(IPVSTable(), path, idle_timeout=idle, max_clients=max_clients)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, str]]:
    path = str(tmp_path / "ctl.sock")
    s = Served(path, idle=0.5, max_clients=3)
    try:
        yield s, path
    finally:
        s.close()


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s


def _ask(s: socket.socket) -> dict[str, object]:
    s.sendall(b'{"op": "get_info"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(4096)
        assert chunk, "closed"
        buf += chunk
    reply: dict[str, object] = json.loads(buf)
    return reply


def test_a_silent_client_is_closed_after_the_idle_timeout(served: tuple[Served, str]) -> None:
    srv, path = served
    silent = _connect(path)
    busy = _connect(path)
    t0 = time.monotonic()
    for _ in range(4):  # a client that keeps asking is never idle
        time.sleep(0.2)
        assert _ask(busy)["ok"] is True
    assert silent.recv(100) == b""  # closed by the daemon
    assert 0.4 <= time.monotonic() - t0 < 3
    assert srv.server.idle_closed >= 1
    silent.close()
    busy.close()


def test_connections_past_the_limit_are_refused_and_counted(served: tuple[Served, str]) -> None:
    srv, path = served
    held = [_connect(path) for _ in range(3)]
    for s in held:
        assert _ask(s)["ok"] is True  # each is being served
    extra = _connect(path)
    line = extra.recv(4096)
    assert b"too many control connections" in line and b'"errno":87' in line
    assert extra.recv(100) == b""
    assert srv.server.refused_clients == 1
    extra.close()
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:  # a place frees up once the daemon has seen the close
        s = _connect(path)
        try:
            if _ask(s)["ok"] is True:
                break
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        finally:
            s.close()
    for s in held:
        s.close()


def test_a_client_left_idle_reconnects_instead_of_failing(served: tuple[Served, str]) -> None:
    _, path = served
    with mock.patch.object(client_mod, "IDLE_RECONNECT", 0.2), ControlClient(path) as c:
        assert c.get_info().num_services == 0
        time.sleep(0.8)  # the daemon closed the connection meanwhile
        assert c.get_info().num_services == 0


def test_pylvs_sysctl_reads_and_writes_a_directors_defences(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pylvs.cli.main import main
    from pylvs.core.director import Director

    path = str(tmp_path / "d.sock")
    srv = Served(path, idle=5, max_clients=3)
    d = Director(srv.server.backend, max_connections=1000)  # type: ignore[arg-type]
    try:
        assert main(["sysctl", "--control-socket", path, "-w",
                     "net.ipv4.vs.drop_entry=3", "amemthresh=10"]) == 0
        out = capsys.readouterr().out
        assert out == "net.ipv4.vs.drop_entry = 3\nnet.ipv4.vs.amemthresh = 10\n"
        assert d.defense.drop_entry == 3 and d.defense.amemthresh == 10
        assert main(["sysctl", "--control-socket", path, "secure_tcp=7"]) == 1
        assert "secure_tcp: must be 0, 1, 2 or 3" in capsys.readouterr().err
        assert d.defense.secure_tcp == 1
        assert main(["sysctl", "--control-socket", path, "-a"]) == 0
        assert "max_connections = 1000" in capsys.readouterr().out
    finally:
        srv.close()
