"""Runs inside the test VM (tests/kernel/test_sched_vm.py): for every scheduler the kernel has,
the same table in kernel IPVS and in pylvs' Director, the same sequence of new TCP connections
(local clients from several source addresses, so hashing schedulers see repeats), and each
side's choice of real server. Prints ``{scheduler: {"kernel": [...], "pylvs": [...]}}``.

The kernel's choice is read from /proc/net/ip_vs_conn right after the client's SYN left (IPVS
schedules locally generated connections on the output hook); the real servers are addresses
routed to a dummy device, so the SYNs go nowhere and every connection stays in SYN_RECV, which
pylvs is told with the same SYN (``tcp_packet``)."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time
from typing import Any

from pylvs.core.conntrack import DIR_INPUT, TCP_SYN
from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.netlink.ipvs import KernelIPVS, parse_proc_conns

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "sh", "dh", "mh", "lblc",
              "lblcr")
WEIGHTS = (3, 1, 0, 2, 5)  # one quiesced server: no scheduler may pick it
CLIENTS = [f"10.98.0.{i}" for i in range(1, 8)]
N_CONNS = 24


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def kernel_choice(caddr: str, cport: int, vaddr: str) -> str | None:
    """The real server of the kernel's entry for this client, or None when it made none
    (a scheduler may find no server: dh whose hash lands on a quiesced one)."""
    with open("/proc/net/ip_vs_conn") as f:
        for c in parse_proc_conns(f.read()):
            if c.cport == cport and str(c.caddr) == caddr and str(c.vaddr) == vaddr:
                return str(c.daddr)
    return None


def main() -> None:
    sh("ip link add pylvss0 type dummy && ip link set pylvss0 up")
    for c in CLIENTS:
        sh(f"ip addr add {c}/32 dev pylvss0")
    sh("ip route add 10.96.0.0/24 dev pylvss0 && ip route add 10.97.0.0/24 dev pylvss0")
    k = KernelIPVS()
    result: dict[str, Any] = {}
    for n, sched in enumerate(SCHEDULERS, start=1):
        vip = f"10.96.0.{n}"  # a VIP of its own: no dest comes back from the kernel's trash
        key = ServiceKey.inet(Protocol.TCP, vip, 80)
        spec = ServiceSpec(key, sched)
        dests = [DestSpec(ipaddress.ip_address(f"10.97.0.{i + 1}"), 80, ForwardingMethod.MASQ,
                          w) for i, w in enumerate(WEIGHTS)]
        director = Director()
        director.table.add_service(spec)
        k.add_service(spec)
        for d in dests:
            director.table.add_dest(key, d)
            k.add_dest(key, d)
        ours: list[str | None] = []
        theirs: list[str | None] = []
        socks = []
        try:
            for i in range(N_CONNS):
                src = CLIENTS[(i * 3) % len(CLIENTS)]
                s = socket.socket()
                s.setblocking(False)
                s.bind((src, 0))
                socks.append(s)
                s.connect_ex((vip, 80))
                cport = s.getsockname()[1]
                conn = director.schedule(6, ipaddress.ip_address(src).packed, cport,
                                         ipaddress.ip_address(vip).packed, 80)
                if conn is None:
                    ours.append(None)
                else:
                    director.tcp_packet(conn, DIR_INPUT, TCP_SYN)
                    ours.append(str(conn.dest.addr))
                # Wait for the kernel's entry: long when one is expected, briefly when pylvs
                # found no server (only how long we look depends on our answer, not what).
                got = None
                for _ in range(100 if conn is not None else 6):
                    got = kernel_choice(src, cport, vip)
                    if got is not None:
                        break
                    time.sleep(0.05)
                theirs.append(got)
        finally:
            for s in socks:
                s.close()
        result[sched] = {"kernel": theirs, "pylvs": ours}
    k.flush()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
