"""The arbitrator (``--arbitrator IP``): a node that cannot reach the gateway leaves MASTER/BACKUP
for FAULT, and comes back once it can.

Why: a node cut off from the network must not hold the VIP; that is what turns a partition into
a split brain. It is one more tracked condition, reported to the instances as a fault.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from pylvs.vrrp import packet as pkt

log = logging.getLogger("pylvs.vrrp")


@dataclass(frozen=True, slots=True)
class ArbitratorSettings:
    address: str
    interval: float = 1.0
    fall: int = 3  # failed pings before FAULT
    rise: int = 2  # answered pings before leaving FAULT


class Arbitrator:
    """Pings the arbitrator every ``interval`` and calls ``on_change`` when reachability flips
    (after ``fall`` losses or ``rise`` answers in a row)."""

    def __init__(self, settings: ArbitratorSettings, on_change: Callable[[], None]) -> None:
        self.settings = settings
        self.on_change = on_change
        self.ok = True

    @property
    def fault(self) -> str | None:
        """The fault the instances carry while the arbitrator is unreachable."""
        return None if self.ok else f"arbitrator {self.settings.address} unreachable"

    async def run(self) -> None:
        s = self.settings
        fails = oks = 0
        seq = 0
        while True:
            seq += 1
            ok = await ping(s.address, seq, timeout=min(1.0, s.interval))
            if ok:
                oks, fails = oks + 1, 0
                if not self.ok and oks >= s.rise:
                    log.info("arbitrator %s reachable again", s.address)
                    self.ok = True
                    self.on_change()
            else:
                fails, oks = fails + 1, 0
                if self.ok and fails >= s.fall:
                    log.warning("arbitrator %s unreachable: leaving MASTER/BACKUP for FAULT", s.address)
                    self.ok = False
                    self.on_change()
            await asyncio.sleep(s.interval)

    def status(self) -> dict[str, object]:
        return {"address": self.settings.address, "reachable": self.ok}


async def ping(host: str, seq: int, timeout: float) -> bool:
    """One ICMP echo over a raw socket; True when the matching reply arrives in time."""
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"pylvs-arbitrator"
    csum = pkt.inet_checksum(body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError:
        return False
    s.setblocking(False)
    fut: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        while True:
            try:
                data, addr = s.recvfrom(2048)
            except BlockingIOError:
                return
            ihl = (data[0] & 0x0F) * 4
            if addr[0] == host and len(data) >= ihl + 8 and data[ihl] == 0:
                _, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
                if rid == ident and rseq == seq and not fut.done():
                    fut.set_result(True)

    loop.add_reader(s.fileno(), readable)
    try:
        s.sendto(body, (host, 0))
        async with asyncio.timeout(timeout):
            return await fut
    except (TimeoutError, OSError):
        return False
    finally:
        loop.remove_reader(s.fileno())
        s.close()
