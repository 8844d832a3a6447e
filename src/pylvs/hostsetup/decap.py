"""The real server's side of LVS-TUN where the kernel has no IPIP module.

What this is for: ``pylvs rs-setup --mode tun``. A raw socket for IP protocol 4 receives the
director's IP-in-IP packets (the kernel hands raw sockets every protocol it has no handler for,
and sends no "protocol unreachable" while one is open); the inner packet, addressed to the VIP, is
written to a TUN device, so the local stack receives it as if it had arrived on a tunnel interface
and answers from the VIP straight to the client, as with the kernel's ``tunl0``.

IPv6-in-IPv6 (``Decapsulator6``, next header 41) works the same way with a raw IPv6 socket for
protocol 41 (the kernel has no handler for it without ``ip6_tunnel``, so a raw socket gets
every such packet and no ICMPv6 "unknown next header" goes back); an IPv6 raw socket hands over
the payload after the outer header, which is the inner packet.

What this is not for: encapsulation (the director's forwarder does it) or hosts with ``ipip`` /
``ip6_tunnel`` (there ``rs-setup`` brings up ``tunl0`` / ``ip6tnl0`` instead).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import sys
from collections import Counter
from types import FrameType

from pyroute2 import IPRoute

from pylvs.dataplane.packet.codec import IPPROTO_IPIP, Drop, ipip_decapsulate
from pylvs.dataplane.packet.codec6 import IPPROTO_IPV6, ip6ip6_inner

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name`` without packet information; its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Decapsulator:
    """Raw IPIP in, inner packets out through a TUN device; counts what it drops and why."""

    def __init__(self, tun_name: str, vip: str | None = None) -> None:
        self.tun_name = tun_name
        self.vip = socket.inet_aton(vip) if vip else None
        self.counters: Counter[str] = Counter()
        self.tun_fd = open_tun(tun_name)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=tun_name)[0]
            ipr.link("set", index=idx, state="up")
        for key in (f"net/ipv4/conf/{tun_name}/rp_filter", f"net/ipv4/conf/{tun_name}/accept_local"):
            try:
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write("0\n" if key.endswith("rp_filter") else "1\n")
            except OSError:
                pass

    def handle(self, packet: bytes) -> None:
        inner = ipip_decapsulate(packet)
        if isinstance(inner, Drop):
            self.counters[inner.name.lower()] += 1
            return
        if self.vip is not None and bytes(inner[16:20]) != self.vip:
            self.counters["not_for_vip"] += 1
            return
        os.write(self.tun_fd, inner)
        self.counters["decapsulated"] += 1

    def run(self, stop_fd: int) -> None:
        buf = bytearray(65536)
        view = memoryview(buf)
        while True:
            ready, _, _ = select.select([self.sock.fileno(), stop_fd], [], [])
            if stop_fd in ready:
                return
            try:
                n = self.sock.recv_into(buf)
            except InterruptedError:
                continue
            self.handle(bytes(view[:n]))

    def close(self) -> None:
        self.sock.close()
        os.close(self.tun_fd)


class Decapsulator6(Decapsulator):
    """IPv6-in-IPv6 in (raw IPv6 socket, protocol 41), inner IPv6 packets out through TUN."""

    def __init__(self, tun_name: str, vip: str | None = None) -> None:
        self.tun_name = tun_name
        self.vip = socket.inet_pton(socket.AF_INET6, vip) if vip else None
        self.counters = Counter()
        self.tun_fd = open_tun(tun_name)
        try:
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPV6)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=tun_name)[0]
                ipr.link("set", index=idx, state="up")
        except OSError:
            os.close(self.tun_fd)
            raise

    def handle(self, packet: bytes) -> None:
        inner = ip6ip6_inner(packet)
        if isinstance(inner, Drop):
            self.counters[inner.name.lower()] += 1
            return
        if self.vip is not None and bytes(inner[24:40]) != self.vip:
            self.counters["not_for_vip"] += 1
            return
        os.write(self.tun_fd, inner)
        self.counters["decapsulated"] += 1


def run_decapsulator(tun_name: str, vip: str | None) -> int:
    """Run until SIGTERM/SIGINT; prints the counters on the way out. An IPv6 VIP gets the
    IPv6-in-IPv6 decapsulator."""
    v6 = vip is not None and ":" in vip
    kind = "IPv6-in-IPv6" if v6 else "IPIP"
    try:
        dec = Decapsulator6(tun_name, vip) if v6 else Decapsulator(tun_name, vip)
    except OSError as exc:
        print(f"pylvs rs-setup: cannot start the {kind} decapsulator on {tun_name}: {exc}",
              file=sys.stderr)
        return 1
    rfd, wfd = os.pipe()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        os.write(wfd, b"x")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"pylvs rs-setup: {kind} decapsulator on {tun_name} ready", flush=True)
    try:
        dec.run(rfd)
    finally:
        dec.close()
        print("pylvs rs-setup: decapsulator stopped: "
              + ", ".join(f"{k}={v}" for k, v in sorted(dec.counters.items())), flush=True)
    return 0
