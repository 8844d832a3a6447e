"""PING_CHECK: an ICMP (or ICMPv6) echo request; an echo reply with our identifier and sequence
within connect_timeout passes. Connects to no port.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import time

from pylvs.config.keepalived.checkers import CheckerConfig
from pylvs.health.checkers.base import CheckResult, HealthChecker, datagram_socket


class PingCheck(HealthChecker):
    keyword = "PING_CHECK"
    needs_port = False

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        return await ping_check(cfg)

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str:
        return f"ICMP connection to {rs} success."

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str:
        return (f"ICMP CHECK on service {rs} of {vs} failed after {retries} retries." if retries
                else f"ICMP CHECK on service {rs} failed.")


def _icmp_socket(cfg: CheckerConfig, raw: bool | None) -> tuple[socket.socket, bool]:
    """An unprivileged ping socket where ping_group_range allows one, else a raw ICMP socket
    (root); the flag says raw (IPv4 raw sockets hand over the IP header too)."""
    proto = socket.IPPROTO_ICMPV6 if cfg.connect_ip.version == 6 else socket.IPPROTO_ICMP
    if raw:
        return datagram_socket(cfg, socket.SOCK_RAW, proto), True
    try:
        return datagram_socket(cfg, socket.SOCK_DGRAM, proto), False
    except PermissionError:
        return datagram_socket(cfg, socket.SOCK_RAW, proto), True


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


async def ping_check(cfg: CheckerConfig, raw: bool | None = None) -> CheckResult:
    """``raw`` forces the raw socket (None: a ping socket when allowed). Other ICMP traffic a
    raw socket sees is skipped."""
    loop = asyncio.get_running_loop()
    v6 = cfg.connect_ip.version == 6
    request, reply = (128, 129) if v6 else (8, 0)
    ident, seq = random.randrange(1, 65536), random.randrange(65536)
    body = b"pylvs PING_CHECK" + os.urandom(8)
    sock, raw = _icmp_socket(cfg, raw)
    try:
        packet = struct.pack("!BBHHH", request, 0, 0, ident, seq) + body
        if not v6:  # the kernel fills in ICMPv6 checksums itself
            packet = packet[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
        sock.connect((str(cfg.connect_ip), 0))
        await loop.sock_sendall(sock, packet)
        if not raw:
            ident = sock.getsockname()[1]  # ping sockets choose the identifier themselves
        deadline = time.monotonic() + cfg.connect_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return CheckResult(False, f"PING_CHECK {cfg.connect_ip}: no echo reply")
            try:
                async with asyncio.timeout(left):
                    data = await loop.sock_recv(sock, 65535)
            except TimeoutError:
                continue
            if raw and not v6:
                data = data[(data[0] & 0x0F) * 4:] if data else data
            if len(data) < 8:
                continue
            typ, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", data)
            if typ == reply and rid == ident and rseq == seq and data[8:] == body:
                return CheckResult(True, f"PING_CHECK {cfg.connect_ip}: echo reply")
    except OSError as exc:
        return CheckResult(False, f"PING_CHECK {cfg.connect_ip}: {exc.strerror or exc}")
    finally:
        sock.close()


KINDS = (PingCheck(),)
