"""pylvsd on the proxy plane and the connection table of planned restarts: its connections are
sockets, which end with the process, so a clean stop writes no table and a table found at start
is removed unread (the packet planes' side is tested in the namespace lab:
``tests/dataplane/packet/test_restart_connections.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

from pylvs.control.client import ControlClient
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceKey,
    ServiceSpec,
    parse_address,
)
from tests.director.conftest import Daemon, connect_when_listening, wait_for


def test_the_proxy_plane_keeps_no_connection_table(
    tmp_path: Path, silent_server: tuple[str, int], daemons: list[Daemon],
) -> None:
    rip, port = silent_server
    vip = rip.rsplit(".", 1)[0] + ".100"
    sock = tmp_path / "c.sock"
    state = tmp_path / "ipvsadm.rules"
    table = tmp_path / "ipvsadm.rules.connections"
    table.write_text('{"pylvs_connections": 1, "saved_at": 0, "entries": 0}\n')
    d = Daemon([sys.executable, "-m", "pylvs.director.main", "--control-socket", str(sock),
                "--dataplane", "proxy", "--state-file", str(state)])
    daemons.append(d)
    d.wait_started(sock.exists, "pylvsd did not start")
    assert not table.exists(), "removed unread at start"
    key = ServiceKey.inet(Protocol.TCP, vip, port)
    with ControlClient(str(sock)) as c:
        c.add_service(ServiceSpec(key, scheduler="rr"))
        c.add_dest(key, DestSpec(parse_address(rip), port, ForwardingMethod.MASQ, 1))
        with connect_when_listening(vip, port) as client:
            client.sendall(b"x")
            # the relay is in the table, as -Lnc shows it
            wait_for(lambda: bool(c.get_connections()), "no entry for the relay")
            assert c.status()["connections_file"] == {"path": str(table), "restored": None}
            assert d.stop() == 0
    assert not table.exists(), d.stderr
    assert "removed unread: the proxy data plane keeps no connection entries" in d.stderr
    assert state.exists()
