"""Round-robin (``ip_vs_rr.c``): each new connection to the next real server in list order.

What this is for: the kernel's exact rotation, including where it resumes after a real server is
added (a new server goes to the front of the list, so it is reached only after the rotation wraps)
or removed (the rotation continues from the removed server's predecessor). Servers with weight 0
or the OVERLOAD flag are skipped.

What this is not for: weights beyond "zero or not" (that is ``wrr``).
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD


class RoundRobin(Scheduler):
    """``svc->sched_data`` is the last chosen server (None = the list head)."""

    name = "rr"

    def __init__(self, service: VirtualService) -> None:
        super().__init__(service)
        self._last: RealServer | None = None
        self._pos = -1  # index of _last in service.destinations when last seen there
        self._order: list[RealServer] = list(service.destinations)

    def add_dest(self, dest: RealServer) -> None:
        self._order = list(self.service.destinations)

    def del_dest(self, dest: RealServer) -> None:
        # ip_vs_rr_del_dest: if the pointer is on the removed server, step back to its
        # predecessor so that the rotation goes on with the server that followed it.
        if dest is self._last:
            old = self._order
            try:
                j = old.index(dest)
            except ValueError:
                j = 0
            self._last = old[j - 1] if j > 0 else None
            self._pos = -1
        self._order = list(self.service.destinations)

    def upd_dest(self, dest: RealServer) -> None:
        pass

    def update(self) -> None:
        self._order = list(self.service.destinations)

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        dests = self.service.destinations
        n = len(dests)
        last = self._last
        # From the head: one pass over the list. From a server: the servers after it, then
        # (second pass) the ones from the head up to and including it. Both are n steps.
        i = -1
        if last is not None:
            i = self._pos
            if i < 0 or i >= n or dests[i] is not last:
                try:
                    i = dests.index(last)
                except ValueError:  # dropped without del_dest: restart from the head
                    i = -1
        for _ in range(n):
            i += 1
            if i == n:
                i = 0
            d = dests[i]
            if d.weight > 0:
                f = d.flags
                if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                    self._last = d
                    self._pos = i
                    return d
        return None


SCHEDULER = RoundRobin
