"""The director daemon as an operator runs it: a real pylvsd process, its socket, real traffic."""

from __future__ import annotations

import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.control.client import ControlClient
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceKey,
    ServiceSpec,
    parse_address,
)


class _NameHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1024)
        self.request.sendall(self.server.name)  # type: ignore[attr-defined]


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def backends() -> Iterator[tuple[int, list[str]]]:
    """Two real servers, 127.0.0.N1 and 127.0.0.N2 on one port, answering their own name."""
    base = random.randint(2, 120) * 2
    addrs = [f"127.0.{base}.10", f"127.0.{base}.20"]
    servers: list[_Server] = []
    port = 0
    try:
        for i, a in enumerate(addrs):
            srv = _Server((a, port), _NameHandler)
            port = srv.server_address[1]
            srv.name = f"rs{i + 1}".encode()  # type: ignore[attr-defined]
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            servers.append(srv)
        yield port, addrs
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def start_daemon(sock: str, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylvs.director.main", "--control-socket", sock, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        if proc.poll() is not None:
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("pylvsd did not create its control socket")
        time.sleep(0.05)
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    sock = str(tmp_path / "pylvs.sock")
    proc = start_daemon(sock, "--dataplane", "proxy")
    try:
        yield proc, sock
    finally:
        stop_daemon(proc)


def ask(vip: str, port: int) -> bytes:
    with socket.create_connection((vip, port), timeout=5) as s:
        s.sendall(b"hello")
        return s.recv(1024)


def test_table_changes_apply_to_live_traffic(
    daemon: tuple[subprocess.Popen[bytes], str], backends: tuple[int, list[str]]
) -> None:
    _, sock = daemon
    port, (rs1, rs2) = backends
    vip = rs1.rsplit(".", 1)[0] + ".100"
    key = ServiceKey.inet(Protocol.TCP, vip, port)
    with ControlClient(sock) as c:
        c.add_service(ServiceSpec(key, scheduler="rr"))
        c.add_dest(key, DestSpec(parse_address(rs1), port, ForwardingMethod.MASQ, 1))
        c.add_dest(key, DestSpec(parse_address(rs2), port, ForwardingMethod.MASQ, 1))
        deadline = time.monotonic() + 10
        while True:  # the listener opens as the data plane follows the table
            try:
                first = ask(vip, port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        answers = [first] + [ask(vip, port) for _ in range(7)]
        assert answers.count(b"rs1") == answers.count(b"rs2") == 4
        # quiesce rs1 live: no new connection reaches it
        c.edit_dest(key, DestSpec(parse_address(rs1), port, ForwardingMethod.MASQ, 0))
        assert {ask(vip, port) for _ in range(6)} == {b"rs2"}
        (svc,) = c.get_services()
        assert svc.stats.conns == 14
        assert c.status()["dataplane"]["name"] == "proxy"
        c.del_service(key)
    deadline = time.monotonic() + 10
    while True:
        try:
            ask(vip, port)
        except OSError:
            break  # nothing listens on the VIP any more
        assert time.monotonic() < deadline, "listener still open after the service was deleted"
        time.sleep(0.05)


def test_table_survives_restart_through_save_and_restore(tmp_path: Path) -> None:
    sock = str(tmp_path / "pylvs.sock")
    rules = str(tmp_path / "rules")
    key = ServiceKey.inet(Protocol.TCP, "192.168.168.100", 80)
    proc = start_daemon(sock, "--dataplane", "none", "--save-on-exit", rules)
    try:
        with ControlClient(sock) as c:
            c.add_service(ServiceSpec(key, scheduler="wrr"))
            c.add_dest(key, DestSpec(parse_address("192.168.168.10"), 80, ForwardingMethod.DROUTE, 3))
    finally:
        assert stop_daemon(proc) == 0
    assert Path(rules).read_text() == (
        "-A -t 192.168.168.100:80 -s wrr\n"
        "-a -t 192.168.168.100:80 -r 192.168.168.10:80 -g -w 3\n"
    )
    proc = start_daemon(sock, "--dataplane", "none", "--restore", rules)
    try:
        with ControlClient(sock) as c:
            (svc,) = c.get_services()
        assert svc.spec.scheduler == "wrr"
        assert [(str(d.spec.addr), d.spec.weight) for d in svc.dests] == [("192.168.168.10", 3)]
    finally:
        stop_daemon(proc)


def test_malformed_restore_file_is_refused_with_its_line_and_nothing_starts(tmp_path: Path) -> None:
    sock = str(tmp_path / "pylvs.sock")
    rules = tmp_path / "rules"
    rules.write_text("-A -t 192.168.168.100:80 -s rr\n-a -t 192.168.168.100:80 -r 300.1.1.1:80\n")
    proc = start_daemon(sock, "--dataplane", "none", "--restore", str(rules))
    rc = proc.wait(20)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert rc != 0
    assert f"{rules}:2:" in err
    assert not os.path.exists(sock)


def test_second_daemon_on_the_same_socket_refuses_to_start(
    daemon: tuple[subprocess.Popen[bytes], str],
) -> None:
    first, sock = daemon
    second = start_daemon(sock, "--dataplane", "none")
    assert second.wait(20) == 1
    assert b"already running" in (second.stderr.read() if second.stderr else b"")
    assert first.poll() is None
    with ControlClient(sock) as c:
        assert c.get_info().num_services == 0
