"""Weighted fail-over (``ip_vs_fo.c``): everything to the server with the highest weight.

What this is for: active/standby pools. The first server in list order with the strictly highest
weight among the non-OVERLOADed ones takes every new connection; weight 0 never does. Lowering
its weight (or its OVERLOAD flag) moves new traffic to the next highest.

What this is not for: spreading load.
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class WeightedFailOver(Scheduler):
    name = "fo"

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        best: RealServer | None = None
        hw = 0
        for d in self.service.destinations:
            w = d.weight
            if w > hw:
                f = d.flags
                if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                    best = d
                    hw = w
        return best


SCHEDULER = WeightedFailOver
