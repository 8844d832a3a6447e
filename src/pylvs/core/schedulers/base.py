"""The scheduler interface: what every IPVS scheduling algorithm implements.

What this is for: choosing a real server for a *new* connection (or a new persistence template)
of a virtual service, with the same rules as the kernel's ``ip_vs_<name>.c``. Schedulers are
sans-IO: they read the service's real servers (weights, flags, connection counts) and a clock
value handed in by the caller, and return a decision. They never create connections.

Hook order mirrors ``struct ip_vs_scheduler``: the table calls ``add_dest``/``del_dest``/``upd_dest``
after it has changed ``service.destinations`` (so the list already reflects the change), and
``done`` when the service is deleted or its scheduler replaced.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from pylvs.core.model import RealServer, VirtualService


class Scheduler(abc.ABC):
    """Base class of a scheduling algorithm bound to one virtual service."""

    name: ClassVar[str]

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
