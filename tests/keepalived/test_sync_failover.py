"""An established connection survives a director failover, as with keepalived's lvs_sync_daemon.

The seed's two directors run ``pylvs keepalived`` with the same file (DR on the packet data plane)
and ``lvs_sync_daemon eth0 VI_1``: the master's connection entries reach the backup by multicast.
A client opens one keep-alive HTTP connection through the master; the master's link goes down;
the backup takes the VIP and the client's next request on the *same* TCP connection is answered,
because the backup already knows which real server that connection belongs to. Without the sync
the backup would drop the connection's packets (no SYN, no entry) and the client would hang.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.lab import VIP
from pylvs.lab.clients import KEEPALIVE_CLIENT
from tests.lab.director_pair import PY, DirectorPair, director_pair, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONF = """
global_defs {{
    lvs_sync_daemon eth0 VI_1 id 9
}}
vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    virtual_ipaddress {{
        {vip}/24 dev eth0 label eth0:0
    }}
}}
virtual_server {vip} 80 {{
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 192.168.168.10 80 {{
        weight 1
    }}
    real_server 192.168.168.20 80 {{
        weight 1
    }}
}}
"""

@pytest.fixture
def pair(tmp_path: Path) -> Iterator[DirectorPair]:
    yield from director_pair(tmp_path, CONF)


def test_established_connection_survives_failover_with_lvs_sync_daemon(pair: DirectorPair) -> None:
    wait(lambda: pair.has_vip("director"), "the master to hold the VIP")
    wait(lambda: "192.168.168.20:80" in pair.adm("backup", "-Ln"), "the backup's table")
    wait(lambda: "master sync daemon (mcast=eth0, syncid=9" in pair.adm("director", "-L", "--daemon"),
         f"the master's sync daemon\n{pair.log('director')[-1500:]}")
    assert "backup sync daemon (mcast=eth0, syncid=9" in pair.adm("backup", "-L", "--daemon")

    trigger, out = pair.tmp / "go", pair.tmp / "client.out"
    client = pair.lab.popen("client", [PY, "-c", KEEPALIVE_CLIENT, VIP, str(trigger), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pair.procs.append(client)
    wait(lambda: out.exists() and out.read_text().count("\n") >= 1, "the first answer", timeout=15)
    port, first = out.read_text().split("\n")[0].split(" ", 1)
    assert first in ("this is nginx1", "this is nginx2")

    def synced() -> bool:
        return any(f":{port} " in line and "ESTABLISHED" in line
                   for line in pair.adm("backup", "-Lnc").splitlines())

    wait(synced, f"the connection in the backup's table\n{pair.adm('director', '-Lnc')}", timeout=10)

    pair.lab.run("director", ["ip", "link", "set", "eth0", "down"], check=True)
    wait(lambda: pair.has_vip("backup"), "the backup to take the VIP", timeout=20)
    wait(lambda: "master sync daemon" in pair.adm("backup", "-L", "--daemon"),
         "the backup's sync daemon to become master", timeout=10)
    trigger.write_text("go")
    client.wait(30)
    lines = out.read_text().strip().split("\n")
    assert lines[1] == first, (lines, pair.log("backup")[-2000:])
