"""Shortest expected delay (``ip_vs_sed.c``): the least ``(activeconns + 1) / weight``.

What this is for: the kernel's rule. Unlike wlc it counts only active connections and includes
the incoming one (the ``+ 1``), so an idle heavy server beats an idle light one. Compared as
``loh * dw > doh * lw``; the first in list order wins among equals; weight 0 and OVERLOADed
servers are never chosen.

What this is not for: sending to idle servers first (that is ``nq``).
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer
from pylvs.core.schedulers._least import LeastLoadScheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class ShortestExpectedDelay(LeastLoadScheduler):
    name = "sed"

    @staticmethod
    def _key(dest: RealServer, mult: int) -> int:
        return (dest.activeconns + 1) * mult

    def _scan(self) -> RealServer | None:
        least: RealServer | None = None
        loh = lw = 0
        for d in self.service.destinations:
            f = d.flags
            if not (f is _AVAIL or f is _NONE) and f & _OVERLOAD:
                continue
            dw = d.weight
            if least is None:
                if dw > 0:
                    least = d
                    lw = dw
                    loh = d.activeconns + 1
                continue
            doh = d.activeconns + 1
            if loh * dw > doh * lw:
                least = d
                lw = dw
                loh = doh
        return least


SCHEDULER = ShortestExpectedDelay
