"""The seed's whole director as one keepalived.conf, on two directors in the namespace lab.

Each director runs ``pylvs keepalived -f`` with the same file but its own state and priority:
VRRP for the VIP, the virtual server in DR mode on the packet data plane, HTTP_GET checks of the
real servers. nginx on RS1 is stopped: RS1 leaves both tables and no request reaches it. Then
the master's link goes down and the backup serves the VIP with the same healthy table.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.director_pair import DirectorPair, director_pair, wait

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONF = """
vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass 1111
    }}
    virtual_ipaddress {{
        {vip}/24 dev eth0 label eth0:0
    }}
}}
virtual_server {vip} 80 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind DR
    protocol TCP
    warmup 0
    real_server 192.168.168.10 80 {{
        weight 1
        HTTP_GET {{
            url {{
                path /
                status_code 200
            }}
            connect_timeout 1
            retry 0
        }}
    }}
    real_server 192.168.168.20 80 {{
        weight 1
        HTTP_GET {{
            url {{
                path /
                status_code 200
            }}
            connect_timeout 1
            retry 0
        }}
    }}
}}
"""


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[DirectorPair]:
    yield from director_pair(tmp_path, CONF)


def test_one_keepalived_conf_runs_the_seeds_director_pair(pair: DirectorPair) -> None:
    wait(lambda: pair.has_vip("director"), "the master to hold the VIP")
    both = ("192.168.168.10:80", "192.168.168.20:80")
    for host in ("director", "backup"):
        wait(lambda host=host: all(rs in pair.table(host) for rs in both),
             f"{host}'s table with both real servers\n{pair.log(host)[-1500:]}")
    assert not pair.has_vip("backup")
    bodies = pair.curl(4)
    assert sorted(bodies) == ["this is nginx1"] * 2 + ["this is nginx2"] * 2, bodies

    # nginx on RS1 stops: the checkers of both directors take it out, no request reaches it
    rs1 = pair.lab.server_pids()["rs1"]
    os.kill(rs1, signal.SIGTERM)
    for host in ("director", "backup"):
        wait(lambda host=host: "192.168.168.10:80" not in pair.table(host),
             f"RS1 to leave {host}'s table", timeout=15)
    assert pair.curl(4) == ["this is nginx2"] * 4

    # the master's link goes down: the backup takes the VIP and serves with its own table
    pair.lab.run("director", ["ip", "link", "set", "eth0", "down"], check=True)
    wait(lambda: pair.has_vip("backup"), "the backup to take the VIP", timeout=20)
    answers: list[str] = []
    wait(lambda: (answers.extend(pair.curl(1)), answers[-1] == "this is nginx2")[1],
         "the backup to answer for the VIP", timeout=20)
    assert pair.curl(3) == ["this is nginx2"] * 3
    assert "Entering MASTER STATE" in pair.log("backup")
