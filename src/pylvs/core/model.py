"""The IPVS data model: virtual services, real servers and the values that describe them.

What this is for: the one vocabulary shared by the control plane (table, pylvsadm, keepalived.conf)
and every data plane. The names and numeric values follow Linux IPVS (``include/uapi/linux/ip_vs.h``)
so that a table can be mirrored into the kernel attribute for attribute, and so that an operator
reading the code sees the words of ``ipvsadm``.

What this is not for: scheduling decisions, connection tracking or I/O. Runtime objects here hold
counters that the connection table updates, but never decide anything themselves.

Two layers:
- ``ServiceSpec`` / ``DestSpec``: immutable, user-facing descriptions (what ``ipvsadm -A``/``-a``
  say, what netlink carries). Built by parsers, compared by value, safe to pass between processes.
- ``VirtualService`` / ``RealServer``: the live, mutable objects in a table, with counters and the
  scheduler's private state. Identity matters: a connection keeps a reference to its real server
  even after that server is deleted from the table, exactly as IPVS keeps a "trashed" dest alive.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import typing
from dataclasses import dataclass, field
from typing import Any

from pylvs.core.stats import Stats

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

AF_INET = socket.AF_INET  # 2
AF_INET6 = socket.AF_INET6  # 10


class Protocol(enum.IntEnum):
    """Transport protocol of a virtual service, by IP protocol number (as IPVS keys it)."""

    TCP = 6
    UDP = 17
    SCTP = 132

    @property
    def label(self) -> str:
        """The four-column label ``ipvsadm -L`` prints (``TCP``, ``UDP``, ``SCTP``)."""
        return self.name


class ForwardingMethod(enum.IntEnum):
    """How the director hands a packet to a real server (IP_VS_CONN_F_FWD_MASK values)."""

    MASQ = 0  # NAT, ipvsadm -m, "Masq"
    LOCALNODE = 1  # the director itself serves, "Local"
    TUNNEL = 2  # IP-in-IP (or GUE/GRE), ipvsadm -i, "Tunnel"
    DROUTE = 3  # direct routing, ipvsadm -g (the default), "Route"
    BYPASS = 4  # "Bypass"

    @property
    def label(self) -> str:
        """The Forward column of ``ipvsadm -L``."""
        return _FWD_LABELS[self]

    @property
    def flag(self) -> str:
        """The option ``ipvsadm -S`` writes for it."""
        return _FWD_FLAGS[self]


_FWD_LABELS = {
    ForwardingMethod.MASQ: "Masq",
    ForwardingMethod.LOCALNODE: "Local",
    ForwardingMethod.TUNNEL: "Tunnel",
    ForwardingMethod.DROUTE: "Route",
    ForwardingMethod.BYPASS: "Bypass",
}
_FWD_FLAGS = {
    ForwardingMethod.MASQ: "-m",
    ForwardingMethod.LOCALNODE: "-g",
    ForwardingMethod.TUNNEL: "-i",
    ForwardingMethod.DROUTE: "-g",
    ForwardingMethod.BYPASS: "-g",
}


class TunnelType(enum.IntEnum):
    """Encapsulation for ForwardingMethod.TUNNEL (IP_VS_CONN_F_TUNNEL_TYPE_*)."""

    IPIP = 0
    GUE = 1
    GRE = 2


class TunnelFlags(enum.IntFlag):
    """IP_VS_TUNNEL_ENCAP_FLAG_*: checksum options of GUE/GRE encapsulation."""

    NOCSUM = 0
    CSUM = 1 << 0
    REMCSUM = 1 << 1


class ServiceFlags(enum.IntFlag):
    """IP_VS_SVC_F_* bits of a virtual service, with the kernel's values."""

    NONE = 0
    PERSISTENT = 0x0001
    HASHED = 0x0002
    ONEPACKET = 0x0004
    SCHED1 = 0x0008
    SCHED2 = 0x0010
    SCHED3 = 0x0020


# Scheduler flag names by scheduler (ipvsadm -b): each maps to SCHED1..SCHED3.
SCHED_FLAG_NAMES: dict[str, ServiceFlags] = {
    "sh-fallback": ServiceFlags.SCHED1,
    "sh-port": ServiceFlags.SCHED2,
    "mh-fallback": ServiceFlags.SCHED1,
    "mh-port": ServiceFlags.SCHED2,
    "flag-1": ServiceFlags.SCHED1,
    "flag-2": ServiceFlags.SCHED2,
    "flag-3": ServiceFlags.SCHED3,
}


class DestFlags(enum.IntFlag):
    """IP_VS_DEST_F_* runtime bits of a real server."""

    NONE = 0
    AVAILABLE = 0x0001
    OVERLOAD = 0x0002


# The scheduler names themselves are the registry's (``pylvs.core.schedulers.SCHEDULER_NAMES``).
DEFAULT_SCHEDULER = "wlc"
# ipvsadm's -p with no value; the kernel's own default when the flag is set without a timeout.
DEFAULT_PERSISTENCE_TIMEOUT = 360
IPVS_VERSION = "1.2.1"
IPVS_VERSION_CODE = 0x010201
DEFAULT_CONN_TAB_SIZE = 4096


def parse_address(text: str | IPAddress | bytes) -> IPAddress:
    """An IPv4/IPv6 address from text, packed bytes or an address object."""
    if isinstance(text, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return text
    return ipaddress.ip_address(text)


def family_of(addr: IPAddress) -> int:
    """AF_INET or AF_INET6, as IPVS stores ``af``."""
    return AF_INET if addr.version == 4 else AF_INET6


def format_addr_port(addr: IPAddress, port: int) -> str:
    """``1.2.3.4:80`` or ``[2001:db8::1]:80``, as ipvsadm and keepalived print them."""
    if addr.version == 6:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What identifies a virtual service: protocol + VIP + port, or a firewall mark (+ family)."""

    af: int
    protocol: int  # Protocol value; 0 for a fwmark service
    addr: IPAddress | None
    port: int
    fwmark: int = 0

    @classmethod
    def inet(cls, protocol: Protocol | int, addr: str | IPAddress, port: int) -> ServiceKey:
        a = parse_address(addr)
        return cls(family_of(a), int(protocol), a, port, 0)

    @classmethod
    def mark(cls, fwmark: int, af: int = AF_INET) -> ServiceKey:
        return cls(af, 0, None, 0, fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark}" + (" IPv6" if self.af == AF_INET6 else "")
        assert self.addr is not None
        return f"{Protocol(self.protocol).name} {format_addr_port(self.addr, self.port)}"

    def to_wire(self) -> dict[str, Any]:
        return {
            "af": self.af,
            "protocol": self.protocol,
            "addr": str(self.addr) if self.addr is not None else None,
            "port": self.port,
            "fwmark": self.fwmark,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> ServiceKey:
        addr = parse_address(d["addr"]) if d.get("addr") is not None else None
        return cls(int(d["af"]), int(d["protocol"]), addr, int(d["port"]), int(d.get("fwmark", 0)))


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A virtual service as ``ipvsadm -A``/``-E`` or netlink describe it.

    ``netmask`` is the persistence granularity: a dotted IPv4 mask as an int (0xFFFFFFFF = /32)
    for IPv4 services, a prefix length (128 default) for IPv6 ones, as the kernel stores it.
    """

    key: ServiceKey
    scheduler: str = DEFAULT_SCHEDULER
    flags: ServiceFlags = ServiceFlags.NONE
    timeout: int = 0  # persistence timeout, seconds (0 = not persistent)
    netmask: int = 0xFFFFFFFF
    pe_name: str = ""

    @property
    def persistent(self) -> bool:
        return bool(self.flags & ServiceFlags.PERSISTENT)

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key.to_wire(),
            "scheduler": self.scheduler,
            "flags": int(self.flags),
            "timeout": self.timeout,
            "netmask": self.netmask,
            "pe_name": self.pe_name,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> ServiceSpec:
        return cls(
            ServiceKey.from_wire(d["key"]),
            str(d["scheduler"]),
            ServiceFlags(int(d["flags"])),
            int(d["timeout"]),
            int(d["netmask"]),
            str(d.get("pe_name", "")),
        )


@dataclass(frozen=True, slots=True)
class DestSpec:
    """A real server as ``ipvsadm -a``/``-e`` or netlink describe it."""

    addr: IPAddress
    port: int
    fwd: ForwardingMethod = ForwardingMethod.DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: TunnelType = TunnelType.IPIP
    tun_port: int = 0
    tun_flags: TunnelFlags = TunnelFlags.NOCSUM
    af: int = 0  # 0: same family as addr

    @property
    def family(self) -> int:
        return self.af or family_of(self.addr)

    def to_wire(self) -> dict[str, Any]:
        return {
            "addr": str(self.addr),
            "port": self.port,
            "fwd": int(self.fwd),
            "weight": self.weight,
            "u_threshold": self.u_threshold,
            "l_threshold": self.l_threshold,
            "tun_type": int(self.tun_type),
            "tun_port": self.tun_port,
            "tun_flags": int(self.tun_flags),
            "af": self.af,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> DestSpec:
        return cls(
            parse_address(d["addr"]),
            int(d["port"]),
            ForwardingMethod(int(d["fwd"])),
            int(d["weight"]),
            int(d["u_threshold"]),
            int(d["l_threshold"]),
            TunnelType(int(d["tun_type"])),
            int(d["tun_port"]),
            TunnelFlags(int(d["tun_flags"])),
            int(d.get("af", 0)),
        )


@dataclass(slots=True, eq=False)
class RealServer:
    """A live real server (the kernel's ``struct ip_vs_dest``).

    The connection table maintains ``activeconns``/``inactconns``/``persistconns`` and the
    OVERLOAD flag; schedulers read them. ``service`` is None once the server has been deleted
    (its connections still point here until they expire, like the kernel's dest trash).
    """

    addr: IPAddress
    port: int
    fwd: ForwardingMethod = ForwardingMethod.DROUTE
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: TunnelType = TunnelType.IPIP
    tun_port: int = 0
    tun_flags: TunnelFlags = TunnelFlags.NOCSUM
    af: int = AF_INET
    flags: DestFlags = DestFlags.AVAILABLE
    activeconns: int = 0
    inactconns: int = 0
    persistconns: int = 0
    stats: Stats = field(default_factory=Stats)
    service: VirtualService | None = None
    addr_packed: bytes = b""
    # Free slot for a scheduler's per-server state (e.g. lblcr's set membership).
    sched_data: Any = None

    def __post_init__(self) -> None:
        self.addr_packed = self.addr.packed

    @classmethod
    def from_spec(cls, spec: DestSpec) -> RealServer:
        rs = cls(spec.addr, spec.port)
        rs.apply(spec)
        return rs

    def apply(self, spec: DestSpec) -> None:
        """Take the settable attributes of ``spec`` (what ``ipvsadm -e`` can change)."""
        self.fwd = spec.fwd
        self.weight = spec.weight
        self.u_threshold = spec.u_threshold
        self.l_threshold = spec.l_threshold
        self.tun_type = spec.tun_type
        self.tun_port = spec.tun_port
        self.tun_flags = spec.tun_flags
        self.af = spec.family

    @property
    def overloaded(self) -> bool:
        return bool(self.flags & DestFlags.OVERLOAD)

    @property
    def available(self) -> bool:
        return bool(self.flags & DestFlags.AVAILABLE)

    @property
    def total_conns(self) -> int:
        """``ip_vs_dest_totalconns``: what the thresholds compare against."""
        return self.activeconns + self.inactconns

    def spec(self) -> DestSpec:
        return DestSpec(
            self.addr, self.port, self.fwd, self.weight, self.u_threshold, self.l_threshold,
            self.tun_type, self.tun_port, self.tun_flags, self.af,
        )

    def __repr__(self) -> str:
        return f"RealServer({format_addr_port(self.addr, self.port)} w={self.weight})"


class BoundScheduler(typing.Protocol):
    """What the table and the connection table call on a service's scheduler.

    ``pylvs.core.schedulers.base.Scheduler`` implements it; it is spelled out here so that the
    model, which the schedulers import, names no scheduler module (no import cycle, not even a
    type-only one).
    """

    @property
    def reads_conns(self) -> bool: ...

    def add_dest(self, dest: RealServer) -> None: ...

    def del_dest(self, dest: RealServer) -> None: ...

    def upd_dest(self, dest: RealServer) -> None: ...

    def update(self) -> None: ...

    def conns_changed(self, dest: RealServer) -> None: ...

    def done(self) -> None: ...

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None: ...


@dataclass(slots=True, eq=False)
class VirtualService:
    """A live virtual service (the kernel's ``struct ip_vs_service``).

    ``destinations`` is in the kernel's list order: a new real server goes to the *front*
    (``list_add_rcu`` at the head), which is what ``ipvsadm -L --nosort`` shows and what the
    list-walking schedulers (rr, wrr, lc, ...) iterate over.
    """

    key: ServiceKey
    scheduler_name: str = DEFAULT_SCHEDULER
    flags: ServiceFlags = ServiceFlags.NONE
    timeout: int = 0
    netmask: int = 0xFFFFFFFF
    pe_name: str = ""
    destinations: list[RealServer] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    scheduler: BoundScheduler | None = None
    # Insertion sequence number, for a stable "kernel order" of services.
    seq: int = 0

    @classmethod
    def from_spec(cls, spec: ServiceSpec) -> VirtualService:
        return cls(spec.key, spec.scheduler, spec.flags, spec.timeout, spec.netmask, spec.pe_name)

    @property
    def af(self) -> int:
        return self.key.af

    @property
    def persistent(self) -> bool:
        return bool(self.flags & ServiceFlags.PERSISTENT)

    @property
    def one_packet(self) -> bool:
        return bool(self.flags & ServiceFlags.ONEPACKET)

    def find_dest(self, addr: IPAddress, port: int) -> RealServer | None:
        for d in self.destinations:
            if d.port == port and d.addr == addr:
                return d
        return None

    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            self.key, self.scheduler_name, self.flags, self.timeout, self.netmask, self.pe_name,
        )

    def __repr__(self) -> str:
        return f"VirtualService({self.key} {self.scheduler_name})"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connection timeouts set by ``ipvsadm --set tcp tcpfin udp`` (seconds)."""

    tcp: int = 900
    tcp_fin: int = 120
    udp: int = 300


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What ``ipvsadm -L`` prints in its first line, and the daemon's sync state."""

    version: str = IPVS_VERSION
    conn_tab_size: int = DEFAULT_CONN_TAB_SIZE
    num_services: int = 0


@dataclass(frozen=True, slots=True)
class ConnEntry:
    """One row of ``ipvsadm -Lc``: a connection or persistence template, as reported.

    ``protocol`` is the IP protocol number (0 for an IPv4 template of a fwmark service shows as
    ``IP``); ``expires`` is seconds left; ``state`` the IPVS state name (``ESTABLISHED``, ...).
    """

    protocol: int
    af: int
    caddr: IPAddress
    cport: int
    vaddr: IPAddress
    vport: int
    daddr: IPAddress
    dport: int
    state: str
    expires: float
    flags: int = 0
    pe_name: str = ""
    pe_data: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol, "af": self.af,
            "caddr": str(self.caddr), "cport": self.cport,
            "vaddr": str(self.vaddr), "vport": self.vport,
            "daddr": str(self.daddr), "dport": self.dport,
            "state": self.state, "expires": self.expires, "flags": self.flags,
            "pe_name": self.pe_name, "pe_data": self.pe_data,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> ConnEntry:
        return cls(
            int(d["protocol"]), int(d["af"]),
            parse_address(d["caddr"]), int(d["cport"]),
            parse_address(d["vaddr"]), int(d["vport"]),
            parse_address(d["daddr"]), int(d["dport"]),
            str(d["state"]), float(d["expires"]), int(d.get("flags", 0)),
            str(d.get("pe_name", "")), str(d.get("pe_data", "")),
        )
