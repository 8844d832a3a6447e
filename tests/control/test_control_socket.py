"""The control socket between pylvsadm and the director: real Unix sockets, a real event loop."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.control.client import ControlClient
from pylvs.control.server import ControlServer, ControlSocketBusy
from pylvs.core.api import BackendUnavailable, IPVSError
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceKey,
    ServiceSpec,
    parse_address,
)
from pylvs.core.table import IPVSTable


class ServerThread:
    """A ControlServer on its own event loop in a thread, as the daemon runs it."""

    def __init__(self, table: IPVSTable, path: str) -> None:
        self.table = table
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(table, path, extra={"status": lambda a: {"pid": os.getpid()}})
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "ctl" / "pylvs.sock")


@pytest.fixture
def served(sock_path: str) -> Iterator[tuple[IPVSTable, str]]:
    table = IPVSTable()
    with ServerThread(table, sock_path):
        yield table, sock_path


VIP = ServiceKey.inet(Protocol.TCP, "192.168.168.100", 80)


def test_pylvsadm_fails_at_once_without_a_director(sock_path: str) -> None:
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="no pylvs director is running"):
        ControlClient(sock_path).get_services()
    assert time.monotonic() - start < 2


def test_stale_socket_file_without_listener_is_reported_not_hung(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # file remains, nobody listens
    with pytest.raises(BackendUnavailable, match="nothing listens"):
        ControlClient(path).get_info()


def test_seed_commands_change_the_live_table(served: tuple[IPVSTable, str]) -> None:
    table, path = served
    with ControlClient(path) as c:
        c.add_service(ServiceSpec(VIP, scheduler="rr"))
        for rip in ("192.168.168.10", "192.168.168.20"):
            c.add_dest(VIP, DestSpec(parse_address(rip), 80, ForwardingMethod.DROUTE, 1))
        c.edit_service(ServiceSpec(VIP, scheduler="wrr"))
        c.edit_dest(VIP, DestSpec(parse_address("192.168.168.20"), 80, ForwardingMethod.DROUTE, 3))
        (svc,) = c.get_services()
    assert svc.spec.scheduler == "wrr"
    assert [(str(d.spec.addr), d.spec.weight) for d in svc.dests] == [
        ("192.168.168.20", 3), ("192.168.168.10", 1),
    ]
    live = table.lookup(VIP)
    assert live is not None and live.scheduler_name == "wrr"


def test_kernel_errors_cross_the_socket_with_their_errno(served: tuple[IPVSTable, str]) -> None:
    _, path = served
    with ControlClient(path) as c:
        c.add_service(ServiceSpec(VIP, scheduler="rr"))
        with pytest.raises(IPVSError) as exc:
            c.add_service(ServiceSpec(VIP, scheduler="rr"))
        assert exc.value.errno == errno.EEXIST
        with pytest.raises(IPVSError) as exc:
            c.del_dest(VIP, parse_address("192.168.168.99"), 80)
        assert exc.value.errno == errno.ENOENT
        with pytest.raises(IPVSError) as exc:
            c.add_service(ServiceSpec(ServiceKey.inet(Protocol.TCP, "10.0.0.1", 80), scheduler="nope"))
        assert exc.value.errno == errno.ENOENT
        # the connection stays usable after errors
        assert len(c.get_services()) == 1


def test_socket_is_root_only(served: tuple[IPVSTable, str]) -> None:
    _, path = served
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_second_daemon_cannot_steal_a_live_socket(served: tuple[IPVSTable, str]) -> None:
    _, path = served
    other = ControlServer(IPVSTable(), path)
    with pytest.raises(ControlSocketBusy):
        asyncio.run(other.start())


def test_garbage_and_oversized_requests_do_not_hurt_the_daemon(served: tuple[IPVSTable, str]) -> None:
    _, path = served
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b"this is not json\n")
    assert b'"ok":false' in s.recv(4096)
    s.sendall(b'{"op": "no_such_op"}\n')
    assert b"unknown operation" in s.recv(4096)
    s.sendall(b'{"op": "add_dest", "args": {"key": 5}}\n')
    assert b'"errno":22' in (reply := s.recv(4096)) and b"must be an object" in reply
    try:
        s.sendall(b"x" * (2 << 20) + b"\n")
        reply = s.recv(4096)
        assert reply == b"" or b"too long" in reply
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon dropped the abusive connection, which is the point
    s.close()
    with ControlClient(path) as c:
        assert c.get_info().num_services == 0
        assert c.status()["pid"] == os.getpid()
