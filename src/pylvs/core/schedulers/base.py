"""The scheduler interface: what every IPVS scheduling algorithm implements.

What this is for: choosing a real server for a *new* connection (or a new persistence template)
of a virtual service, with the same rules as the kernel's ``ip_vs_<name>.c``. Schedulers are
sans-IO: they read the service's real servers (weights, flags, connection counts) and a clock
value handed in by the caller, and return a decision. They never create connections.

Hook order mirrors ``struct ip_vs_scheduler``: the table calls ``add_dest``/``del_dest``/``upd_dest``
after it has changed ``service.destinations`` (so the list already reflects the change), and
``done`` when the service is deleted or its scheduler replaced.

Connection counts: the least-connection family (lc, wlc, sed, nq) can answer in O(1) instead of
walking every real server, if the connection table tells it when counts change. Schedulers with
``reads_conns`` true accept ``conns_changed(dest)``; the first call switches the scheduler into
"notified" mode, in which it trusts an index it keeps up to date from these calls. A connection
table that calls it once must call it after *every* change of ``activeconns``, ``inactconns`` or
the OVERLOAD flag of a real server of the service. Without any call, schedulers read the live
counters on each decision, which is always right, only slower.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from pylvs.core.model import DestFlags, RealServer, VirtualService

# Flags are compared by identity first in hot loops: ``IntFlag.__and__`` costs a Python call.
_OVERLOAD = DestFlags.OVERLOAD


def is_overloaded(dest: RealServer) -> bool:
    """``dest->flags & IP_VS_DEST_F_OVERLOAD``, cheap for the usual case."""
    f = dest.flags
    if f is DestFlags.AVAILABLE or f is DestFlags.NONE:
        return False
    return bool(f & _OVERLOAD)


class Scheduler(abc.ABC):
    """Base class of a scheduling algorithm bound to one virtual service."""

    name: ClassVar[str]
    #: Keeps an index of activeconns/inactconns and wants ``conns_changed`` calls (lc, wlc, sed,
    #: nq). Schedulers that read the live counters on each decision (ovf, twos, lblc, lblcr)
    #: leave it False, so the connection table can skip the call for them.
    reads_conns: ClassVar[bool] = False

    def __init__(self, service: VirtualService) -> None:
        self.service = service

    def add_dest(self, dest: RealServer) -> None:
        """A real server was added (already in ``service.destinations``)."""
        self.update()

    def del_dest(self, dest: RealServer) -> None:
        """A real server was removed (already gone from ``service.destinations``)."""
        self.update()

    def upd_dest(self, dest: RealServer) -> None:
        """A real server's weight or thresholds changed."""
        self.update()

    def update(self) -> None:  # noqa: B027 - optional hook, most schedulers keep no state
        """Recompute any state derived from the list of real servers."""

    def conns_changed(self, dest: RealServer) -> None:  # noqa: B027 - optional hook
        """``dest``'s activeconns/inactconns or OVERLOAD flag changed (see the module docstring)."""

    def done(self) -> None:  # noqa: B027 - optional hook
        """The service is going away or switching scheduler: drop timers and tables."""

    @abc.abstractmethod
    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        """The real server for a new connection from ``caddr:cport`` to ``vaddr:vport``.

        Addresses are packed (4 or 16 bytes, network order), ports host-order ints, ``now`` the
        caller's monotonic clock in seconds. ``None`` means no server can take it (the kernel
        logs "no destination available" and the packet is dropped or sent to the bypass).
        """
