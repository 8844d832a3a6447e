"""The in-memory IPVS table: virtual services and real servers, with the kernel's rules for changing them.

What this is for: the control plane of the director (what ``ip_vs_ctl.c`` does in the kernel):
adding, editing and deleting services and real servers, binding schedulers, refusing bad requests
with the errno the kernel would use, zeroing counters, and the global timeouts. It implements
``IPVSBackend`` so pylvsadm can drive it directly (in tests) or through the daemon.

What this is not for: packets and connections. The connection table (``pylvs.core.conntrack``)
keeps references to ``RealServer`` objects and updates their counters; a connection provider can be
plugged in so ``get_connections`` lists them.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol as TypingProtocol

from pylvs.core.api import (
    DestStatus,
    IPVSError,
    ServiceStatus,
    SyncDaemonStatus,
)
from pylvs.core.model import (
    AF_INET6,
    ConnEntry,
    DestFlags,
    DestSpec,
    ForwardingMethod,
    IPAddress,
    Protocol,
    RealServer,
    ServiceFlags,
    ServiceInfo,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    TunnelType,
    VirtualService,
)
from pylvs.core.schedulers import create_scheduler, scheduler_class
from pylvs.core.stats import Stats

# Persistence engines the kernel ships (``--pe``).
PERSISTENCE_ENGINES = ("sip",)
MAX_WEIGHT = 2**31 - 1


# A setting's value: an integer, or the integers of a vector sysctl (sync_threshold's file holds
# two, "3 50", so it is [3, 50]).
SysctlValue = int | list[int]


class SysctlProvider(TypingProtocol):
    """What serves ``get_sysctl``/``set_sysctl`` (the Director's ``Defense``)."""

    def get_sysctl(self) -> Mapping[str, SysctlValue]: ...

    def set_sysctl(self, values: dict[str, object]) -> None: ...

    def counters(self) -> dict[str, int]: ...


class TableListener:
    """Receives table changes, for data planes that mirror the table (sockets to open, kernel
    entries to program). Every method is optional; the defaults do nothing."""

    def service_added(self, svc: VirtualService) -> None:
        pass

    def service_changed(self, svc: VirtualService) -> None:
        pass

    def service_deleted(self, svc: VirtualService) -> None:
        pass

    def dest_added(self, svc: VirtualService, dest: RealServer) -> None:
        pass

    def dest_changed(self, svc: VirtualService, dest: RealServer) -> None:
        pass

    def dest_deleted(self, svc: VirtualService, dest: RealServer) -> None:
        pass

    def sysctl_changed(self, values: dict[str, SysctlValue]) -> None:
        """Settings were written through ``set_sysctl`` (the names given, their values now)."""


class IPVSTable:
    """The director's table of virtual services. Not thread-safe: one event loop owns it."""

    def __init__(self, conn_tab_size: int = 4096) -> None:
        self._services: dict[ServiceKey, VirtualService] = {}
        self._seq = itertools.count(1)
        self.timeouts = Timeouts()
        self.conn_tab_size = conn_tab_size
        self.total = Stats()
        self.listeners: list[TableListener] = []
        self.sysctl_written: dict[str, SysctlValue] = {}  # set_sysctl's, since the start
        # Set by the connection table: returns the rows of ``ipvsadm -Lc``.
        self.connection_provider: Callable[[], list[ConnEntry]] | None = None
        # Set by the Director: its flood defences' settings (net.ipv4.vs.drop_entry, ...).
        self.sysctl_provider: SysctlProvider | None = None

    # ---- lookups used by data planes -------------------------------------------------------

    def services(self) -> Iterator[VirtualService]:
        return iter(self._services.values())

    def lookup(self, key: ServiceKey) -> VirtualService | None:
        return self._services.get(key)

    def lookup_inet(self, protocol: int, addr: IPAddress, port: int) -> VirtualService | None:
        """The service for a packet to ``addr:port``: exact port first, then the port-0 wildcard."""
        af = 2 if addr.version == 4 else AF_INET6
        svc = self._services.get(ServiceKey(af, protocol, addr, port, 0))
        if svc is None and port:
            svc = self._services.get(ServiceKey(af, protocol, addr, 0, 0))
        return svc

    def _get(self, key: ServiceKey) -> VirtualService:
        svc = self._services.get(key)
        if svc is None:
            raise IPVSError(errno.ESRCH)
        return svc

    # ---- IPVSBackend: queries --------------------------------------------------------------

    def get_info(self) -> ServiceInfo:
        return ServiceInfo(conn_tab_size=self.conn_tab_size, num_services=len(self._services))

    def get_services(self) -> list[ServiceStatus]:
        return [self._status(s) for s in self._services.values()]

    def get_service(self, key: ServiceKey) -> ServiceStatus:
        return self._status(self._get(key))

    @staticmethod
    def _status(svc: VirtualService) -> ServiceStatus:
        dests = tuple(
            DestStatus(d.spec(), d.activeconns, d.inactconns, d.persistconns, d.stats.snapshot())
            for d in svc.destinations
        )
        return ServiceStatus(svc.spec(), dests, svc.stats.snapshot())

    def get_timeouts(self) -> Timeouts:
        return self.timeouts

    def get_connections(self) -> list[ConnEntry]:
        return self.connection_provider() if self.connection_provider else []

    def get_daemons(self) -> list[SyncDaemonStatus]:
        return []

    def get_sysctl(self) -> dict[str, SysctlValue]:
        """The flood defences' settings (``pylvs.core.defense``); EOPNOTSUPP without a
        connection table."""
        if self.sysctl_provider is None:
            raise IPVSError(errno.EOPNOTSUPP, "this table has no connection table to defend")
        return dict(self.sysctl_provider.get_sysctl())

    def set_sysctl(self, values: dict[str, object]) -> None:
        """Write settings (all checked before any is set); the data planes that mirror them
        (the kernel's IPVS) are told, and ``sysctl_written`` keeps what was written, so that a
        plane started later knows which settings were asked for and which are defaults."""
        if self.sysctl_provider is None:
            raise IPVSError(errno.EOPNOTSUPP, "this table has no connection table to defend")
        self.sysctl_provider.set_sysctl(values)
        now = self.sysctl_provider.get_sysctl()
        written = {name: now[name] for name in values if name in now}
        self.sysctl_written.update(written)
        for lst in self.listeners:
            lst.sysctl_changed(written)

    def get_defense(self) -> dict[str, int]:
        """The defences' counters: entries dropped and evicted, packets dropped, the state."""
        if self.sysctl_provider is None:
            raise IPVSError(errno.EOPNOTSUPP, "this table has no connection table to defend")
        return self.sysctl_provider.counters()

    # ---- IPVSBackend: services -------------------------------------------------------------

    @staticmethod
    def _check_service(spec: ServiceSpec) -> None:
        key = spec.key
        if not key.fwmark and key.protocol not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
            raise IPVSError(errno.EFAULT, "invalid protocol")
        if key.af == AF_INET6 and spec.persistent and not 1 <= spec.netmask <= 128:
            raise IPVSError(errno.EINVAL)
        try:
            scheduler_class(spec.scheduler)
        except KeyError:
            raise IPVSError(errno.ENOENT) from None
        if spec.pe_name and spec.pe_name not in PERSISTENCE_ENGINES:
            raise IPVSError(errno.ENOENT)

    def add_service(self, spec: ServiceSpec) -> None:
        # The kernel looks the service up before it looks at the scheduler: adding an existing
        # service with an unknown scheduler is EEXIST ("Service already exists"), not ENOENT.
        if spec.key in self._services:
            raise IPVSError(errno.EEXIST)
        self._check_service(spec)
        svc = VirtualService.from_spec(spec)
        svc.flags = spec.flags | ServiceFlags.HASHED
        svc.seq = next(self._seq)
        svc.scheduler = create_scheduler(spec.scheduler, svc)
        self._services[spec.key] = svc
        for lst in self.listeners:
            lst.service_added(svc)

    def edit_service(self, spec: ServiceSpec) -> None:
        svc = self._get(spec.key)
        self._check_service(spec)
        if spec.scheduler != svc.scheduler_name:
            if svc.scheduler is not None:
                svc.scheduler.done()
            svc.scheduler_name = spec.scheduler
            svc.scheduler = create_scheduler(spec.scheduler, svc)
        svc.flags = spec.flags | ServiceFlags.HASHED
        svc.timeout = spec.timeout
        svc.netmask = spec.netmask
        svc.pe_name = spec.pe_name
        # A scheduler's derived state may depend on the flags (sh-port, mh-fallback, ...).
        if svc.scheduler is not None:
            svc.scheduler.update()
        for lst in self.listeners:
            lst.service_changed(svc)

    def del_service(self, key: ServiceKey) -> None:
        svc = self._get(key)
        del self._services[key]
        if svc.scheduler is not None:
            svc.scheduler.done()
        for d in svc.destinations:
            d.flags &= ~DestFlags.AVAILABLE
            d.service = None
        for lst in self.listeners:
            lst.service_deleted(svc)

    def flush(self) -> None:
        for key in list(self._services):
            self.del_service(key)

    # ---- IPVSBackend: real servers ---------------------------------------------------------

    @staticmethod
    def _check_dest(svc: VirtualService, dest: DestSpec) -> None:
        # A real server of the other address family is only reachable through a tunnel
        # (ip_vs_genl_set_cmd checks this before anything else about the destination).
        if dest.family != svc.af and dest.fwd != ForwardingMethod.TUNNEL:
            raise IPVSError(errno.EINVAL)
        if dest.weight < 0 or dest.weight > MAX_WEIGHT:
            raise IPVSError(errno.ERANGE)
        if dest.l_threshold > dest.u_threshold:
            raise IPVSError(errno.ERANGE)
        if dest.tun_type == TunnelType.GUE and dest.tun_port == 0:
            raise IPVSError(errno.EINVAL)

    @staticmethod
    def _check_new_dest_addr(dest: DestSpec) -> None:
        # ip_vs_new_dest: only a unicast (or local) address can become a real server. The
        # kernel checks this after the duplicate lookup and never for an edit.
        # IPv4: inet_addr_type() says BROADCAST for 0.0.0.0/8 and 255.255.255.255, MULTICAST
        # for 224/4. IPv6: not unicast, or link-local (unless the director's own address).
        addr = dest.addr
        if addr.is_multicast or addr.is_unspecified:
            raise IPVSError(errno.EINVAL)
        if addr.version == 4 and (int(addr) >> 24 == 0 or int(addr) == 0xFFFFFFFF):
            raise IPVSError(errno.EINVAL)
        if addr.version == 6 and addr.is_link_local:
            raise IPVSError(errno.EINVAL)

    def add_dest(self, key: ServiceKey, dest: DestSpec) -> None:
        svc = self._get(key)
        self._check_dest(svc, dest)
        if svc.find_dest(dest.addr, dest.port) is not None:
            raise IPVSError(errno.EEXIST)
        self._check_new_dest_addr(dest)
        rs = RealServer.from_spec(dest)
        rs.service = svc
        rs.flags = DestFlags.AVAILABLE
        # The kernel adds a new destination at the head of the service's list.
        svc.destinations.insert(0, rs)
        if svc.scheduler is not None:
            svc.scheduler.add_dest(rs)
        for lst in self.listeners:
            lst.dest_added(svc, rs)

    def edit_dest(self, key: ServiceKey, dest: DestSpec) -> None:
        svc = self._get(key)
        self._check_dest(svc, dest)
        rs = svc.find_dest(dest.addr, dest.port)
        if rs is None:
            raise IPVSError(errno.ENOENT)
        rs.apply(dest)
        rs.flags |= DestFlags.AVAILABLE
        if not dest.u_threshold or dest.u_threshold > rs.total_conns:
            rs.flags &= ~DestFlags.OVERLOAD
        if svc.scheduler is not None:
            svc.scheduler.upd_dest(rs)
        for lst in self.listeners:
            lst.dest_changed(svc, rs)

    def del_dest(self, key: ServiceKey, addr: IPAddress, port: int) -> None:
        svc = self._get(key)
        rs = svc.find_dest(addr, port)
        if rs is None:
            raise IPVSError(errno.ENOENT)
        svc.destinations.remove(rs)
        rs.flags &= ~DestFlags.AVAILABLE
        if svc.scheduler is not None:
            svc.scheduler.del_dest(rs)
        rs.service = None
        for lst in self.listeners:
            lst.dest_deleted(svc, rs)

    # ---- IPVSBackend: counters and timeouts ------------------------------------------------

    def zero(self, key: ServiceKey | None = None) -> None:
        if key is not None:
            svc = self._get(key)
            svc.stats.zero()
            for d in svc.destinations:
                d.stats.zero()
            return
        for svc in self._services.values():
            svc.stats.zero()
            for d in svc.destinations:
                d.stats.zero()
        self.total.zero()

    def set_timeouts(self, timeouts: Timeouts) -> None:
        cur = self.timeouts
        self.timeouts = Timeouts(
            timeouts.tcp or cur.tcp,
            timeouts.tcp_fin or cur.tcp_fin,
            timeouts.udp or cur.udp,
        )

    def estimate(self) -> None:
        """One rate-estimator tick over every counter (the caller calls it every 2 s)."""
        self.total.estimate()
        for svc in self._services.values():
            svc.stats.estimate()
            for d in svc.destinations:
                d.stats.estimate()
