"""IPv6 services through the packet plane with real traffic in the namespace lab: DR, NAT and
TUN, set up with the seed's commands (``pylvs rs-setup --vip 2001:db8:168::100``, ``pylvsadm
-A -t [2001:db8:168::100]:80``), client and real servers at the kernel's offload defaults.
curl -6 with the bracketed VIP, a UDP exchange, fragmented UDP datagrams and 20 MB each way
checked byte for byte; the receiving kernels' checksum-error counters (/proc/net/snmp6 and the
TCP line of /proc/net/snmp) stay at zero."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from pylvs.lab.lvs import SETUP
from tests.dataplane.packet.conftest import Cluster, cluster_fixture
from tests.dataplane.packet.test_offload_traffic import SERVER

VIP6 = "2001:db8:168::100"
PORT = 9000
MB = 20
NGINX = ("this is nginx1", "this is nginx2")
_GEN = "import random\ndef block(i): return random.Random(i).randbytes(1 << 20)\n"
CLIENT6 = _GEN + (
    "import hashlib, socket, sys\n"
    "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)\n"
    "c.sendall(sys.argv[3].encode())\n"
    "if sys.argv[3] == 'D':\n"
    "    h = hashlib.sha256()\n"
    "    while data := c.recv(1 << 20): h.update(data)\n"
    "    print(h.hexdigest())\n"
    "else:\n"
    "    for i in range(int(sys.argv[4])): c.sendall(block(i))\n"
    "    c.shutdown(socket.SHUT_WR)\n"
    "    print(c.recv(100).decode())\n"
)
# the data server of the IPv4 tests, listening on IPv6 as well
SERVER6 = SERVER.replace("socket.create_server(('0.0.0.0', int(sys.argv[1])))",
                         "socket.create_server(('::', int(sys.argv[1])), "
                         "family=socket.AF_INET6, dualstack_ipv6=True)")
ECHO6 = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    data, peer = s.recvfrom(65535)\n"
    "    ok = data == bytes(i & 0xFF for i in range(len(data)))\n"
    "    s.sendto(f'{sys.argv[3]}:{len(data)}:{ok}'.encode(), peer)\n"
)
ASK6 = (
    "import socket, sys\n"
    "for _ in range(int(sys.argv[4])):\n"
    "    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "    s.settimeout(2)\n"
    "    s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "    for attempt in range(5):  # UDP clients retransmit, as a resolver does; EMSGSIZE:\n"
    "        try:  # a packet-too-big lowered the path MTU, the next send fits it\n"
    "            s.send(bytes(i & 0xFF for i in range(int(sys.argv[3]))))\n"
    "            print(s.recv(100).decode(), flush=True)\n"
    "            break\n"
    "        except OSError:\n"
    "            pass\n"
    "    s.close()\n"
)


def expected_digest() -> str:
    import hashlib
    import random

    h = hashlib.sha256()
    for i in range(MB):
        h.update(random.Random(i).randbytes(1 << 20))
    return h.hexdigest()


@pytest.fixture(scope="module", params=["dr", "nat", "tun"])
def cluster6(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    mode = request.param
    for c in cluster_fixture(mode):
        lab = c.lab
        c.rips6 = tuple(lab.addr6(h) for h in c.real_servers)  # type: ignore[attr-defined]
        done = []
        try:
            for h in c.real_servers if mode != "nat" else ():
                argv = [*SETUP, "rs-setup", "--vip", VIP6, "--mode", mode]
                if mode == "dr":
                    r = lab.run(h, argv)
                    assert r.returncode == 0, r.stderr
                else:  # the IPv6-in-IPv6 decapsulator stays in the foreground
                    p = lab.popen(h, argv, stdout=subprocess.PIPE, text=True)
                    c.procs.append(p)
                    assert p.stdout is not None
                    assert "IPv6-in-IPv6 decapsulator on pltun6 ready" in p.stdout.readline()
                done.append(h)
            for h in c.real_servers:
                p = lab.popen(h, [sys.executable, "-c", SERVER6, str(PORT), str(MB)],
                              stdout=subprocess.PIPE, text=True)
                c.procs.append(p)
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            yield c
        finally:
            for h in done:
                if mode == "dr":
                    lab.run(h, [*SETUP, "rs-setup", "--vip", VIP6, "--mode", mode, "--undo"])


def service6(c: Cluster, proto: str = "-t", port: int = 80, rport: int = 80) -> None:
    c.adm("-C")
    c.adm("-A", proto, f"[{VIP6}]:{port}", "-s", "rr")
    for rip in c.rips6:  # type: ignore[attr-defined]
        c.adm("-a", proto, f"[{VIP6}]:{port}", "-r", f"[{rip}]:{rport}", c.flag)


def csum_errors(c: Cluster, host: str) -> dict[str, int]:
    """Icmp6/Udp6 InCsumErrors (/proc/net/snmp6) and the TCP InCsumErrors, which IPv4 and
    IPv6 share (/proc/net/snmp)."""
    out: dict[str, int] = {}
    for line in c.lab.run(host, ["cat", "/proc/net/snmp6"], timeout=10).stdout.splitlines():
        name, _, value = line.partition(" ")
        if name in ("Icmp6InCsumErrors", "Udp6InCsumErrors", "UdpLite6InCsumErrors"):
            out[name] = int(value)
    lines = c.lab.run(host, ["cat", "/proc/net/snmp"], timeout=10).stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("Tcp:"):
            keys = names.split()
            out["TcpInCsumErrors"] = int(values.split()[keys.index("InCsumErrors")])
    return out


def assert_no_checksum_errors(c: Cluster) -> None:
    want = {"Icmp6InCsumErrors": 0, "Udp6InCsumErrors": 0, "UdpLite6InCsumErrors": 0,
            "TcpInCsumErrors": 0}
    for h in (*c.real_servers, "client"):
        assert csum_errors(c, h) == want, h
    drops = c.status()["dataplane"]["drops"]
    assert "bad_l4_checksum" not in drops and "bad_gso" not in drops, drops


def test_curl_to_the_bracketed_vip(cluster6: Cluster) -> None:
    c = cluster6
    service6(c)
    assert f"TCP  [{VIP6}]:80 rr" in c.adm("-Ln")
    bodies = []
    for _ in range(4):
        r = c.lab.run("client", ["curl", "-6", "-g", "-sS", "--max-time", "5",
                                 f"http://[{VIP6}]/"], timeout=20)
        assert r.returncode == 0, r.stderr + c.director_log()[-2000:]
        bodies.append(r.stdout.strip())
    assert sorted(bodies) == sorted(NGINX * 2)
    dp = c.status()["dataplane"]
    assert dp["ipv6_forwarded"] > 0
    # the client reached the VIP at the director's MAC: its solicitation was answered there
    neigh = c.lab.run("client", ["ip", "-6", "neigh", "show", VIP6], timeout=10).stdout
    assert c.lab.mac("director").lower() in neigh.lower(), neigh
    assert dp["nd_replies"] >= 1
    assert_no_checksum_errors(c)


def test_udp_exchange_and_fragmented_datagrams(cluster6: Cluster) -> None:
    c = cluster6
    service6(c, "-u", 5454, 5454)
    bind = "::" if c.mode == "nat" else VIP6
    for i, h in enumerate(c.real_servers):
        p = c.lab.popen(h, [sys.executable, "-c", ECHO6, bind, "5454", f"rs{i + 1}"],
                        stdout=subprocess.PIPE, text=True)
        c.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    before = c.status()["dataplane"]
    for size in (100, 4000):
        r = c.lab.run("client", [sys.executable, "-c", ASK6, VIP6, "5454", str(size), "4"],
                      timeout=60)
        assert r.returncode == 0, r.stderr
        assert sorted(r.stdout.split()) == [f"rs1:{size}:True", f"rs1:{size}:True",
                                            f"rs2:{size}:True", f"rs2:{size}:True"], r.stdout
    dp = c.status()["dataplane"]
    # 4000 bytes leave the client in three fragments each: every one followed its first
    assert dp["fragments_forwarded"] - before["fragments_forwarded"] >= 12, dp
    assert dp["fragmented_datagrams"] - before["fragmented_datagrams"] >= 4, dp
    assert_no_checksum_errors(c)


@pytest.mark.parametrize("direction", ["D", "U"], ids=["download", "upload"])
def test_20_mb_arrive_byte_for_byte(cluster6: Cluster, direction: str) -> None:
    c = cluster6
    service6(c, port=PORT, rport=PORT)
    argv = [sys.executable, "-c", CLIENT6, VIP6, str(PORT), direction]
    if direction == "U":
        argv.append(str(MB))
    r = c.lab.run("client", argv, timeout=300)
    assert r.returncode == 0, r.stderr + c.director_log()[-2000:]
    assert r.stdout.strip() == expected_digest()
    assert_no_checksum_errors(c)
    if direction == "U" or c.mode == "nat":  # TSO super-frames came through the director
        assert c.status()["dataplane"]["gso_split"] > 0
