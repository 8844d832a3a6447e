"""The byte layout of the XDP program's maps, and the flow decisions the core writes into them.

Sans-IO: this module turns a forwarding decision (method, addresses, MACs, egress interface)
into the exact bytes of ``struct lvs_flow_key`` / ``struct lvs_action`` in ``xdp_lb.bpf.c``,
and reads counters back. The layouts are checked against the object's BTF by the tests, so a
change on one side that the other does not follow fails there and not in the field.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

# struct lvs_flow_key: family, proto, pad, sport (be), dport (be), saddr[16], daddr[16]
KEY = struct.Struct("=BBH2s2s16s16s")
# struct lvs_action: method, tun_family, flags, ifindex, dmac, smac, addr[16], tun_src[16],
# port (be), mtu, first_len, pad4, last_seen_ns, packets, bytes
ACTION = struct.Struct("=BBHI6s6s16s16s2sHIIQQQ")
ACTION_COUNTERS_OFFSET = 64  # where last_seen_ns, packets, bytes start
FLOW_F_KERNEL = 1  # lvs_action.flags: the program scheduled the flow (from a Maglev table)
FLOW_F_REPLY = 2   # ... and it is a NAT connection's reply direction (server -> client)
FLOW_F_OPENING = 4  # the core installed it at the connection's SYN (the program reports the ACK)

# struct lvs_svc_key: family, proto, vport (be), vaddr[16]; struct lvs_svc: table, flags
SVC_KEY = struct.Struct("=BB2s16s")
SVC = struct.Struct("=II")
SVC_F_MH_PORT = 1
# The program's Maglev tables: how many, their size (the kernel's default) and servers each.
MH_TAB_SIZE = 4093
MH_TABLES = 128
MH_DESTS_PER_TABLE = 256

# Counter slots of the ``stats`` per-CPU array, in the program's enum order.
STAT_NAMES = (
    "rx", "tx", "redirect", "pass_no_flow", "pass_control", "pass_other",
    "drop_truncated", "aborted", "mh_scheduled", "pass_mh_unavailable", "mh_queue_full",
    "mh_reply", "mh_no_reply_hop",
)


class Method(IntEnum):
    NONE = 0     # a Maglev slot whose server takes no new connection: up to the core
    DR = 1
    NAT_IN = 2   # client -> real server: destination becomes the real server's
    NAT_OUT = 3  # real server -> client: source becomes the virtual service's
    TUN = 4


@dataclass(frozen=True, slots=True)
class FlowKey:
    """One direction of a flow, as the program sees it on the wire."""

    proto: int
    saddr: str
    sport: int
    daddr: str
    dport: int

    def pack(self) -> bytes:
        src, dst = ipaddress.ip_address(self.saddr), ipaddress.ip_address(self.daddr)
        if src.version != dst.version:
            raise ValueError(f"mixed address families in a flow key: {self.saddr} -> {self.daddr}")
        return KEY.pack(src.version, self.proto, 0, self.sport.to_bytes(2, "big"),
                        self.dport.to_bytes(2, "big"), pad16(src.packed), pad16(dst.packed))


@dataclass(frozen=True, slots=True)
class FlowAction:
    """What the program does with a packet of the flow."""

    method: Method
    ifindex: int
    dmac: bytes
    smac: bytes
    addr: str | None = None      # NAT: new address; TUN: outer destination
    port: int = 0                # NAT: new port
    tun_src: str | None = None   # TUN: outer source
    mtu: int = 0                 # TUN: egress MTU (0: no check)

    def pack(self) -> bytes:
        if len(self.dmac) != 6 or len(self.smac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        addr = ipaddress.ip_address(self.addr) if self.addr else None
        tun_src = ipaddress.ip_address(self.tun_src) if self.tun_src else None
        if self.method in (Method.NAT_IN, Method.NAT_OUT, Method.TUN) and addr is None:
            raise ValueError(f"{self.method.name} needs an address")
        if self.method is Method.TUN and (tun_src is None or addr is None
                                         or tun_src.version != addr.version):
            raise ValueError("TUN needs an outer source and destination of one family")
        tun_family = addr.version if (self.method is Method.TUN and addr) else 0
        return ACTION.pack(int(self.method), tun_family, 0, self.ifindex, self.dmac, self.smac,
                           pad16(addr.packed if addr else b""),
                           pad16(tun_src.packed if tun_src else b""),
                           self.port.to_bytes(2, "big"), self.mtu, 0, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class FlowCounters:
    last_seen_ns: int
    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class FlowValue:
    """An action as read back from the flow map: what the core needs of a flow the program
    scheduled itself (which real server, and what the first packet carried)."""

    method: int
    flags: int
    addr: bytes      # 16 bytes, IPv4 in the first 4
    port: int
    first_len: int
    counters: FlowCounters

    @property
    def kernel(self) -> bool:
        return bool(self.flags & FLOW_F_KERNEL)


# struct lvs_new_flow, a record of the program's new_flows ring: the flow key (KEY, whole),
# the server's address and port (be), kind (NEW_*), reply (a NAT reply flow was installed),
# first_len, hash_in, hash, ts (ns)
NEW_FLOW = struct.Struct("=40s16s2sBBIIIQ")
NEW_SCHEDULED = 0  # the program scheduled the flow (its first packet)
NEW_ACKED = 1      # the flow's first packet without SYN (the handshake's ACK) passed

# what entering a kernel-made flow reads of struct lvs_action, in one unpack: flags, addr,
# port (be), first_len, last_seen_ns, packets, bytes (the rest skipped)
IMPORT_FIELDS = struct.Struct("=2xH16x16s16x2s2xI4xQQQ")


# struct lvs_hop_key (prefixlen, family, addr[16], padding) and struct lvs_hop (ifindex, dmac,
# smac, onlink): the reply_hops trie, where a NAT reply flow the program makes goes
HOP_KEY = struct.Struct("=IB16s3x")
HOP = struct.Struct("=I6s6sB3x")


def hop_key(family: int, prefix: bytes, length: int) -> bytes:
    """``struct lvs_hop_key`` of a route to ``prefix``/``length`` (0: the default route)."""
    return HOP_KEY.pack(8 + length, family, pad16(prefix))


def unpack_value(value: bytes) -> FlowValue:
    flags, addr, port, first_len, last, packets, nbytes = IMPORT_FIELDS.unpack(value)
    return FlowValue(value[0], flags, addr, int.from_bytes(port, "big"), first_len,
                     FlowCounters(last, packets, nbytes))


def service_key(proto: int, vaddr: bytes, vport: int) -> bytes:
    """``struct lvs_svc_key`` of a service, as the program builds it from a packet."""
    return SVC_KEY.pack(4 if len(vaddr) == 4 else 6, proto, vport.to_bytes(2, "big"), pad16(vaddr))


def unpack_key(key: bytes) -> tuple[int, bytes, int, bytes, int]:
    """(proto, saddr, sport, daddr, dport) of a packed flow key, addresses at their length."""
    family, proto, _pad, sport, dport, saddr, daddr = KEY.unpack(key)
    n = 4 if family == 4 else 16
    return (proto, saddr[:n], int.from_bytes(sport, "big"), daddr[:n], int.from_bytes(dport, "big"))


def pad16(packed: bytes) -> bytes:
    return packed.ljust(16, b"\0")


def unpack_counters(value: bytes) -> FlowCounters:
    last, packets, nbytes = struct.unpack_from("=QQQ", value, ACTION_COUNTERS_OFFSET)
    return FlowCounters(last, packets, nbytes)


def sum_percpu(value: bytes) -> int:
    """A per-CPU array value is one u64 per possible CPU (8-byte aligned): their sum."""
    return sum(struct.unpack(f"={len(value) // 8}Q", value))
