"""Weighted least-connection (``ip_vs_wlc.c``), the default scheduler.

What this is for: the server with the least ``overhead / weight``, where overhead is
``(activeconns << 8) + inactconns`` (``ip_vs_dest_conn_overhead``), compared as
``loh * dw > doh * lw`` in integers; among equals the first in list order wins. Weight 0 and
OVERLOADed servers are never chosen.

What this is not for: the O(1) index shared with lc/sed/nq (see ``_least``).
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers._least import LeastLoadScheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


def least_weighted(service: VirtualService) -> RealServer | None:
    """The wlc choice by walking the list, as the kernel does (also lblc/lblcr's fallback,
    ``__ip_vs_lblc_schedule``)."""
    least: RealServer | None = None
    loh = lw = 0
    for d in service.destinations:
        f = d.flags
        if not (f is _AVAIL or f is _NONE) and f & _OVERLOAD:
            continue
        dw = d.weight
        if least is None:
            if dw > 0:
                least = d
                lw = dw
                loh = (d.activeconns << 8) + d.inactconns
            continue
        doh = (d.activeconns << 8) + d.inactconns
        if loh * dw > doh * lw:
            least = d
            lw = dw
            loh = doh
    return least


class WeightedLeastConnection(LeastLoadScheduler):
    name = "wlc"

    @staticmethod
    def _key(dest: RealServer, mult: int) -> int:
        return ((dest.activeconns << 8) + dest.inactconns) * mult

    def _scan(self) -> RealServer | None:
        return least_weighted(self.service)


SCHEDULER = WeightedLeastConnection
