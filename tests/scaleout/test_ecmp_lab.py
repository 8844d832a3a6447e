"""Scale-out in namespaces: a router running BIRD spreads flows by ECMP over active directors,
each announcing the VIP with ``pylvs scaleout`` (BIRD as its speaker) while it can serve it.

- the router installs one next hop per healthy director; a director loses it on quorum loss,
  on drain, when its data plane dies, and (BFD / hold time) when it stops answering at all;
- long-lived connections (streaming echo checked byte for byte, keep-alive HTTP) survive
  losing one of three directors and adding one back, with ``mh`` + ``sloppy_tcp``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.control.client import ControlClient
from pylvs.core.model import DestSpec, ForwardingMethod, ServiceKey
from pylvs.lab import router
from pylvs.lab.topology import Lab
from pylvs.scaleout.cli import request


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    for tool in ("ip", "bird", "birdc"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (iproute2, bird2: scripts/system-deps.sh installs them)")


def _cluster(n: int, sloppy: bool = True) -> Iterator[router.ECMPCluster]:
    _need()
    lab = Lab(f"e{os.getpid() % 1000}{random.randrange(36**2):x}"[:8], hosts=router.ecmp_hosts(4))
    ecmp = router.ECMPCluster(lab, n, sloppy=sloppy)
    try:
        lab.up()
        ecmp.start()
        ecmp.wait_next_hops({router.director_addr(k) for k in range(1, n + 1)}, timeout=30)
        yield ecmp
    finally:
        ecmp.stop()
        lab.down()


@pytest.fixture
def three() -> Iterator[router.ECMPCluster]:
    yield from _cluster(3)


def _weights(ecmp: router.ECMPCluster, k: int, weight: int) -> None:
    with ControlClient(ecmp.control_socket(k)) as c:
        for port in router.PORTS:
            key = ServiceKey.inet(6, router.ECMP_VIP, port)
            for rs in router.REAL_SERVERS:
                c.edit_dest(key, DestSpec(ipaddress.ip_address(ecmp.lab.addr(rs)), port, ForwardingMethod.DROUTE,
                                          weight))


def _scaleout(ecmp: router.ECMPCluster, k: int, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylvs.cli.main", "scaleout", action,
                           "--socket", ecmp.speaker_socket(k)], capture_output=True, text=True,
                          timeout=30, check=False)


def test_one_next_hop_per_healthy_director_and_each_way_of_losing_it(
        three: router.ECMPCluster) -> None:
    ecmp = three
    d1, d2, d3 = (router.director_addr(k) for k in (1, 2, 3))
    lab = ecmp.lab
    out = lab.run("router", ["ip", "route", "show", router.ECMP_VIP]).stdout
    assert out.count("nexthop via") == 3, out
    assert "this is nginx" in lab.curl(f"http://{router.ECMP_VIP}/")
    # quorum: every real server at weight 0 on dir1 -> dir1 withdraws; back -> announced again
    _weights(ecmp, 1, 0)
    assert ecmp.wait_next_hops({d2, d3}, timeout=5) < 3
    _weights(ecmp, 1, 1)
    ecmp.wait_next_hops({d1, d2, d3}, timeout=10)
    # the speaker polls while the weights change one service at a time: its withdraw names the
    # services that had lost quorum at that poll (port 80 first, 9000 too if both had)
    log = ecmp.log_text("dir1-scaleout.log")
    assert re.search(r"withdraw 10\.171\.0\.100/32: no quorum \(no real server with weight > 0\) "
                     r"for TCP 10\.171\.0\.100:80(, TCP 10\.171\.0\.100:9000)?$", log, re.M), log
    # drain and resume
    r = _scaleout(ecmp, 2, "drain")
    assert r.returncode == 0 and "draining: yes" in r.stdout and "announced: nothing" in r.stdout
    ecmp.wait_next_hops({d1, d3}, timeout=5)
    assert lab.curl(f"http://{router.ECMP_VIP}/")  # the others carry the traffic
    r = _scaleout(ecmp, 2, "resume")
    assert r.returncode == 0 and "announced: 10.171.0.100/32" in r.stdout
    ecmp.wait_next_hops({d1, d2, d3}, timeout=10)
    st = _scaleout(ecmp, 2, "status")
    assert "neighbor 10.170.0.1 AS 65000: Established" in st.stdout
    # the data plane dies: its speaker sees the director silent and withdraws (poll 0.5 s)
    ecmp.kill("dir3-director")
    assert ecmp.wait_next_hops({d1, d2}, timeout=5) < 2.0
    assert "withdraw 10.171.0.100/32: the director does not answer" in \
        ecmp.log_text("dir3-scaleout.log")
    # the whole director freezes (speaker and BIRD stopped, no FIN, no withdraw): the router
    # drops it by BFD (0.5 s) and at the latest by the BGP hold time (3 s)
    bird_pid = _bird_pid(ecmp, 2)
    os.kill(bird_pid, signal.SIGSTOP)
    try:
        gone = ecmp.wait_next_hops({d1}, timeout=10)
    finally:
        os.kill(bird_pid, signal.SIGCONT)
    assert gone < router.HOLD_TIME, gone
    ecmp.wait_next_hops({d1, d2}, timeout=20)  # it comes back by itself
    # a clean stop withdraws first, then stops (withdraw_wait 1 s)
    ecmp.kill("dir2-scaleout", signal.SIGTERM)
    ecmp.wait_next_hops({d1}, timeout=5)
    log = ecmp.log_text("dir2-scaleout.log")
    assert "withdraw 10.171.0.100/32: stopping" in log and "waiting 1 s for the routers" in log


def _bird_pid(ecmp: router.ECMPCluster, k: int) -> int:
    """The pid of director ``k``'s BIRD, as its speaker reports it."""
    pid = request(ecmp.speaker_socket(k), "status")["result"]["bird_pid"]
    assert isinstance(pid, int) and Path(f"/proc/{pid}/comm").read_text().strip() == "bird"
    return pid


def test_an_unreachable_neighbour_a_reset_and_an_unused_vip_are_logged_and_change_nothing(
        three: router.ECMPCluster, tmp_path: Path) -> None:
    """A second speaker on dir1 with a neighbour nobody answers and a VIP no service uses."""
    ecmp = three
    conf = ecmp.lab.state_dir / "dir1-extra-bgp.conf"
    conf.write_text(
        "pylvs_bgp {\n router_id 10.170.0.11\n local_as 65001\n"
        " neighbor 10.170.0.99 {\n  remote_as 65000\n  hold_time 3\n  connect_retry 1\n }\n"
        " vip 10.171.0.100 10.171.0.200\n poll_interval 0.5\n withdraw_wait 0\n}\n")
    sock = str(tmp_path / "extra.sock")
    log = ecmp.lab.state_dir / "dir1-extra.log"
    with open(log, "w") as fh:
        p = ecmp.lab.popen("dir1", [sys.executable, "-m", "pylvs.cli.main", "scaleout", "run",
                                    "--config", str(conf), "--control-socket",
                                    ecmp.control_socket(1), "--socket", sock, "--run-dir",
                                    str(tmp_path / "bird")], stdout=fh, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text = log.read_text()
            if "BGP neighbor 10.170.0.99 (AS 65000): " in text and "never announced" in text:
                break
            time.sleep(0.2)
        assert "not announcing 10.171.0.200/32: no virtual service uses it: never announced" \
            in text
        assert "announce 10.171.0.100/32" in text
        assert "BGP neighbor 10.170.0.99 (AS 65000): " in text  # Connect/Active, with why
        st = request(sock, "status")
        assert st["result"]["announced"] == ["10.171.0.100/32"]
        assert st["result"]["neighbors"][0]["state"] != "Established"
        # the director keeps forwarding, the router keeps its three next hops
        assert len(router.next_hops(ecmp.lab)) == 3
        assert ecmp.lab.curl(f"http://{router.ECMP_VIP}/")
        # the router resets dir1's session: a log line with BGP's reason, and it comes back
        r = ecmp.lab.run("router", ["birdc", "-s", ecmp.router_sock, "restart", "dir1"])
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        main_log = ""
        while time.monotonic() < deadline:
            main_log = ecmp.log_text("dir1-scaleout.log")
            if "last error: Received: " in main_log:
                break
            time.sleep(0.2)
        assert "BGP neighbor 10.170.0.1 (AS 65000): " in main_log
        assert "last error: Received: " in main_log  # e.g. Cease / Administrative reset
        ecmp.wait_next_hops({router.director_addr(k) for k in (1, 2, 3)}, timeout=20)
        assert ecmp.lab.curl(f"http://{router.ECMP_VIP}/")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)


def _hold(lab: Lab, seconds: float, echo: int = 30, http: int = 30) -> subprocess.Popen[str]:
    return lab.popen("client", [sys.executable, "-m", "pylvs.lab.router", "hold", "--echo",
                                str(echo), "--http", str(http), "--seconds", str(seconds)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     start_new_session=True)


def test_long_lived_connections_survive_losing_one_of_three_and_adding_one(
        three: router.ECMPCluster) -> None:
    ecmp = three
    lab = ecmp.lab
    echo = router.start_echo_servers(lab)
    try:
        for _ in range(3):  # neighbours learnt on every path before the count starts
            lab.curl(f"http://{router.ECMP_VIP}/")
        hold = _hold(lab, 14)
        time.sleep(4)
        ecmp.kill("dir2-director")  # the speaker withdraws; the router rehashes dir2's flows
        ecmp.wait_next_hops({router.director_addr(1), router.director_addr(3)}, timeout=5)
        time.sleep(3)
        ecmp.start_director(4)  # a fourth director joins: flows rehash onto it
        ecmp.wait_next_hops({router.director_addr(k) for k in (1, 3, 4)}, timeout=20)
        out, _ = hold.communicate(timeout=60)
        result = json.loads(out)
        assert result["echo_broken"] == 0 and result["http_broken"] == 0, result
        assert result["echo_ok"] == 30 and result["http_ok"] == 30
        assert result["bytes"] > 0 and result["requests"] > 30 * 10
        # the fourth director carried flows moved onto it (sloppy entries): every connection
        # was opened before it existed
        with ControlClient(ecmp.control_socket(4)) as c:
            moved = sum(s.stats.conns for s in c.get_services())
        assert moved > 0
    finally:
        for p in echo:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
