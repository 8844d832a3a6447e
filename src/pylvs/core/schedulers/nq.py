"""Never queue (``ip_vs_nq.c``): an idle server if there is one, else shortest expected delay.

What this is for: the kernel's rule. Walking the list, the first eligible server with no active
connection is taken at once; otherwise the least ``(activeconns + 1) / weight`` wins (first in
list order among equals). Weight 0 and OVERLOADed servers are never chosen.

What this is not for: anything but activeconns: inactive connections do not count.
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer
from pylvs.core.schedulers._least import LeastLoadScheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class NeverQueue(LeastLoadScheduler):
    name = "nq"

    @staticmethod
    def _key(dest: RealServer, mult: int) -> int:
        # Idle servers (0) come before any busy one (>= 1), in list order among themselves.
        a = dest.activeconns
        return 0 if a == 0 else (a + 1) * mult + 1

    def _scan(self) -> RealServer | None:
        least: RealServer | None = None
        loh = lw = 0
        for d in self.service.destinations:
            dw = d.weight
            if not dw:
                continue
            f = d.flags
            if not (f is _AVAIL or f is _NONE) and f & _OVERLOAD:
                continue
            a = d.activeconns
            if a == 0:
                return d
            doh = a + 1
            if least is None or loh * dw > doh * lw:
                least = d
                lw = dw
                loh = doh
        return least


SCHEDULER = NeverQueue
