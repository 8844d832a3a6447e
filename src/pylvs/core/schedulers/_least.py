"""Shared machinery of the least-connection family (lc, wlc, sed, nq): an exact O(1) index.

What this is for: the kernel walks every real server on each decision; in Python that costs
~70 ns a server. Once the connection table reports count changes (``conns_changed``), these
schedulers keep a heap of (load key, list position) instead, and a decision is a peek at its top.
Key and position are packed into one int (``key << bits | position``) so heap comparisons stay
on plain ints; superseded entries are recognised by a per-server version and compacted away.

The key is exact, not a float: the kernel compares ``loh * dw > doh * lw`` in integers and keeps
the *first* server in list order among equals. Dividing by the weight is replaced by multiplying by
``L // w`` with ``L`` the lcm of the eligible weights, which preserves the order exactly (Python
ints do not overflow), and the list position breaks ties the way the kernel's strict ``>`` does.

What this is not for: the decision rules themselves; each algorithm module states its key and its
literal scan (used until the first ``conns_changed``).
"""

from __future__ import annotations

import abc
import heapq
from math import lcm

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class _Slot:
    """A real server's place in the index: its list position, weight multiplier and version."""

    __slots__ = ("dest", "mult", "pos", "ver")

    def __init__(self, dest: RealServer, pos: int, mult: int) -> None:
        self.dest = dest
        self.pos = pos
        self.mult = mult
        self.ver = 0


class LeastLoadScheduler(Scheduler):
    """Base of lc/wlc/sed/nq: ``_scan`` is the kernel loop, ``_key`` the same rule as a key."""

    reads_conns = True

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._notified = False
        self._heap: list[tuple[int, int, _Slot]] = []
        self._pos_bits = 1
        self._slots: dict[int, _Slot] = {}
        self._compact_at = 256

    # ---- the rule -----------------------------------------------------------------------

    @abc.abstractmethod
    def _scan(self) -> RealServer | None:
        """The kernel's loop over ``service.destinations``, on live counters."""

    @staticmethod
    @abc.abstractmethod
    def _key(dest: RealServer, mult: int) -> int:
        """The load of ``dest`` as an int (smaller wins, ties go to list order)."""

    # Whether the weight enters the key (lc ignores it: no lcm needed).
    weighted = True

    # ---- the index ----------------------------------------------------------------------

    def _rebuild(self) -> None:
        dests = self.service.destinations
        eligible = [d for d in dests if d.weight > 0]
        big = lcm(*(d.weight for d in eligible)) if eligible and self.weighted else 1
        bits = self._pos_bits = max(len(dests), 1).bit_length()
        slots: dict[int, _Slot] = {}
        heap: list[tuple[int, int, _Slot]] = []
        key = self._key
        for pos, d in enumerate(dests):
            if d.weight <= 0:
                continue
            s = _Slot(d, pos, big // d.weight if self.weighted else 1)
            slots[id(d)] = s
            f = d.flags
            if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                heap.append(((key(d, s.mult) << bits) | pos, 0, s))
        heapq.heapify(heap)
        self._slots = slots
        self._heap = heap
        self._compact_at = 2 * len(slots) + 256

    def update(self) -> None:
        if self._notified:
            self._rebuild()

    def conns_changed(self, dest: RealServer) -> None:
        if not self._notified:
            self._notified = True
            self._rebuild()
            return
        s = self._slots.get(id(dest))
        if s is None or s.dest is not dest:
            return  # not a member with weight > 0: never chosen anyway
        s.ver = ver = s.ver + 1
        f = dest.flags
        if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
            heap = self._heap
            heapq.heappush(heap, ((self._key(dest, s.mult) << self._pos_bits) | s.pos, ver, s))
            if len(heap) > self._compact_at:
                self._compact()

    def _compact(self) -> None:
        """Drop superseded heap entries (each count change leaves one behind)."""
        heap = [e for e in self._heap if e[1] == e[2].ver]
        heapq.heapify(heap)
        self._heap = heap
        self._compact_at = 2 * len(self._slots) + 256

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        if not self._notified:
            return self._scan()
        heap = self._heap
        while heap:
            top = heap[0]
            s = top[2]
            if top[1] == s.ver:
                return s.dest
            heapq.heappop(heap)
        return None
