"""Destination hashing (``ip_vs_dh.c``): the virtual (destination) address picks the server.

What this is for: cache clusters where the packet's destination, not the client, decides. The
kernel's 256-bucket table gives one bucket to each server in list order, round and round,
regardless of weight, and hashes ``hash_32(ntohl(daddr), 8)`` (IPv6 folded by XOR; checked
against Debian 12's 6.1 kernel, older kernels multiplied by 2654435761 instead). The
server found is refused (no fallback) if its weight is 0 or it is OVERLOADed.

What this is not for: spreading clients of one VIP: every connection to one address lands on the
same server.
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers._hash import fold_addr, hash_32
from pylvs.core.schedulers.base import Scheduler
from pylvs.core.schedulers.sh import fill_buckets

TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class DestinationHashing(Scheduler):
    name = "dh"

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._buckets = fill_buckets(service.destinations, TAB_SIZE, False)

    def update(self) -> None:
        self._buckets = fill_buckets(self.service.destinations, TAB_SIZE, False)

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        d = self._buckets[hash_32(fold_addr(vaddr), TAB_BITS)]
        if d is None or d.weight <= 0:
            return None
        f = d.flags
        if f is _AVAIL or (f is not _NONE and f & _AVAIL and not f & _OVERLOAD):
            return d
        return None


SCHEDULER = DestinationHashing
