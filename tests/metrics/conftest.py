"""A real pylvsd with metrics and a status page, two real servers and one virtual service, all on
loopback, for the tests of this directory. Each test gets its own ports, socket and addresses."""

from __future__ import annotations

import os
import random
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pylvs.control.client import ControlClient
from pylvs.core.api import BackendUnavailable
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceKey,
    ServiceSpec,
    parse_address,
)

SECRET = "s3cret-for-the-test"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(self.server.prefix + data)  # type: ignore[attr-defined]


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class Director:
    """The running daemon and what the test needs to reach it."""

    proc: subprocess.Popen[bytes]
    sock: str
    metrics_port: int
    status_port: int
    vip: str
    vport: int
    real: list[str]
    rport: int
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> ServiceKey:
        return ServiceKey.inet(Protocol.TCP, self.vip, self.vport)

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{port or self.status_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    def pylvsadm(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "pylvs.cli.ipvsadm", *args], env=self.env,
                             capture_output=True, text=True, timeout=30, check=True)
        return out.stdout

    def request(self, payload: bytes = b"ping") -> bytes:
        with socket.create_connection((self.vip, self.vport), timeout=5) as c:
            c.sendall(payload)
            return c.recv(65536)


def wait_for(pred: object, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def director(tmp_path: Path) -> Iterator[Director]:
    """pylvsd (proxy data plane) with ``--metrics-address`` and ``--status-address``, a service
    with two real servers answering ``rsN:`` + what they get."""
    yield from _director(tmp_path, "proxy")


@pytest.fixture
def table_director(tmp_path: Path) -> Iterator[Director]:
    """The same with no data plane (``--dataplane none``): the table only, no traffic."""
    yield from _director(tmp_path, "none")


def _director(tmp_path: Path, dataplane: str) -> Iterator[Director]:
    base = random.randint(1, 120) * 2
    vip, real = f"127.0.{base}.100", [f"127.0.{base}.10", f"127.0.{base}.20"]
    servers: list[_Server] = []
    rport = 0
    proc = None
    try:
        for i, a in enumerate(real):
            srv = _Server((a, rport), _Echo)
            rport = srv.server_address[1]
            srv.prefix = f"rs{i + 1}:".encode()  # type: ignore[attr-defined]
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            servers.append(srv)
        sock = str(tmp_path / "pylvs.sock")
        (tmp_path / "secret").write_text(SECRET + "\n")
        mport, sport = free_port(), free_port()
        env = {**os.environ, "PYLVS_CONTROL_SOCKET": sock}
        with open(tmp_path / "pylvsd.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "pylvs.director.main", "--control-socket", sock,
                 "--dataplane", dataplane, "--metrics-address", f"127.0.0.1:{mport}",
                 "--status-address", str(sport), "--status-admin-secret-file",
                 str(tmp_path / "secret"), "--log-level", "warning"],
                env=env, stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: _answers(sock), what="the control socket")
        vport = free_port(vip)
        d = Director(proc, sock, mport, sport, vip, vport, real, rport, tmp_path, env)
        with ControlClient(sock) as c:
            c.add_service(ServiceSpec(d.key, "rr"))
            for a in real:
                c.add_dest(d.key, DestSpec(parse_address(a), rport, ForwardingMethod.MASQ, 1))
        if dataplane == "proxy":
            wait_for(lambda: _connects(vip, vport), what="the proxy listener")
        yield d
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def _answers(sock: str) -> bool:
    """The socket file appears at bind(), before listen(): ask the daemon instead."""
    if not os.path.exists(sock):
        return False
    try:
        with ControlClient(sock, timeout=2) as c:
            c.get_info()
        return True
    except (BackendUnavailable, OSError):
        return False


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
