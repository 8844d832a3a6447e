"""rs-setup and director-setup do SPEC.md §1.1 on real (namespaced) hosts, and undo it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylvs.hostsetup.plan import SetupError, director_plan, render, rs_plan
from pylvs.lab import Lab
from tests.lab.conftest import lab_id, need_root

VIP = "192.168.168.100"
SETUP = [sys.executable, "-m", "pylvs.hostsetup.cli"]


@pytest.fixture(scope="module")
def bare_lab() -> Iterator[Lab]:
    need_root()
    lab = Lab(lab_id(), servers=False)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def sysctl(lab: Lab, host: str, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    return lab.run(host, ["cat", path], check=True).stdout.strip()


def neighbour(lab: Lab, host: str, ip: str) -> str:
    """Make ``host`` resolve ``ip`` by ARP (a UDP datagram to it), then its neighbour entry."""
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.sendto(b'x', ({ip!r}, 9))\n"
        "time.sleep(1.5)\n"
    )
    lab.run(host, [sys.executable, "-c", code], check=True)
    return lab.run(host, ["ip", "neigh", "show", ip], check=True).stdout


def test_dry_run_prints_the_seed_commands() -> None:
    out = render(rs_plan(VIP, "dr"))
    assert out.splitlines() == [
        f"ip addr add {VIP}/32 dev lo label lo:0",
        f"ip route add {VIP}/32 dev lo",
        "sysctl -w net.ipv4.conf.lo.arp_ignore=1",
        "sysctl -w net.ipv4.conf.lo.arp_announce=2",
        "sysctl -w net.ipv4.conf.all.arp_ignore=1",
        "sysctl -w net.ipv4.conf.all.arp_announce=2",
    ]
    d = render(director_plan(f"{VIP}/24", "ens33")).splitlines()
    assert d[0] == "sysctl -w net.ipv4.ip_forward=0"
    assert "sysctl -w net.ipv4.conf.ens33.send_redirects=0" in d
    assert d[-1] == f"ip addr add {VIP}/24 dev ens33 label ens33:0"


def test_undo_dry_run_reverses_and_restores_defaults() -> None:
    out = render(director_plan(f"{VIP}/24", "eth0"), undo=True).splitlines()
    assert out[0] == f"ip addr del {VIP}/24 dev eth0"
    assert "sysctl -w net.ipv4.conf.all.send_redirects=1" in out


@given(st.text(max_size=40))
def test_bad_vip_is_a_clear_error(text: str) -> None:
    try:
        steps = rs_plan(text, "dr")
    except SetupError as exc:
        assert "--vip" in str(exc)
    else:
        assert steps[0].command().startswith("ip addr add ")


def test_rs_setup_dr_then_undo(bare_lab: Lab) -> None:
    lab = bare_lab
    res = lab.run("rs1", [*SETUP, "rs-setup", "--vip", VIP, "--mode", "dr"])
    assert res.returncode == 0, res.stderr
    try:
        addrs = lab.run("rs1", ["ip", "-4", "-o", "addr", "show", "dev", "lo"], check=True).stdout
        assert f"{VIP}/32" in addrs and "lo:0" in addrs
        route = lab.run("rs1", ["ip", "-4", "route", "show", f"{VIP}/32"], check=True).stdout
        assert "dev lo" in route
        assert sysctl(lab, "rs1", "net.ipv4.conf.lo.arp_ignore") == "1"
        assert sysctl(lab, "rs1", "net.ipv4.conf.all.arp_announce") == "2"
        # applying twice is not an error
        again = lab.run("rs1", [*SETUP, "rs-setup", "--vip", VIP, "--mode", "dr"])
        assert again.returncode == 0, again.stderr
    finally:
        undo = lab.run("rs1", [*SETUP, "rs-setup", "--vip", VIP, "--mode", "dr", "--undo"])
    assert undo.returncode == 0, undo.stderr
    addrs = lab.run("rs1", ["ip", "-4", "-o", "addr", "show", "dev", "lo"], check=True).stdout
    assert VIP not in addrs
    assert sysctl(lab, "rs1", "net.ipv4.conf.all.arp_ignore") == "0"


def test_only_the_director_answers_arp_for_the_vip(bare_lab: Lab) -> None:
    lab = bare_lab
    dev_args = ["--vip", f"{VIP}/24", "--dev", "eth0"]
    for rs in ("rs1", "rs2"):
        r = lab.run(rs, [*SETUP, "rs-setup", "--vip", VIP, "--mode", "dr"])
        assert r.returncode == 0, r.stderr
    try:
        # real servers hold the VIP but stay silent: nobody answers yet
        assert "lladdr" not in neighbour(lab, "client", VIP)
        r = lab.run("director", [*SETUP, "director-setup", *dev_args])
        assert r.returncode == 0, r.stderr
        assert sysctl(lab, "director", "net.ipv4.conf.eth0.send_redirects") == "0"
        assert sysctl(lab, "director", "net.ipv4.ip_forward") == "0"
        lab.run("client", ["ip", "neigh", "flush", "all"])
        assert f"lladdr {lab.mac('director')}" in neighbour(lab, "client", VIP)
    finally:
        lab.run("director", [*SETUP, "director-setup", *dev_args, "--undo"])
        for rs in ("rs1", "rs2"):
            lab.run(rs, [*SETUP, "rs-setup", "--vip", VIP, "--mode", "dr", "--undo"])
    addrs = lab.run("director", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"], check=True).stdout
    assert VIP not in addrs
    assert sysctl(lab, "director", "net.ipv4.conf.eth0.send_redirects") == "1"


def test_setup_on_missing_interface_fails_cleanly(bare_lab: Lab) -> None:
    r = bare_lab.run("director", [*SETUP, "director-setup", "--vip", f"{VIP}/24", "--dev", "nosuch0"])
    assert r.returncode == 1
    assert "nosuch0" in r.stderr and "Traceback" not in r.stderr


VIP6 = "2001:db8:168::100"


def test_ipv6_vip_plans() -> None:
    assert render(rs_plan(VIP6, "dr")).splitlines() == [f"ip addr add {VIP6}/128 dev lo"]
    assert render(rs_plan(f"{VIP6}/128", "tun")) == f"ip addr add {VIP6}/128 dev lo\n"
    with pytest.raises(SetupError, match="/128"):
        rs_plan(f"{VIP6}/64", "dr")
    with pytest.raises(SetupError, match="IPv6"):
        rs_plan("2001:db8::zz", "dr")
    d = render(director_plan(f"{VIP6}/64", "eth0")).splitlines()
    assert d == ["sysctl -w net.ipv6.conf.all.forwarding=0", f"ip addr add {VIP6}/64 dev eth0"]
    r = subprocess.run([*SETUP, "rs-setup", "--vip", VIP6, "--mode", "tun", "--dry-run"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == (
        "# then: IPv6-in-IPv6 decapsulator on TUN device pltun6 (raw IPv6 socket, next header 41)")


def test_real_servers_holding_an_ipv6_vip_do_not_answer_solicitations(bare_lab: Lab) -> None:
    """IPv6's answer to arp_ignore: the VIP on lo is not answered for on eth0, so only the
    director (the packet plane) will answer for it."""
    lab = bare_lab
    for rs in ("rs1", "rs2"):
        r = lab.run(rs, [*SETUP, "rs-setup", "--vip", VIP6, "--mode", "dr"])
        assert r.returncode == 0, r.stderr
    try:
        addrs = lab.run("rs1", ["ip", "-6", "-o", "addr", "show", "dev", "lo"], check=True).stdout
        assert f"{VIP6}/128" in addrs
        code = ("import socket, time\n"
                "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
                f"s.sendto(b'x', ({VIP6!r}, 9))\n"
                "time.sleep(2)\n")
        lab.run("client", [sys.executable, "-c", code], check=True)
        neigh = lab.run("client", ["ip", "-6", "neigh", "show", VIP6], check=True).stdout
        assert "lladdr" not in neigh, neigh
    finally:
        for rs in ("rs1", "rs2"):
            lab.run(rs, [*SETUP, "rs-setup", "--vip", VIP6, "--mode", "dr", "--undo"])
    addrs = lab.run("rs1", ["ip", "-6", "-o", "addr", "show", "dev", "lo"], check=True).stdout
    assert VIP6 not in addrs
