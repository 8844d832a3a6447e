"""A running packet-forwarding director in the namespace lab, per forwarding method.

``Cluster`` is ``pylvs.lab.LVSCluster`` (real servers prepared with ``rs-setup``, a director
running the ``packet`` data plane under the daemon, ``pylvsadm`` on its control socket, so tests
speak the seed's commands) plus what tests look at: captures, long-lived clients, UDP.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pylvs.dataplane.packet import codec
from pylvs.lab import Lab
from pylvs.lab.lvs import LVSCluster
from tests.lab.conftest import lab_id, need_root

VIP = "192.168.168.100"


class Cluster(LVSCluster):
    """``LVSCluster`` plus what the tests look at: many curls, captures, long-lived clients."""

    def __init__(self, lab: Lab, mode: str) -> None:
        super().__init__(lab, mode)
        self.sock = self.control_socket
        self.fastpath = True

    def director_log(self) -> str:
        return self.log_text(f"{self.director_host}.log")

    def adm(self, *args: str) -> str:
        return self.ipvsadm(*args)

    def service(self, sched: str = "rr", *extra: str, port: int = 80,
                weights: tuple[int, int] = (1, 1)) -> None:
        self.seed_service(sched, port, *extra, weights=weights)

    # -- traffic -----------------------------------------------------------------------------
    def curl_many(self, n: int, port: int = 80) -> list[str]:
        """``n`` requests from the client, each on a new connection; the bodies."""
        url = f"http://{VIP}:{port}/"
        out = []
        for _ in range(n):
            r = self.lab.run("client", ["curl", "-sS", "--max-time", "5", url], timeout=20)
            assert r.returncode == 0, f"curl {url}: {r.stderr}\n{self.director_log()[-2000:]}"
            out.append(r.stdout.strip())
        return out

    def udp_responders(self, port: int) -> list[subprocess.Popen[Any]]:
        """A UDP server on each real server answering its name; DR/TUN ones bind the VIP so
        the answer leaves from the VIP, as LVS-DR UDP services must."""
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind((sys.argv[1], int(sys.argv[2])))\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    data, peer = s.recvfrom(2048)\n"
            "    s.sendto(sys.argv[3].encode(), peer)\n"
        )
        hosts = ("nat1", "nat2") if self.mode == "nat" else ("rs1", "rs2")
        bind = "0.0.0.0" if self.mode == "nat" else VIP
        procs = []
        for i, h in enumerate(hosts):
            p = self.lab.popen(h, [sys.executable, "-c", code, bind, str(port), f"udp{i + 1}"],
                               stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            procs.append(p)
        return procs

    def udp_ask(self, port: int, n: int) -> list[str]:
        """``n`` datagrams to VIP:port, each from a new client port; the answers."""
        code = (
            "import socket, sys\n"
            "for _ in range(int(sys.argv[3])):\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "    s.settimeout(2)\n"
            "    s.connect((sys.argv[1], int(sys.argv[2])))\n"
            "    for attempt in range(5):  # UDP clients retransmit, as a resolver does\n"
            "        s.send(b'who')\n"
            "        try:\n"
            "            print(s.recv(100).decode(), flush=True)\n"
            "            break\n"
            "        except TimeoutError:\n"
            "            print('retry', file=sys.stderr, flush=True)\n"
            "    s.close()\n"
        )
        r = self.lab.run("client", [sys.executable, "-c", code, VIP, str(port), str(n)], timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    def keepalive_client(self, port: int = 80) -> KeepAlive:
        return KeepAlive(self, port)

    @contextlib.contextmanager
    def capture(self, host: str, iface: str = "eth0") -> Iterator[list[bytes]]:
        """Frames seen on ``host``'s interface while the block runs (tcpdump)."""
        if shutil.which("tcpdump") is None:
            pytest.skip("needs tcpdump")
        path = self.lab.state_dir / f"cap-{host}-{time.monotonic_ns()}.pcap"
        frames: list[bytes] = []
        p = self.lab.popen(host, ["tcpdump", "--immediate-mode", "-Z", "root", "-i", iface, "-n", "-U", "-s", "256", "-w", str(path),
                                  "tcp or udp"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stderr is not None
            line = p.stderr.readline()
            assert "listening" in line, line
            yield frames
            time.sleep(0.3)
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(10)
        frames.extend(read_pcap(path))


class KeepAlive:
    """One HTTP/1.1 connection from the client, asked for a page on demand."""

    CODE = (
        "import socket, sys\n"
        "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
        "for line in sys.stdin:\n"
        "    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "    buf = b''\n"
        "    while b'\\r\\n\\r\\n' not in buf: buf += s.recv(4096)\n"
        "    head, _, body = buf.partition(b'\\r\\n\\r\\n')\n"
        "    n = int([h.split(b':')[1] for h in head.split(b'\\r\\n') if h.lower().startswith(b'content-length')][0])\n"
        "    while len(body) < n: body += s.recv(4096)\n"
        "    print(body.decode().strip(), flush=True)\n"
    )

    def __init__(self, cluster: Cluster, port: int) -> None:
        self.p = cluster.lab.popen("client", [sys.executable, "-c", self.CODE, VIP, str(port)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cluster.procs.append(self.p)

    def get(self) -> str:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self) -> None:
        if self.p.stdin is not None:
            self.p.stdin.close()
        self.p.wait(10)


def read_pcap(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if len(data) < 24:
        return []
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off, frames = 24, []
    while off + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, off + 8)[0]
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


def tcp_frames(frames: list[bytes], src: str | None = None, dst: str | None = None,
               sport: int | None = None) -> list[tuple[bytes, bytes, int, int, int]]:
    """(src MAC, src IP, sport, dport, TCP flags) of the IPv4 TCP frames matching the filters."""
    out = []
    s = socket.inet_aton(src) if src else None
    d = socket.inet_aton(dst) if dst else None
    for f in frames:
        if codec.ethertype(f) != codec.ETH_P_IP:
            continue
        info = codec.parse_ipv4(f, verify_checksum=False)
        if isinstance(info, codec.Drop) or info[0] != codec.IPPROTO_TCP:
            continue
        if (s and info[1] != s) or (d and info[2] != d) or (sport is not None and info[3] != sport):
            continue
        out.append((f[6:12], info[1], info[3], info[4], info[5]))
    return out


def cluster_fixture(mode: str, fastpath: bool = True) -> Iterator[Cluster]:
    """The cluster in ``mode``; ``fastpath=False`` runs the director with the C hot path off
    (``PYLVS_PACKET_FASTPATH=0`` in its environment), so the pure-Python path is tested live."""
    need_root()
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    if shutil.which("nft") is None:
        pytest.skip("needs nftables (keeps the director's own stack off forwarded traffic)")
    lab = Lab(lab_id())
    c = Cluster(lab, mode)
    saved = os.environ.get("PYLVS_PACKET_FASTPATH")
    try:
        lab.up()
        os.environ["PYLVS_PACKET_FASTPATH"] = "1" if fastpath else "0"
        try:
            c.start()  # the director inherits the environment
        finally:
            if saved is None:
                os.environ.pop("PYLVS_PACKET_FASTPATH", None)
            else:
                os.environ["PYLVS_PACKET_FASTPATH"] = saved
        c.fastpath = fastpath
        yield c
    finally:
        c.stop()
        lab.down()


def run_in_namespace(prefix: str, setup: list[list[str]], script: str) -> Any:
    """Run ``script`` (Python printing one JSON line) in a network namespace of its own, after
    the ``setup`` commands there; the parsed line. The namespace goes in any case."""
    ns = f"{prefix}{os.getpid() % 10000}{random.randrange(100)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in setup:
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


HOLD = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
    "print('up', flush=True)\n"
    "sys.stdin.readline()\n"
)


def one_handshake(c: Cluster, vip: str, counters: Callable[[Cluster], dict[str, int]],
                  opened_at_syn: Callable[[Cluster], int]) -> tuple[dict[str, int],
                                                                     dict[str, int], int]:
    """Open one TCP connection to ``vip``:80 from the client and hold it until ``-Lnc`` lists it
    ESTABLISHED: the plane's ``counters`` before and after, and how many more flows it opened
    at a SYN meanwhile. Call it once the servers' next hops are known."""
    # earlier connections' last segments (a client's final ACK, after its FIN took the flow
    # out, goes up with no flow) must not land in the window measured
    before = counters(c)
    for _ in range(20):
        time.sleep(0.3)
        settled, before = before, counters(c)
        if settled == before:
            break
    opened = opened_at_syn(c)
    p = c.lab.popen("client", [sys.executable, "-c", HOLD, vip, "80"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    c.procs.append(p)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        established = ""
        for _ in range(60):
            conns = c.adm("-Lnc")
            established = "\n".join(ln for ln in conns.splitlines() if "ESTABLISHED" in ln)
            if established:
                break
            time.sleep(0.05)
        assert established, conns
        after = counters(c)
        opened = opened_at_syn(c) - opened
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)
    return before, after, opened
