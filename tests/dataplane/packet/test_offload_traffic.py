"""Real traffic through the packet plane with every client and real server at the kernel's
offload defaults (TX checksum offload, TSO/GSO on their veths): frames reach the director with
partial checksums and as super-frames. DR, NAT and TUN, TCP (curl, 100 MB each way checked byte
for byte) and UDP; the receiving kernels' checksum-error counters must stay at zero."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.dataplane.packet.conftest import VIP, Cluster, cluster_fixture

PORT = 9000
MB = 100
NGINX = ("this is nginx1", "this is nginx2")

# the same 100 MB on both ends: block i of 1 MiB is random.Random(i).randbytes
_GEN = "import random\ndef block(i): return random.Random(i).randbytes(1 << 20)\n"
SERVER = _GEN + (
    "import hashlib, socket, sys, threading\n"
    "srv = socket.create_server(('0.0.0.0', int(sys.argv[1])))\n"
    "print('ready', flush=True)\n"
    "def serve(c):\n"
    "    with c:\n"
    "        cmd = c.recv(1)\n"
    "        if cmd == b'D':\n"
    "            for i in range(int(sys.argv[2])): c.sendall(block(i))\n"
    "        else:\n"
    "            h = hashlib.sha256()\n"
    "            while data := c.recv(1 << 20): h.update(data)\n"
    "            c.sendall(h.hexdigest().encode())\n"
    "while True:\n"
    "    c, _ = srv.accept()\n"
    "    threading.Thread(target=serve, args=(c,), daemon=True).start()\n"
)
CLIENT = _GEN + (
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


def expected_digest() -> str:
    h = hashlib.sha256()
    for i in range(MB):
        h.update(random.Random(i).randbytes(1 << 20))
    return h.hexdigest()


@pytest.fixture(scope="module", params=["dr", "nat", "tun", "nat/python"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    mode, _, path = request.param.partition("/")
    for c in cluster_fixture(mode, fastpath=path != "python"):
        servers = c.real_servers
        for h in servers:
            p = c.lab.popen(h, [sys.executable, "-c", SERVER, str(PORT), str(MB)],
                            stdout=subprocess.PIPE, text=True)
            c.procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield c


def csum_errors(cluster: Cluster, host: str) -> dict[str, int]:
    """The host kernel's InCsumErrors for TCP and UDP (/proc/net/snmp)."""
    text = cluster.lab.run(host, ["cat", "/proc/net/snmp"], timeout=10).stdout
    out: dict[str, int] = {}
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        proto, _, keys = names.partition(":")
        if proto in ("Tcp", "Udp") and "InCsumErrors" in keys.split():
            vals = values.split()[1:]
            out[proto] = int(vals[keys.split().index("InCsumErrors")])
    return out


def assert_no_checksum_errors(cluster: Cluster) -> None:
    for h in (*cluster.real_servers, "client"):
        assert csum_errors(cluster, h) == {"Tcp": 0, "Udp": 0}, h
    drops = cluster.status()["dataplane"]["drops"]
    assert "bad_l4_checksum" not in drops and "bad_gso" not in drops, drops


def offload_service(cluster: Cluster) -> None:
    cluster.adm("-C")
    cluster.adm("-A", "-t", f"{VIP}:{PORT}", "-s", "rr")
    cluster.adm("-A", "-t", f"{VIP}:80", "-s", "rr")
    for rip in cluster.rips:
        cluster.adm("-a", "-t", f"{VIP}:{PORT}", "-r", f"{rip}:{PORT}", cluster.flag)
        cluster.adm("-a", "-t", f"{VIP}:80", "-r", f"{rip}:80", cluster.flag)


def test_hosts_keep_the_kernels_offload_defaults(cluster: Cluster) -> None:
    if shutil.which("ethtool") is None:
        pytest.skip("needs ethtool")
    for h in ("client", *cluster.real_servers):
        k = cluster.lab.run(h, ["ethtool", "-k", "eth0"], timeout=10).stdout
        assert "tx-checksumming: on" in k and "tcp-segmentation-offload: on" in k, (h, k)


def test_curl_passes_with_partial_checksums(cluster: Cluster) -> None:
    offload_service(cluster)
    assert set(cluster.curl_many(4)) == set(NGINX)
    assert_no_checksum_errors(cluster)


def test_100_mb_download_arrives_byte_for_byte(cluster: Cluster) -> None:
    offload_service(cluster)
    r = cluster.lab.run("client", [sys.executable, "-c", CLIENT, VIP, str(PORT), "D"],
                        timeout=300)
    assert r.returncode == 0, r.stderr + cluster.director_log()[-2000:]
    assert r.stdout.strip() == expected_digest()
    assert_no_checksum_errors(cluster)
    if cluster.mode == "nat":  # the real server's TSO super-frames came through the director
        assert cluster.status()["dataplane"]["gso_split"] > 0


def test_100_mb_upload_arrives_byte_for_byte(cluster: Cluster) -> None:
    offload_service(cluster)
    r = cluster.lab.run("client", [sys.executable, "-c", CLIENT, VIP, str(PORT), "U", str(MB)],
                        timeout=300)
    assert r.returncode == 0, r.stderr + cluster.director_log()[-2000:]
    assert r.stdout.strip() == expected_digest()
    assert_no_checksum_errors(cluster)
    assert cluster.status()["dataplane"]["gso_split"] > 0  # the client's TSO super-frames


def test_udp_passes_with_partial_checksums(cluster: Cluster) -> None:
    cluster.adm("-C")
    cluster.adm("-A", "-u", f"{VIP}:5353", "-s", "rr")
    for rip in cluster.rips:
        cluster.adm("-a", "-u", f"{VIP}:5353", "-r", f"{rip}:5353", cluster.flag)
    procs = cluster.udp_responders(5353)
    try:
        answers = cluster.udp_ask(5353, 4)
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
    assert sorted(answers) == ["udp1", "udp1", "udp2", "udp2"]
    assert_no_checksum_errors(cluster)


BIG_UDP = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(2)\n"
    "s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "for attempt in range(5):\n"
    "    s.send(bytes(i & 0xFF for i in range(int(sys.argv[3]))))\n"
    "    try:\n"
    "        print(s.recv(100).decode(), flush=True)\n"
    "        break\n"
    "    except TimeoutError:\n"
    "        pass\n"
)
ECHO_LEN = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    data, peer = s.recvfrom(65535)\n"
    "    ok = data == bytes(i & 0xFF for i in range(len(data)))\n"
    "    s.sendto(f'{sys.argv[3]}:{len(data)}:{ok}'.encode(), peer)\n"
)


def test_fragmented_udp_datagrams_reach_one_real_server_whole(cluster: Cluster) -> None:
    """4000-byte datagrams leave the client in three IP fragments; each datagram's fragments
    must all reach the real server its first fragment was scheduled to (it reassembles)."""
    cluster.adm("-C")
    cluster.adm("-A", "-u", f"{VIP}:5454", "-s", "rr")
    for rip in cluster.rips:
        cluster.adm("-a", "-u", f"{VIP}:5454", "-r", f"{rip}:5454", cluster.flag)
    bind = "0.0.0.0" if cluster.mode == "nat" else VIP
    for i, h in enumerate(cluster.real_servers):
        p = cluster.lab.popen(h, [sys.executable, "-c", ECHO_LEN, bind, "5454", f"rs{i + 1}"],
                              stdout=subprocess.PIPE, text=True)
        cluster.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    answers = []
    for _ in range(4):
        r = cluster.lab.run("client", [sys.executable, "-c", BIG_UDP, VIP, "5454", "4000"],
                            timeout=30)
        answers.append(r.stdout.strip())
    assert sorted(answers) == ["rs1:4000:True", "rs1:4000:True", "rs2:4000:True",
                               "rs2:4000:True"], answers
    dp = cluster.status()["dataplane"]
    assert dp["fragments_forwarded"] >= 12 and dp["fragmented_datagrams"] >= 4, dp
    assert_no_checksum_errors(cluster)
