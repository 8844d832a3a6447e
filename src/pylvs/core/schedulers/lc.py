"""Least-connection (``ip_vs_lc.c``): the smallest ``(activeconns << 8) + inactconns``.

What this is for: the kernel's rule, which ignores the weight except that weight 0 (quiesced)
and OVERLOADed servers are skipped; among equals the first in list order wins.

What this is not for: weighing servers by capacity (that is ``wlc``).
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer
from pylvs.core.schedulers._least import LeastLoadScheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class LeastConnection(LeastLoadScheduler):
    name = "lc"
    weighted = False

    @staticmethod
    def _key(dest: RealServer, mult: int) -> int:
        return (dest.activeconns << 8) + dest.inactconns

    def _scan(self) -> RealServer | None:
        least: RealServer | None = None
        loh = 0
        for d in self.service.destinations:
            if d.weight == 0:
                continue
            f = d.flags
            if not (f is _AVAIL or f is _NONE) and f & _OVERLOAD:
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if least is None or doh < loh:
                least = d
                loh = doh
        return least


SCHEDULER = LeastConnection
