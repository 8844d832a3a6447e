"""Locality-based least-connection (``ip_vs_lblc.c``): one real server per destination address.

What this is for: cache clusters. The first connection to a destination address (the packet's
``vaddr``) is given the weighted-least-connection server of the whole service and remembered;
later ones go to the same server while it is available, has weight > 0, and is not "overloaded"
in the kernel's sense (more active connections than its weight while another server has fewer
than half its weight) - then a new wlc pick replaces the entry. Entries expire as in the kernel
(see ``_locality``), driven by the ``now`` of each decision.

What this is not for: per-client stickiness (that is persistence, or ``sh``).
"""

from __future__ import annotations

from pylvs.core.model import DestFlags, RealServer
from pylvs.core.schedulers._locality import (
    LocalityScheduler,
    busy_while_others_idle,
)
from pylvs.core.schedulers.wlc import least_weighted

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE


class LblcEntry:
    __slots__ = ("dest", "lastuse")

    def __init__(self, dest: RealServer, lastuse: float) -> None:
        self.dest = dest
        self.lastuse = lastuse


class LocalityBasedLeastConnection(LocalityScheduler[LblcEntry]):
    name = "lblc"

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        self.clock.advance(now)
        svc = self.service
        en = self.entries.get(vaddr)
        if en is not None:
            en.lastuse = now
            dest = en.dest
            f = dest.flags
            if (
                (f is _AVAIL or (f is not _NONE and f & _AVAIL))
                and dest.weight > 0
                and not busy_while_others_idle(dest, svc)
            ):
                return dest
        dest2 = least_weighted(svc)
        if dest2 is None:
            return None
        # ip_vs_lblc_new: a changed server replaces the entry (re-hashed at its bucket head).
        if not self._dead and (en is None or en.dest is not dest2):
            if en is not None:
                del self.entries[vaddr]
            self.entries[vaddr] = LblcEntry(dest2, now)
            self.clock.count += 1  # the kernel counts a replacement as a new entry too
        return dest2


SCHEDULER = LocalityBasedLeastConnection
