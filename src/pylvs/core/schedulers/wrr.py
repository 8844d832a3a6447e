"""Weighted round-robin (``ip_vs_wrr.c``): passes over the list with a falling weight bar.

What this is for: the kernel's exact sequence. State is the current server ``cl`` (or the list
head), the current weight ``cw``, the step ``di`` (gcd of the positive weights) and ``mw`` (the
maximum weight minus ``di - 1``). A pass picks, in list order, every server whose weight is at
least ``cw``; at the end of the list ``cw`` drops by ``di``, and wraps to ``mw`` below 1. With
weights 4, 3, 2 the 9-step cycle is A A B A B C A B C. Any add/del/edit of a real server puts
``cl`` back to the head and snaps ``cw`` onto the new grid, as ``ip_vs_wrr_dest_changed`` does.
OVERLOADed servers are skipped; weight 0 never reaches the bar.

What this is not for: smooth (nginx-style) weighted round-robin; the kernel's is bursty.
"""

from __future__ import annotations

from math import gcd

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class WeightedRoundRobin(Scheduler):
    name = "wrr"

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._cl = -1  # index of the current server in service.destinations; -1 = the head
        self._di = self._gcd_weight()
        self._mw = self._max_weight() - (self._di - 1)
        self._cw = self._mw

    def _gcd_weight(self) -> int:
        g = 0
        for d in self.service.destinations:
            w = d.weight
            if w > 0:
                g = gcd(w, g) if g > 0 else w
        return g or 1

    def _max_weight(self) -> int:
        return max((d.weight for d in self.service.destinations), default=0)

    def update(self) -> None:
        # ip_vs_wrr_dest_changed (add, del and edit all land here).
        self._cl = -1
        di = self._di = self._gcd_weight()
        mw = self._mw = self._max_weight() - (di - 1)
        cw = self._cw
        if cw > mw or not cw:
            self._cw = mw
        elif di > 1:
            self._cw = (cw // di) * di + 1

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        mw = self._mw
        if mw <= 0:
            return None
        dests = self.service.destinations
        n = len(dests)
        di = self._di
        cw = self._cw
        i = last = self._cl
        stop = -2
        last_pass = restarted = False
        while True:
            i += 1
            while i < n:
                d = dests[i]
                if d.weight >= cw:
                    f = d.flags
                    if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                        self._cl = i
                        self._cw = cw
                        return d
                if i == stop:
                    self._cl = i
                    self._cw = cw
                    return None
                i += 1
            i = -1  # back at the head
            cw -= di
            if cw <= 0:
                cw = mw
                # Stop if the pass for weight >= 1 already covered every server.
                if last_pass or last == -1:
                    self._cl = -1
                    self._cw = cw
                    return None
                restarted = True
            last_pass = cw <= di
            if last_pass and restarted and last != -1:
                # The first traversal checked weight >= 1 only after `last`; finish up to it.
                stop = last


SCHEDULER = WeightedRoundRobin
