"""The seed's whole director as one keepalived.conf, on two directors in the namespace lab.

Each director runs ``pylvs keepalived -f`` with the same file but its own state and priority:
VRRP for the VIP, the virtual server in DR mode on the packet data plane, HTTP_GET checks of the
real servers. nginx on RS1 is stopped: RS1 leaves both tables and no request reaches it. Then
the master's link goes down and the backup serves the VIP with the same healthy table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylvs.lab import VIP, Lab
from tests.lab.conftest import lab_id, need_root

pytestmark = [pytest.mark.root, pytest.mark.slow]
PY = sys.executable

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


def wait(cond: Any, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Pair:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def start(self) -> None:
        for rs in ("rs1", "rs2"):
            r = self.lab.run(rs, [PY, "-m", "pylvs.cli.main", "rs-setup", "--vip", VIP, "--mode", "dr"])
            assert r.returncode == 0, r.stderr
        for host, state, prio in (("director", "MASTER", 100), ("backup", "BACKUP", 90)):
            for key in ("net.ipv4.ip_forward=0", "net.ipv4.conf.all.send_redirects=0"):
                self.lab.run(host, ["sysctl", "-q", "-w", key], check=True)
            conf = self.tmp / f"{host}.conf"
            conf.write_text(CONF.format(state=state, priority=prio, vip=VIP))
            log = open(self.tmp / f"{host}.log", "w")  # noqa: SIM115 - lives with the process
            self.procs[host] = self.lab.popen(
                host, [PY, "-m", "pylvs.cli.main", "keepalived", "-n", "-l", "-f", str(conf),
                       "--dataplane", "packet", "--control-socket", self.sock(host)],
                stdout=log, stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)

    def sock(self, host: str) -> str:
        return str(self.tmp / f"{host}.sock")

    def log(self, host: str) -> str:
        return (self.tmp / f"{host}.log").read_text(errors="replace")

    def table(self, host: str) -> str:
        if not os.path.exists(self.sock(host)):
            return ""
        r = subprocess.run([PY, "-m", "pylvs.cli.ipvsadm", "-Ln", "--control-socket", self.sock(host)],
                           capture_output=True, text=True, timeout=30)
        return r.stdout

    def has_vip(self, host: str) -> bool:
        out = self.lab.run(host, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], timeout=10).stdout
        return f" {VIP}/" in out

    def curl(self, n: int) -> list[str]:
        bodies = []
        for _ in range(n):
            r = self.lab.run("client", ["curl", "-sS", "--max-time", "3", f"http://{VIP}/"], timeout=20)
            bodies.append(r.stdout.strip() if r.returncode == 0 else f"error {r.stderr.strip()}")
        return bodies


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    need_root()
    for tool in ("curl", "nft"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            pytest.skip(f"needs {tool}")
    lab = Lab(lab_id())
    try:
        lab.up()
        p = Pair(lab, tmp_path)
        try:
            p.start()
            yield p
        finally:
            p.stop()
    finally:
        lab.down()


def test_one_keepalived_conf_runs_the_seeds_director_pair(pair: Pair) -> None:
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
