"""IPv6 services through the XDP plane end to end in the namespace lab: curl -6 to the bracketed
VIP, a keep-alive connection whose later requests the program forwards (its counters say so), a
transfer checked byte for byte, and the receivers' checksum-error counters at zero.

The lab's veths get the program in generic mode (``auto``: see ``xdp.plane``), where only DR
flows are the program's; IPv6 NAT and TUN flows must then stay on the Python path (the C table
behind it is IPv4-only), which these tests assert too. Native mode is not tested end to end
here: on veth it needs an XDP program on the peers and, for NAT/TUN, senders without checksum
offload, and the lab leaves every host other than the director as a fresh host has it; the
program's IPv6 NAT/TUN output is checked byte for byte in ``test_flows6.py``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from pylvs.lab import Lab
from pylvs.lab.lvs import SETUP
from tests.dataplane.packet.conftest import Cluster, KeepAlive, one_handshake
from tests.dataplane.packet.test_ipv6_traffic import (
    CLIENT6,
    MB,
    NGINX,
    PORT,
    SERVER6,
    VIP6,
    assert_no_checksum_errors,
    expected_digest,
    service6,
)
from tests.dataplane.xdp.test_lab import (
    opened_at_syn,
    xdp_counters,
    xdp_forwarded,
    xdp_ready,
)
from tests.lab.conftest import lab_id


def prepare6(c: Cluster) -> list[str]:
    """IPv6 on the real servers (the seed's rs-setup with the IPv6 VIP, the data server on
    ``::``); the hosts whose DR set-up must be undone."""
    lab, mode = c.lab, c.mode
    c.rips6 = tuple(lab.addr6(h) for h in c.real_servers)  # type: ignore[attr-defined]
    done = []
    for h in c.real_servers if mode != "nat" else ():
        argv = [*SETUP, "rs-setup", "--vip", VIP6, "--mode", mode]
        if mode == "dr":
            r = lab.run(h, argv)
            assert r.returncode == 0, r.stderr
            done.append(h)
        else:  # the IPv6-in-IPv6 decapsulator stays in the foreground
            p = lab.popen(h, argv, stdout=subprocess.PIPE, text=True)
            c.procs.append(p)
            assert p.stdout is not None
            assert "IPv6-in-IPv6 decapsulator on pltun6 ready" in p.stdout.readline()
    for h in c.real_servers:
        p = lab.popen(h, [sys.executable, "-c", SERVER6, str(PORT), str(MB)],
                      stdout=subprocess.PIPE, text=True)
        c.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return done


def run_cluster(lab: Lab, mode: str) -> Iterator[Cluster]:
    c = Cluster(lab, mode)
    c.dataplane = "xdp"
    done: list[str] = []
    try:
        lab.up()
        c.start()
        done = prepare6(c)
        yield c
    finally:
        for h in done:
            lab.run(h, [*SETUP, "rs-setup", "--vip", VIP6, "--mode", mode, "--undo"])
        c.stop()
        lab.down()


@pytest.fixture(scope="module", params=["dr", "nat", "tun"])
def cluster6(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    xdp_ready()
    yield from run_cluster(Lab(lab_id()), request.param)


def keepalive6(c: Cluster, port: int = 80) -> KeepAlive:
    """``KeepAlive`` (one HTTP/1.1 connection, a page per ``get``) to the IPv6 VIP."""
    ka = KeepAlive.__new__(KeepAlive)
    ka.p = c.lab.popen("client", [sys.executable, "-c", KeepAlive.CODE, VIP6, str(port)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    c.procs.append(ka.p)
    return ka


def program_takes(c: Cluster) -> bool:
    """DR flows are the program's in either attach mode, NAT and TUN only in native mode."""
    xdp = c.status()["dataplane"]["xdp"]
    return c.mode == "dr" or "generic" not in xdp["attached"].values()


def curl6(c: Cluster) -> str:
    r = c.lab.run("client", ["curl", "-6", "-g", "-sS", "--max-time", "5",
                             f"http://[{VIP6}]/"], timeout=20)
    assert r.returncode == 0, r.stderr + c.director_log()[-2000:]
    return r.stdout.strip()


def check_keepalive(c: Cluster, requests: int = 20) -> None:
    before, dp_before = xdp_counters(c), c.status()["dataplane"]
    ka = keepalive6(c)
    try:
        answers = {ka.get() for _ in range(requests)}
    finally:
        ka.close()
    assert len(answers) == 1 and answers <= set(NGINX), answers
    after, dp = xdp_counters(c), c.status()["dataplane"]
    if program_takes(c):
        # after the handshake, each request (and its ACKs) travels through the program
        assert xdp_forwarded(before, after) >= requests, (before, after,
                                                          c.director_log()[-2000:])
    else:
        assert xdp_forwarded(before, after) == 0, (before, after)
        assert dp["xdp"]["kinds"] == [0] and dp["xdp"]["flows"] == 0, dp["xdp"]
        # every request went through the Python path instead
        assert dp["ipv6_forwarded"] - dp_before["ipv6_forwarded"] >= requests, dp


def test_curl_and_a_keepalive_connection_through_the_program(cluster6: Cluster) -> None:
    c = cluster6
    service6(c)
    assert f"TCP  [{VIP6}]:80 rr" in c.adm("-Ln")
    assert sorted(curl6(c) for _ in range(4)) == sorted(NGINX * 2)
    check_keepalive(c)
    assert_no_checksum_errors(c)


def test_a_download_arrives_byte_for_byte(cluster6: Cluster) -> None:
    c = cluster6
    service6(c, port=PORT, rport=PORT)
    before = xdp_counters(c)
    r = c.lab.run("client", [sys.executable, "-c", CLIENT6, VIP6, str(PORT), "D"], timeout=300)
    assert r.returncode == 0, r.stderr + c.director_log()[-2000:]
    assert r.stdout.strip() == expected_digest()
    after = xdp_counters(c)
    # a download: DR's client-to-server direction carries the client's ACKs (fewer than the
    # segments: GRO on the client), and the program forwards all but the handshake and close
    if program_takes(c):
        fwd = xdp_forwarded(before, after)
        assert fwd > 50 and fwd >= 0.75 * (after["rx"] - before["rx"]), (before, after)
    else:
        assert xdp_forwarded(before, after) == 0, (before, after)
    assert_no_checksum_errors(c)


def test_an_ipv6_handshake_ack_stays_in_the_kernel_where_the_program_takes_the_flow(
        cluster6: Cluster) -> None:
    """IPv6: the core schedules the SYN and, where the flow is the program's (DR here), installs
    it with the SYN, so the client's ACK is forwarded by the program and reported, and the
    entry is ESTABLISHED; NAT and TUN (the Python path's in generic mode) take the ACK up."""
    c = cluster6
    service6(c)
    assert sorted(curl6(c) for _ in range(2)) == sorted(NGINX)  # next hops known
    before, after, opened = one_handshake(c, VIP6, xdp_counters, opened_at_syn)
    # the SYN, and in NAT the server's SYN-ACK, which comes back through the director
    handshake = 2 if c.mode == "nat" else 1
    assert after["pass_control"] - before["pass_control"] == handshake, (before, after)
    if program_takes(c):
        assert after["pass_no_flow"] == before["pass_no_flow"], (before, after)
        assert xdp_forwarded(before, after) == 1, (before, after)
        assert opened == 1
    else:
        assert after["pass_no_flow"] - before["pass_no_flow"] == 1, (before, after)
        assert opened == 0


def test_mh_over_ipv6_is_scheduled_in_the_program_where_it_may_be(cluster6: Cluster) -> None:
    """An IPv6 mh service (mh-port): in DR the program schedules its new connections once the
    director has its servers' MACs (ND), and the core lists them; NAT (the reply entry is the
    core's) and TUN (not the program's flows in generic mode) stay with the core."""
    c = cluster6
    c.adm("-C")
    c.adm("-A", "-t", f"[{VIP6}]:80", "-s", "mh", "-b", "mh-port")
    for rip in c.rips6:  # type: ignore[attr-defined]
        c.adm("-a", "-t", f"[{VIP6}]:80", "-r", f"[{rip}]:80", c.flag)
    xdp = c.status()["dataplane"]["xdp"]
    if c.mode != "dr":
        assert xdp["mh_services"] == 0, xdp
        assert {curl6(c) for _ in range(6)} <= set(NGINX)
        assert xdp_counters(c).get("mh_scheduled", 0) == 0
        return
    assert xdp["mh_services"] == 1, xdp
    for _ in range(100):  # the first requests teach the director the MACs; a tick publishes them
        curl6(c)
        if xdp_counters(c).get("mh_scheduled", 0):
            break
    before = xdp_counters(c)
    bodies = [curl6(c) for _ in range(16)]
    assert set(bodies) == set(NGINX)  # mh-port spreads the client's ports over both
    after = xdp_counters(c)
    assert after["mh_scheduled"] - before["mh_scheduled"] >= 16, (before, after)
    listing = c.adm("-Lnc")
    assert listing.count(f"[{VIP6}]:80") >= 16, listing
