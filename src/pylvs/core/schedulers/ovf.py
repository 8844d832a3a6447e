"""Overflow-connection (``ip_vs_ovf.c``): the highest weight whose active connections fit it.

What this is for: the kernel's rule. A server is eligible while ``activeconns <= weight`` (and
it is not OVERLOADed, weight not 0); among eligible ones the first with the strictly highest
weight wins, so traffic stays on the top server until it holds more active connections than its
weight, then overflows to the next. The servers are kept ranked by (weight descending, list
position), so a decision stops at the first eligible one instead of walking the whole list.

What this is not for: UDP services in practice: only active connections are counted.
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers.base import Scheduler
from pylvs.core.schedulers.fo import rank_by_weight

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class Overflow(Scheduler):
    name = "ovf"

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._ranked = rank_by_weight(service)

    def update(self) -> None:
        self._ranked = rank_by_weight(self.service)

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        for d in self._ranked:
            if d.activeconns > d.weight:
                continue
            f = d.flags
            if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                return d
        return None


SCHEDULER = Overflow
