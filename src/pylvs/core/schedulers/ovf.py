"""Overflow-connection (``ip_vs_ovf.c``): the highest weight whose active connections fit it.

What this is for: the kernel's rule. A server is eligible while ``activeconns <= weight`` (and
it is not OVERLOADed, weight not 0); among eligible ones the first with the strictly highest
weight wins, so traffic stays on the top server until it holds more active connections than its
weight, then overflows to the next.

What this is not for: UDP services in practice: only active connections are counted.
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class Overflow(Scheduler):
    name = "ovf"
    reads_conns = True

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        best: RealServer | None = None
        hw = 0
        for d in self.service.destinations:
            w = d.weight
            if w == 0 or d.activeconns > w:
                continue
            f = d.flags
            if not (f is _AVAIL or f is _NONE) and f & _OVERLOAD:
                continue
            if best is None or w > hw:
                best = d
                hw = w
        return best


SCHEDULER = Overflow
