"""What the Director's per-packet service lookup keeps: a service's flags read once as plain
ints (``ServicePlan``), and the lookup cache by packed address that the table's listeners clear
whenever services change (``ServiceCache``). Split from ``pylvs.core.director`` to keep that
module readable; nothing else uses them.
"""

from __future__ import annotations

from pylvs.core.model import VirtualService
from pylvs.core.table import TableListener


class ServicePlan:
    """What scheduling needs of a service, read once: the flags as plain ints."""

    __slots__ = ("fwmark", "mask4", "mask6", "one_packet", "persistent", "port", "svc")

    def __init__(self, svc: VirtualService) -> None:
        self.svc = svc
        flags = int(svc.flags)
        self.persistent = bool(flags & 0x0001)  # IP_VS_SVC_F_PERSISTENT
        self.one_packet = bool(flags & 0x0004)  # IP_VS_SVC_F_ONEPACKET
        # Port-zero services match any port unless persistent; fwmark services any port.
        self.port = svc.key.port
        self.fwmark = svc.key.fwmark
        # Persistence granularity (-M): an IPv4 mask, or an IPv6 prefix length.
        self.mask4 = svc.netmask & 0xFFFFFFFF
        plen = svc.netmask if 0 < svc.netmask <= 128 else 128
        self.mask6 = ((1 << plen) - 1) << (128 - plen)


class ServiceCache(TableListener):
    """Service lookup by packed address, dropped whenever the table's services change."""

    def __init__(self) -> None:
        self.by_addr: dict[tuple[int, bytes, int], ServicePlan | None] = {}
        self.by_mark: dict[tuple[int, int], ServicePlan | None] = {}

    def clear(self) -> None:
        self.by_addr.clear()
        self.by_mark.clear()

    def service_added(self, svc: VirtualService) -> None:
        self.clear()

    def service_changed(self, svc: VirtualService) -> None:
        self.clear()

    def service_deleted(self, svc: VirtualService) -> None:
        self.clear()
