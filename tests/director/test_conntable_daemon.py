"""pylvsd on the proxy plane and the connection table of planned restarts: its connections are
sockets, which end with the process, so a clean stop writes no table and a table found at start
is removed unread (the packet planes' side is tested in the namespace lab:
``tests/dataplane/packet/test_restart_connections.py``)."""

from __future__ import annotations

import random
import signal
import socket
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


@pytest.fixture
def holder() -> Iterator[tuple[str, int]]:
    """A real server that accepts and keeps its connections open."""
    addr = f"127.0.{random.randint(2, 250)}.10"
    srv = socket.create_server((addr, 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield addr, srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        srv.close()
        for s in held:
            s.close()


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_proxy_plane_keeps_no_connection_table(tmp_path: Path,
                                                   holder: tuple[str, int]) -> None:
    rip, port = holder
    vip = rip.rsplit(".", 1)[0] + ".100"
    sock = tmp_path / "c.sock"
    state = tmp_path / "ipvsadm.rules"
    table = tmp_path / "ipvsadm.rules.connections"
    table.write_text('{"pylvs_connections": 1, "saved_at": 0, "entries": 0}\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylvs.director.main", "--control-socket", str(sock),
         "--dataplane", "proxy", "--state-file", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = None
    try:
        wait_for(sock, proc)
        assert not table.exists(), "removed unread at start"
        key = ServiceKey.inet(Protocol.TCP, vip, port)
        with ControlClient(str(sock)) as c:
            c.add_service(ServiceSpec(key, scheduler="rr"))
            c.add_dest(key, DestSpec(parse_address(rip), port, ForwardingMethod.MASQ, 1))
            deadline = time.monotonic() + 10
            while client is None:
                try:
                    client = socket.create_connection((vip, port), timeout=5)
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            client.sendall(b"x")
            deadline = time.monotonic() + 10
            while not c.get_connections():  # the relay is in the table, as -Lnc shows it
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert c.status()["connections_file"] == {"path": str(table), "restored": None}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        err = proc.communicate()[1]
        assert not table.exists(), err
        assert "removed unread: the proxy data plane keeps no connection entries" in err
        assert state.exists()
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
