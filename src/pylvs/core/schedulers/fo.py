"""Weighted fail-over (``ip_vs_fo.c``): everything to the server with the highest weight.

What this is for: active/standby pools. The first server in list order with the strictly highest
weight among the non-OVERLOADed ones takes every new connection; weight 0 never does. Lowering
its weight (or its OVERLOAD flag) moves new traffic to the next highest.

Speed: the servers are kept ranked by (weight descending, list position) on every table change,
so a decision takes the first ranked server that is not OVERLOADed - the one the kernel's walk
ends with - instead of walking the whole list.

What this is not for: spreading load.
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


def rank_by_weight(service: VirtualService) -> list[RealServer]:
    """Servers with weight > 0, highest weight first, list order among equals."""
    ranked = [(-d.weight, i, d) for i, d in enumerate(service.destinations) if d.weight > 0]
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [d for _, _, d in ranked]


class WeightedFailOver(Scheduler):
    name = "fo"

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._ranked = rank_by_weight(service)

    def update(self) -> None:
        self._ranked = rank_by_weight(self.service)

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        for d in self._ranked:
            f = d.flags
            if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                return d
        return None


SCHEDULER = WeightedFailOver
