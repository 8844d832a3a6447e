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
# struct lvs_action: method, tun_family, pad, ifindex, dmac, smac, addr[16], tun_src[16],
# port (be), mtu, pad3, pad4, last_seen_ns, packets, bytes
ACTION = struct.Struct("=BBHI6s6s16s16s2sHIIQQQ")
ACTION_COUNTERS_OFFSET = 64  # where last_seen_ns, packets, bytes start

# Counter slots of the ``stats`` per-CPU array, in the program's enum order.
STAT_NAMES = (
    "rx", "tx", "redirect", "pass_no_flow", "pass_control", "pass_other",
    "drop_truncated", "aborted",
)


class Method(IntEnum):
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


def pad16(packed: bytes) -> bytes:
    return packed.ljust(16, b"\0")


def unpack_counters(value: bytes) -> FlowCounters:
    last, packets, nbytes = struct.unpack_from("=QQQ", value, ACTION_COUNTERS_OFFSET)
    return FlowCounters(last, packets, nbytes)


def sum_percpu(value: bytes) -> int:
    """A per-CPU array value is one u64 per possible CPU (8-byte aligned): their sum."""
    return sum(struct.unpack(f"={len(value) // 8}Q", value))
