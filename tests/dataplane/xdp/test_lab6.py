"""IPv6 services through the XDP plane end to end in the namespace lab: curl -6 to the bracketed
VIP, a keep-alive connection whose later requests the program forwards (its counters say so), a
transfer checked byte for byte, and the receivers' checksum-error counters at zero.

The lab's veths get the program in generic mode (``auto``: see ``xdp.plane``), where only DR
flows are the program's; IPv6 NAT and TUN flows must then stay on the Python path (the C table
behind it is IPv4-only), which these tests assert too. ``test_native_nat`` runs the director
with ``--xdp-mode native`` (the lab's bridge-side veth peers get a pass-through XDP program, as
``bench/bench_xdp.py``'s native rows do), where IPv6 NAT flows are the program's; its senders
compute full checksums, as hosts behind a wire do (see the fixture)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from pylvs.lab import Lab
from pylvs.lab.lvs import SETUP
from tests.dataplane.packet.conftest import Cluster, KeepAlive
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
from tests.dataplane.xdp.test_lab import xdp_counters, xdp_forwarded, xdp_ready
from tests.lab.conftest import lab_id


class NativeLab(Lab):
    """A lab whose packet director is started with ``--xdp-mode native``."""

    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        if "pylvs.director.serve_packet" in argv:
            # the test's senders have offloads off: the operator's "all" is true here
            argv = [*argv, "--xdp-mode", "native", "--xdp-flows", "all"]
        return super().popen(host, argv, **kw)


PASS_PROGRAM = """struct xdp_md;
__attribute__((section("xdp"), used)) int xdp_pass(struct xdp_md *ctx) { return 2; /* PASS */ }
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
"""


def peer_pass_programs(lab: Lab, obj: str, on: bool) -> None:
    """Native XDP on a veth sends (XDP_TX, redirect) only to a peer that runs XDP itself
    (``veth_xdp_flush``): the director's bridge-side peers get a program passing everything."""
    for port in ("director0", "director1"):
        argv = ["ip", "link", "set", "dev", port, "xdpdrv"]
        argv += ["obj", obj, "sec", "xdp"] if on else ["off"]
        r = lab.run("lan", argv)
        if on and r.returncode != 0:
            raise RuntimeError(f"pass-through XDP on {port}: {r.stderr.strip()}")


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


@pytest.fixture
def native_nat6() -> Iterator[Cluster]:
    xdp_ready()
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("needs clang (the peers' pass-through program)")
    with tempfile.TemporaryDirectory(prefix="pylvs-xdp-pass-") as tmp:
        src, obj = os.path.join(tmp, "pass.c"), os.path.join(tmp, "pass.o")
        with open(src, "w") as f:
            f.write(PASS_PROGRAM)
        subprocess.run([clang, "-O2", "-target", "bpf", "-c", src, "-o", obj], check=True)
        # Native XDP on a veth sees the frame the peer's stack sent; with TX checksum offload
        # its L4 checksum is only the pseudo-header sum (CHECKSUM_PARTIAL), the hazard that
        # keeps NAT/TUN out of generic mode (measured here: the receivers count TcpInCsumErrors
        # and the connection stalls). Senders off a wire never do that, so the client and the
        # NAT real servers compute their checksums in full, as a NIC's peers would.
        lab = NativeLab(lab_id(), offloads_off=("client", "nat1", "nat2"))
        lab.up()
        try:
            peer_pass_programs(lab, obj, True)
            yield from run_cluster(lab, "nat")
        finally:
            peer_pass_programs(lab, obj, False)
            lab.down()


def test_native_nat(native_nat6: Cluster) -> None:
    """Native mode: IPv6 NAT flows, both directions, are the program's."""
    c = native_nat6
    xdp = c.status()["dataplane"]["xdp"]
    assert set(xdp["attached"].values()) == {"native"}, xdp
    assert xdp["kinds"] == [0, 1, 2, 3]
    service6(c)
    assert sorted(curl6(c) for _ in range(2)) == sorted(NGINX)
    check_keepalive(c)
    service6(c, port=PORT, rport=PORT)
    before = xdp_counters(c)
    r = c.lab.run("client", [sys.executable, "-c", CLIENT6, VIP6, str(PORT), "D"], timeout=300)
    assert r.returncode == 0, r.stderr + c.director_log()[-2000:]
    assert r.stdout.strip() == expected_digest()
    after = xdp_counters(c)
    fwd = xdp_forwarded(before, after)  # both directions: the data and the client's ACKs
    assert fwd > 200 and fwd >= 0.75 * (after["rx"] - before["rx"]), (before, after)
    assert_no_checksum_errors(c)
