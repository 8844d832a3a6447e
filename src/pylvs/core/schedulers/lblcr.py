"""Locality-based least-connection with replication (``ip_vs_lblcr.c``): a server *set* per
destination address.

What this is for: hot cache objects. Each destination address (the packet's ``vaddr``) keeps a set
of real servers; a connection goes to the set's weighted-least-connection member (available,
weight > 0, not OVERLOADed). If there is none, or it is "overloaded" in the kernel's sense (more
active connections than its weight while another server has fewer than half its weight), the wlc
pick of the whole service is used and added to the set. When the set has more than one member
and has not changed for ``lblcr_expiration`` (24 h), its most loaded member is dropped. New members
go to the front of the set, as the kernel's ``list_add`` does, which decides ties. Entries expire
as in the kernel (see ``_locality``), driven by the ``now`` of each decision.

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
_OVERLOAD = DestFlags.OVERLOAD


class LblcrEntry:
    __slots__ = ("lastmod", "lastuse", "members")

    def __init__(self, dest: RealServer, now: float) -> None:
        self.members: list[RealServer] = [dest]
        self.lastmod = now
        self.lastuse = now

    def insert(self, dest: RealServer, now: float) -> None:
        """``ip_vs_dest_set_insert`` with check: a new member goes first and touches lastmod."""
        if any(m is dest for m in self.members):
            return
        self.members.insert(0, dest)
        self.lastmod = now

    def erase(self, dest: RealServer, now: float) -> None:
        for i, m in enumerate(self.members):
            if m is dest:
                del self.members[i]
                self.lastmod = now
                return

    def least(self) -> RealServer | None:
        """``ip_vs_dest_set_min``."""
        least: RealServer | None = None
        loh = lw = 0
        for d in self.members:
            f = d.flags
            if f is _NONE or (f is not _AVAIL and f & _OVERLOAD):
                continue  # a deleted server (no flag) is never chosen, whatever it compares
            if least is None:
                if d.weight > 0 and (f is _AVAIL or f & _AVAIL):
                    least = d
                    lw = d.weight
                    loh = (d.activeconns << 8) + d.inactconns
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if loh * d.weight > doh * lw and (f is _AVAIL or f & _AVAIL):
                least = d
                lw = d.weight
                loh = doh
        return least

    def most(self) -> RealServer | None:
        """``ip_vs_dest_set_max``."""
        most: RealServer | None = None
        moh = mw = 0
        for d in self.members:
            if most is None:
                if d.weight > 0:
                    most = d
                    mw = d.weight
                    moh = (d.activeconns << 8) + d.inactconns
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if moh * d.weight < doh * mw and d.weight > 0:
                most = d
                mw = d.weight
                moh = doh
        return most


class LocalityBasedLeastConnectionReplicated(LocalityScheduler[LblcrEntry]):
    name = "lblcr"

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        self.clock.advance(now)
        svc = self.service
        en = self.entries.get(vaddr)
        if en is not None:
            en.lastuse = now
            dest = en.least()
            if len(en.members) > 1 and now > en.lastmod + self.expiration:
                m = en.most()
                if m is not None:
                    en.erase(m, now)
            if dest is not None and not busy_while_others_idle(dest, svc):
                return dest
            dest = least_weighted(svc)
            if dest is None:
                return None
            if not self._dead:
                en.insert(dest, now)
            return dest
        dest = least_weighted(svc)
        if dest is None:
            return None
        if not self._dead:
            self.entries[vaddr] = LblcrEntry(dest, now)
            self.clock.count += 1
        return dest


SCHEDULER = LocalityBasedLeastConnectionReplicated
