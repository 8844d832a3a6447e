"""Destination hashing (``ip_vs_dh.c``): the virtual (destination) address picks the server.

What this is for: cache clusters where the packet's destination, not the client, decides. The
kernel's 256-bucket table gives one bucket to each server in list order, round and round,
regardless of weight, and hashes ``ntohl(daddr) * 2654435761 & 255`` (IPv6 folded by XOR). The
server found is refused (no fallback) if its weight is 0 or it is OVERLOADed.

What this is not for: spreading clients of one VIP: every connection to one address lands on the
same server.
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers._hash import GOLDEN_MULT, fold_addr
from pylvs.core.schedulers.base import Scheduler
from pylvs.core.schedulers.sh import fill_buckets

TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1

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
        d = self._buckets[(fold_addr(vaddr) * GOLDEN_MULT) & TAB_MASK]
        if d is None or d.weight <= 0:
            return None
        f = d.flags
        if f is _AVAIL or (f is not _NONE and f & _AVAIL and not f & _OVERLOAD):
            return d
        return None


SCHEDULER = DestinationHashing
