"""Source hashing (``ip_vs_sh.c``): a client address always maps to the same real server.

What this is for: the kernel's 256-bucket table, filled by walking the list and giving each server
``weight`` consecutive buckets (a weight-0 server still takes one), and its hash of the client
address, ``(offset + hash_32(port + ntohl(addr), 8)) & 255`` (IPv6 folded by XOR). Old kernels
multiplied by 2654435761 instead; this is what Debian 12's 6.1 kernel does, checked against it.
The selected server is refused if its weight is 0 or it is OVERLOADed; with ``sh-fallback``
(``ServiceFlags.SCHED1``) the table is probed again with offsets until an available server is found;
with ``sh-port`` (``SCHED2``) the client's source port joins the hash.

What this is not for: consistent hashing with minimal disruption (that is ``mh``).
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer, ServiceFlags, VirtualService
from pylvs.core.schedulers._hash import fold_addr, hash_32
from pylvs.core.schedulers.base import Scheduler

TAB_BITS = 8
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD
SH_FALLBACK = ServiceFlags.SCHED1
SH_PORT = ServiceFlags.SCHED2


def fill_buckets(dests: list[RealServer], size: int, weighted: bool) -> list[RealServer | None]:
    """``ip_vs_sh_reassign``/``ip_vs_dh_reassign``: cycle through the list filling buckets."""
    if not dests:
        return [None] * size
    buckets: list[RealServer | None] = []
    n = len(dests)
    i = 0
    count = 0
    for _ in range(size):
        d = dests[i]
        buckets.append(d)
        count += 1
        if not weighted or count >= d.weight:
            i = (i + 1) % n
            count = 0
    return buckets


def _unavailable(d: RealServer) -> bool:
    if d.weight <= 0:
        return True
    f = d.flags
    return not (f is _AVAIL or f is _NONE) and bool(f & _OVERLOAD)


class SourceHashing(Scheduler):
    name = "sh"

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._buckets = fill_buckets(service.destinations, TAB_SIZE, True)
        self._flags_seen: ServiceFlags | None = None
        self._use_port = self._fallback = False

    def update(self) -> None:
        self._buckets = fill_buckets(self.service.destinations, TAB_SIZE, True)

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        flags = self.service.flags
        if flags is not self._flags_seen:  # re-read the bits only when the flags object changes
            self._flags_seen = flags
            self._use_port = bool(flags & SH_PORT)
            self._fallback = bool(flags & SH_FALLBACK)
        port = cport if self._use_port else 0
        base = hash_32((port + fold_addr(caddr)) & 0xFFFFFFFF, TAB_BITS)
        buckets = self._buckets
        ihash = base
        d = buckets[ihash]
        if d is None:
            return None
        if not _unavailable(d):
            return d
        if not self._fallback:
            return None
        for offset in range(TAB_SIZE):
            roffset = (offset + ihash) % TAB_SIZE
            d = buckets[(roffset + base) & TAB_MASK]
            if d is None:
                break
            if not _unavailable(d):
                return d
        return None


SCHEDULER = SourceHashing
