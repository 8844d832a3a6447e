"""Weighted round-robin (``ip_vs_wrr.c``): passes over the list with a falling weight bar.

What this is for: the kernel's exact sequence. State is the current server ``cl`` (or the list
head), the current weight ``cw``, the step ``di`` (gcd of the positive weights) and ``mw`` (the
maximum weight minus ``di - 1``). A pass picks, in list order, every server whose weight is at
least ``cw``; at the end of the list ``cw`` drops by ``di``, and wraps to ``mw`` below 1. With
weights 4, 3, 2 the 9-step cycle is A A B A B C A B C. Any add/del/edit of a real server puts
``cl`` back to the head and snaps ``cw`` onto the new grid, as ``ip_vs_wrr_dest_changed`` does.
OVERLOADed servers are skipped; weight 0 never reaches the bar.

Speed: the sequence the kernel's walk visits (every pass, in list order, servers with weight
>= cw) depends only on the weights, so it is laid out once per change (when its cycle is not
huge) and a decision takes the next entry whose server is not OVERLOADed - the same server the
walk would stop at. Only when every entry is OVERLOADed does the literal walk run, to leave the
kernel's exact state behind it.

What this is not for: smooth (nginx-style) weighted round-robin; the kernel's is bursty.
"""

from __future__ import annotations

from bisect import bisect_right
from math import gcd

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD
# Longest cycle laid out in advance (sum of weights / gcd); beyond it the walk runs each time.
MAX_CYCLE = 1 << 16


class WeightedRoundRobin(Scheduler):
    name = "wrr"
    max_cycle = MAX_CYCLE

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._cl = -1  # index of the current server in service.destinations; -1 = the head
        self._di = self._gcd_weight()
        self._mw = self._max_weight() - (self._di - 1)
        self._cw = self._mw
        self._seq: list[RealServer] = []  # the cycle, pass after pass
        self._seq_idx: list[int] = []  # list index of each entry
        self._seq_cw: list[int] = []  # cw of each entry's pass
        self._pass_start: list[int] = []  # first entry of pass j (cw = mw - j * di)
        self._next = -1  # entry the next decision starts at; -1: derive from (cl, cw)
        self._layout()

    def _layout(self) -> None:
        self._next = -1
        seq: list[RealServer] = []
        idx: list[int] = []
        cws: list[int] = []
        starts: list[int] = []
        mw, di = self._mw, self._di
        dests = self.service.destinations
        if mw > 0 and sum(max(d.weight, 0) for d in dests) // di <= self.max_cycle:
            for cw in range(mw, 0, -di):
                starts.append(len(seq))
                for i, d in enumerate(dests):
                    if d.weight >= cw:
                        seq.append(d)
                        idx.append(i)
                        cws.append(cw)
        self._seq, self._seq_idx, self._seq_cw, self._pass_start = seq, idx, cws, starts

    def _entry_from_state(self) -> int:
        """The first entry the walk from (cl, cw) would look at."""
        j = (self._mw - self._cw) // self._di
        starts = self._pass_start
        lo = starts[j]
        hi = starts[j + 1] if j + 1 < len(starts) else len(self._seq)
        k = bisect_right(self._seq_idx, self._cl, lo, hi)
        return 0 if k == len(self._seq) else k

    def _gcd_weight(self) -> int:
        g = 0
        for d in self.service.destinations:
            w = d.weight
            if w > 0:
                g = gcd(w, g) if g > 0 else w
        return g or 1

    def _max_weight(self) -> int:
        return max((d.weight for d in self.service.destinations), default=0)

    def add_dest(self, dest: RealServer) -> None:
        self._dest_changed()

    def del_dest(self, dest: RealServer) -> None:
        self._dest_changed()

    def upd_dest(self, dest: RealServer) -> None:
        self._dest_changed()

    def update(self) -> None:
        """Editing the service (same scheduler) leaves the kernel's mark alone: only the
        laid-out cycle is refreshed, which does not move the rotation."""
        self._layout()

    def _dest_changed(self) -> None:
        # ip_vs_wrr_dest_changed: add, del and edit of a real server all land here.
        self._cl = -1
        di = self._di = self._gcd_weight()
        mw = self._mw = self._max_weight() - (di - 1)
        cw = self._cw
        if cw > mw or not cw:
            self._cw = mw
        elif di > 1:
            self._cw = (cw // di) * di + 1
        self._layout()

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        mw = self._mw
        if mw <= 0:
            return None
        seq = self._seq
        if seq:
            k = self._next
            if k < 0:
                k = self._entry_from_state()
            size = len(seq)
            for _ in range(size):
                d = seq[k]
                f = d.flags
                if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                    self._cl = self._seq_idx[k]
                    self._cw = self._seq_cw[k]
                    k += 1
                    self._next = 0 if k == size else k
                    return d
                k += 1
                if k == size:
                    k = 0
            self._next = -1  # all OVERLOADed: the walk below sets the kernel's final state
        return self._walk(mw)

    def _walk(self, mw: int) -> RealServer | None:
        """``ip_vs_wrr_schedule``, step by step."""
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
