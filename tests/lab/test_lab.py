"""The lab builds the seed's cluster, serves the seed's pages, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pylvs.lab import Lab, LabError
from pylvs.lab.topology import NETNS_DIR
from tests.lab.conftest import lab_id, need_root


def test_real_servers_answer_with_their_names(lab: Lab) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    assert lab.curl("http://192.168.168.10/") == "this is nginx1\n"
    assert lab.curl("http://192.168.168.20/") == "this is nginx2\n"
    assert lab.curl("http://192.168.168.40:8080/index.jsp") == "dynamic page 1\n"
    assert lab.curl("http://192.168.168.90:8080/index.jsp") == "dynamic page 2\n"
    # the NAT real servers sit on the back network, reachable from the director only
    assert lab.curl("http://10.168.0.20/", host="director") == "this is nginx2\n"
    with pytest.raises(LabError):
        lab.curl("http://10.168.0.20/", host="client", timeout=1)


def test_hosts_have_ipv6_addresses_with_the_seeds_host_numbers(lab: Lab) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    assert lab.addr6("client") == "2001:db8:168::60"
    assert lab.addr6("director", "eth1") == "2001:db8:10:168::50"
    out = lab.run("rs1", ["ip", "-6", "-o", "addr", "show", "dev", "eth0"], check=True).stdout
    line = next(ln for ln in out.splitlines() if "2001:db8:168::10/64" in ln)
    assert "tentative" not in line  # no duplicate address detection to wait for
    # nginx (or the built-in server) listens on IPv6 too
    assert lab.curl("http://[2001:db8:168::10]/") == "this is nginx1\n"
    assert lab.curl("http://[2001:db8:168::90]:8080/") == "dynamic page 2\n"
    assert lab.curl("http://[2001:db8:10:168::20]/", host="director") == "this is nginx2\n"
    route = lab.run("nat1", ["ip", "-6", "route", "show", "default"], check=True).stdout
    assert "via 2001:db8:10:168::50" in route


def test_nat_real_servers_route_through_the_director(lab: Lab) -> None:
    out = lab.run("nat1", ["ip", "-4", "route", "show", "default"], check=True).stdout
    assert "via 10.168.0.50" in out


def test_root_namespace_gets_no_lab_address(lab: Lab) -> None:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True)
    assert "192.168.168." not in out.stdout
    assert "10.168.0." not in out.stdout


def test_up_is_idempotent(lab: Lab) -> None:
    before = lab.server_pids()
    lab.up()
    assert lab.server_pids() == before
    assert lab.is_up()


def test_two_labs_coexist(lab: Lab) -> None:
    other = Lab(lab_id(), servers=False)
    try:
        other.up()
        assert set(other.namespaces()).isdisjoint(lab.namespaces())
        assert lab.is_up() and other.is_up()
    finally:
        other.down()
    assert other.namespaces() == []
    assert lab.is_up()


def test_down_after_crash_removes_namespaces_and_processes() -> None:
    need_root()
    lid = lab_id()
    # a separate process builds the lab and dies without cleaning up
    code = f"from pylvs.lab import Lab; Lab({lid!r}).up(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    lab = Lab(lid)
    try:
        assert lab.is_up()
        sleeper = lab.popen("client", ["sleep", "300"])
        # wait until it runs inside the namespace (ip netns exec has switched and exec'd)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{sleeper.pid}/comm").read_text().strip() == "sleep":
                    break
            time.sleep(0.02)
        pids = [*lab.server_pids().values(), sleeper.pid]
    finally:
        lab.down()
    assert lab.namespaces() == []
    assert not any(n.startswith(lab.prefix) for n in os.listdir(NETNS_DIR))
    assert not lab.state_dir.exists()
    sleeper.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{p}/ns") for p in pids)


def test_cli_exec_runs_inside_a_host(lab: Lab) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pylvs.lab.cli", "--id", lab.lab_id,
         "exec", "rs2", "--", "ip", "-4", "-o", "addr", "show", "eth0"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "192.168.168.20/24" in res.stdout


def test_cli_status_reports_down_for_an_unknown_lab() -> None:
    need_root()
    res = subprocess.run(
        [sys.executable, "-m", "pylvs.lab.cli", "--id", lab_id(), "status"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 3
    assert ": down" in res.stdout


def test_bad_lab_id_is_refused() -> None:
    with pytest.raises(LabError, match="lab id"):
        Lab("Bad_Id!")


def test_cli_up_with_lvs_serves_the_seed_and_stays_idempotent() -> None:
    need_root()
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    lid = lab_id()
    cli = [sys.executable, "-m", "pylvs.lab.cli", "--id", lid]
    try:
        r = subprocess.run([*cli, "up", "--lvs", "dr"], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        assert "LVS-DR" in r.stdout
        again = subprocess.run([*cli, "up", "--lvs", "dr"], capture_output=True, text=True,
                               timeout=180)
        assert again.returncode == 0 and "already running" in again.stdout
        bodies = [
            subprocess.run([*cli, "exec", "client", "--", "curl", "-sS", "--max-time", "5",
                            "http://192.168.168.100/"], capture_output=True, text=True,
                           timeout=60).stdout.strip()
            for _ in range(4)
        ]
        assert sorted(bodies) == ["this is nginx1", "this is nginx1", "this is nginx2",
                                  "this is nginx2"]
        assert bodies[0] != bodies[1]
    finally:
        subprocess.run([*cli, "down"], capture_output=True, timeout=120)
    assert Lab(lid).namespaces() == []


@pytest.mark.root
def test_app_servers_can_run_real_tomcat_with_the_seeds_page() -> None:
    from pylvs.lab.tomcat import tomcat_available

    need_root()
    if not tomcat_available() or shutil.which("curl") is None:
        pytest.skip("needs Tomcat (Debian tomcat10) and curl")
    lab = Lab(lab_id(), use_tomcat=True)
    try:
        lab.up()
        assert lab.curl("http://192.168.168.40:8080/index.jsp").strip() == "dynamic page 1"
        assert lab.curl("http://192.168.168.90:8080/index.jsp").strip() == "dynamic page 2"
        assert lab.curl("http://192.168.168.10/").strip() == "this is nginx1"
    finally:
        lab.down()
