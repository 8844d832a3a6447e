"""The Maglev tables the XDP program schedules new connections from (issue #19, Katran's design).

Why: a new connection decided by the Python core costs the round trip up and a Python
``schedule``; for ``mh`` the decision is a pure table lookup by the client's hash, so the
program can make it itself at the driver's hook, as fast as it forwards established flows. The
table the program reads is *the* table the service's ``MaglevHashing`` scheduler built
(``table_indexes``), slot for slot, so it cannot decide differently from the core.

Which services (``unsuitable`` says why not): only those where a table lookup is the whole of
the core's decision: scheduler ``mh`` with the kernel's table size, not persistent (``-p`` makes
templates), not one-packet, no fwmark, a real port, no upper or lower connection threshold on
any server (OVERLOAD depends on counts only the core keeps), every server's method one whose
flows this plane gives the program (``kinds``: DR always, TUN (IPIP) and NAT where the plane
trusts checksums) and of the service's family, and at most ``MH_DESTS_PER_TABLE - 1`` servers.
Everything else keeps the path up. A NAT connection the program schedules gets only its way in
(destination rewritten to the server's address and port): the server's SYN-ACK goes up (SYN),
where the core, having entered the connection from the program's record, rewrites it back and
installs the reply flow once the connection is established, as for a connection it scheduled
(a reply that comes before its record was read makes the plane read the ring first:
``Forwarder.on_unknown_reply``). Where the program knows the way back to the client
(``reply_routes``: the forwarder's on-link networks, whose clients' MACs are the ones their
SYNs came from, and its default route's next hop once resolved) it installs the reply flow
with the way in, and the handshake never leaves the kernel. A server that takes no new connection (weight 0, OVERLOAD) or whose next hop the
forwarder does not know yet gets ``Method.NONE``: its clients go up, and the core applies
mh-fallback or refuses, exactly as without the program (and learns the neighbour).

While the core's flood defences are at work (``drop_packet`` dropping one new connection in
``drop_rate``, or the connection table full, where the core frees room by ``drop_entry`` or
refuses) no service is the program's (``held_by_core``): every new connection goes up, where
the core drops, makes room or refuses it as IPVS does, instead of the program admitting
connections the core would not. The plane checks this on each pass of its loop.

How a table changes without a packet seeing half of it: each service's table and servers are
written whole into a free one of the program's ``MH_TABLES`` tables, then the service's entry is
switched to it in one map update; the old table is freed and only overwritten later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pylvs.core.director import Director
from pylvs.core.model import DestFlags, ForwardingMethod, RealServer, TunnelType, VirtualService
from pylvs.core.schedulers.mh import MH_PORT, MaglevHashing
from pylvs.dataplane.packet.forward import FLOW_DR, FLOW_NAT_DST, FLOW_TUN
from pylvs.dataplane.packet.interface import Interface
from pylvs.dataplane.xdp.loader import XdpProgram
from pylvs.dataplane.xdp.maps import (
    ACTION,
    HOP,
    MH_DESTS_PER_TABLE,
    MH_TAB_SIZE,
    MH_TABLES,
    SVC,
    SVC_F_MH_PORT,
    Method,
    hop_key,
    pad16,
    service_key,
)

log = logging.getLogger("pylvs.dataplane.xdp")

# the flow kind each forwarding method's flows are (FLOW_*), for the methods the program can
# schedule (NAT: the way in; the core installs the reply's flow)
_KIND = {ForwardingMethod.DROUTE: FLOW_DR, ForwardingMethod.TUNNEL: FLOW_TUN,
         ForwardingMethod.MASQ: FLOW_NAT_DST}
_METHOD = {ForwardingMethod.DROUTE: Method.DR, ForwardingMethod.TUNNEL: Method.TUN,
           ForwardingMethod.MASQ: Method.NAT_IN}
# the last server index of every table: Method.NONE, for empty slots
NONE_INDEX = MH_DESTS_PER_TABLE - 1


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a real server's packets leave: interface, MACs, and for TUN the outer source."""

    ifindex: int
    dmac: bytes
    smac: bytes
    src: bytes = b""  # the interface's address of the server's family (TUN outer source)
    mtu: int = 0


Resolve = Callable[[bytes], NextHop | None]


@dataclass(frozen=True, slots=True)
class ServiceTable:
    """One service as the program's maps hold it (compared to skip unchanged rewrites)."""

    key: bytes               # struct lvs_svc_key
    flags: int               # SVC_F_*
    dests: tuple[bytes, ...]  # struct lvs_action per server, in list order
    slots: tuple[int, ...]   # per slot: index into dests, NONE_INDEX for none
    nat: bool = False        # some server is NAT: its replies come back through the director


def unsuitable(svc: VirtualService, kinds: Iterable[int]) -> str | None:
    """Why the program may not schedule ``svc`` (None: it may)."""
    sched = svc.scheduler
    if not isinstance(sched, MaglevHashing):
        return "scheduler is not mh"
    if sched.tab_size != MH_TAB_SIZE:
        return f"table size {sched.tab_size}, the program's is {MH_TAB_SIZE}"
    key = svc.key
    if key.fwmark or key.addr is None or not key.port:
        return "fwmark or port-0 service"
    if key.protocol not in (6, 17):
        return "not TCP or UDP"
    if svc.persistent:
        return "persistent"
    if svc.one_packet:
        return "one-packet scheduling"
    if len(svc.destinations) > NONE_INDEX:
        return f"more than {NONE_INDEX} servers"
    allowed = set(kinds)
    for d in svc.destinations:
        if d.u_threshold or d.l_threshold:
            return f"{d.addr}: connection thresholds"
        kind = _KIND.get(d.fwd)
        if kind is None or kind not in allowed:
            return f"{d.addr}: {d.fwd.name} flows are not the program's here"
        if d.fwd is ForwardingMethod.TUNNEL and d.tun_type is not TunnelType.IPIP:
            return f"{d.addr}: {d.tun_type.name} tunnel"
        if d.addr.version != key.addr.version:
            return f"{d.addr}: another address family"
    return None


def _takes_new(d: RealServer) -> bool:
    """``!_unavailable`` of the mh scheduler: weight above 0 and not OVERLOAD."""
    return d.weight > 0 and not d.flags & DestFlags.OVERLOAD


def dest_action(svc: VirtualService, d: RealServer, resolve: Resolve) -> bytes:
    """The action a slot naming ``d`` gives a new flow: the forwarding the core's flow for the
    connection would get; ``Method.NONE`` when ``d`` takes no new connection or its next hop
    is not known yet. Every action carries the server's address and port, by which the core
    binds the connection it enters for the flow (and which a NAT flow rewrites the destination
    to)."""
    assert svc.key.addr is not None
    port = d.port or svc.key.port
    addr = pad16(d.addr_packed)
    hop = resolve(d.addr_packed) if _takes_new(d) else None
    if hop is None or (d.fwd is ForwardingMethod.TUNNEL and not hop.src):
        return ACTION.pack(int(Method.NONE), 0, 0, 0, bytes(6), bytes(6), addr, bytes(16),
                           port.to_bytes(2, "big"), 0, 0, 0, 0, 0, 0)
    method = _METHOD[d.fwd]
    tun = method is Method.TUN
    return ACTION.pack(int(method), d.addr.version if tun else 0, 0, hop.ifindex, hop.dmac,
                       hop.smac, addr, pad16(hop.src if tun else b""), port.to_bytes(2, "big"),
                       hop.mtu if tun else 0, 0, 0, 0, 0, 0)


def service_table(svc: VirtualService, resolve: Resolve) -> ServiceTable:
    """What the program's maps must hold for ``svc`` (one ``unsuitable`` calls fit)."""
    sched = svc.scheduler
    assert isinstance(sched, MaglevHashing) and svc.key.addr is not None
    dests = tuple(dest_action(svc, d, resolve) for d in svc.destinations)
    slots = tuple(NONE_INDEX if i < 0 else i for i in sched.table_indexes())
    flags = SVC_F_MH_PORT if svc.flags & MH_PORT else 0
    return ServiceTable(service_key(svc.key.protocol, svc.key.addr.packed, svc.key.port),
                        flags, dests, slots,
                        any(d.fwd is ForwardingMethod.MASQ for d in svc.destinations))


_NONE_ACTION = ACTION.pack(int(Method.NONE), 0, 0, 0, bytes(6), bytes(6), bytes(16), bytes(16),
                           bytes(2), 0, 0, 0, 0, 0, 0)


class MhMaps:
    """Keeps the program's ``mh_services``/``mh_slots``/``mh_dests`` equal to a set of
    ``ServiceTable``s, rewriting only what changed."""

    def __init__(self, program: XdpProgram) -> None:
        self.program = program
        self.live: dict[bytes, tuple[int, ServiceTable]] = {}  # service key -> (table, content)
        self._free = list(range(MH_TABLES - 1, -1, -1))
        self.full = 0  # services left to the core because every table was taken
        self.nat = False  # the program schedules NAT connections (whose replies the core sees)
        self.hops: dict[bytes, bytes] = {}  # reply_hops as written

    def apply(self, wanted: Iterable[ServiceTable]) -> int:
        """Make the maps hold exactly ``wanted``; the number of services rewritten."""
        want = {t.key: t for t in wanted}
        for key in [k for k in self.live if k not in want]:
            table, _old = self.live.pop(key)
            self.program.service_delete(key)
            self._free.append(table)
        written = 0
        for key, t in want.items():
            cur = self.live.get(key)
            if cur is not None and cur[1] == t:
                continue
            if not self._free:
                self.full += 1
                continue
            table = self._free.pop()
            base = table * MH_DESTS_PER_TABLE
            for i, value in enumerate(t.dests):
                self.program.dest_put(base + i, value)
            self.program.dest_put(base + NONE_INDEX, _NONE_ACTION)
            self.program.slots_put(table * MH_TAB_SIZE, [base + i for i in t.slots])
            self.program.service_put(key, SVC.pack(table, t.flags))  # the switch
            if cur is not None:
                self._free.append(cur[0])
            self.live[key] = (table, t)
            written += 1
        self.nat = any(t.nat for _table, t in self.live.values())
        return written

    def set_hops(self, wanted: dict[bytes, bytes]) -> int:
        """Make ``reply_hops`` hold exactly ``wanted`` (``reply_routes``); entries written."""
        for key in [k for k in self.hops if k not in wanted]:
            self.program.hop_delete(key)
            del self.hops[key]
        written = 0
        for key, value in wanted.items():
            if self.hops.get(key) != value:
                self.program.hop_put(key, value)
                self.hops[key] = value
                written += 1
        return written

    def clear(self) -> None:
        self.apply(())
        self.set_hops({})


def _prefix_len(mask: int) -> int:
    return bin(mask).count("1")


def reply_routes(interfaces: Iterable[Interface], gateway: tuple[int, bytes] | None,
                 gateway6: tuple[int, bytes] | None,
                 neighbours: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """``reply_hops`` as the forwarder routes (``NextHop.route``): each on-link network of
    each interface (the client's MAC: its SYN's source, on that interface), and each family's
    default route whose next hop's MAC is known. Where two interfaces' networks overlap the
    trie takes the longer prefix, the forwarder the first interface: such a client's replies
    are left to the core (no entry)."""
    out: dict[bytes, bytes] = {}
    clash: set[bytes] = set()
    by_index = {}
    for iface in interfaces:
        by_index[iface.ifindex] = iface
        value = HOP.pack(iface.ifindex, bytes(6), iface.mac, 1)
        nets = [(4, net.to_bytes(4, "big"), _prefix_len(mask)) for net, mask in iface.networks]
        nets += [(6, net.to_bytes(16, "big"), _prefix_len(mask))
                 for net, mask in iface.networks6]
        for family, prefix, length in nets:
            key = hop_key(family, prefix, length)
            if key in out and out[key] != value:
                clash.add(key)
            out[key] = value
    for key in clash:
        del out[key]
    for family, gw in ((4, gateway), (6, gateway6)):
        if gw is None or gw[0] not in by_index:
            continue
        mac = neighbours.get(gw[1])
        if mac is not None:
            out[hop_key(family, b"", 0)] = HOP.pack(gw[0], bytes(mac), by_index[gw[0]].mac, 0)
    return out


def held_by_core(director: Director) -> str | None:
    """Why no service may be scheduled in the program now (None: those ``unsuitable`` allows
    may): the checks ``Director.schedule`` makes before any scheduler, for every service."""
    if director.defense.drop_rate:
        return f"drop_packet is dropping 1 in {director.defense.drop_rate} new connections"
    if director.connection_count >= director.max_connections:
        return f"the connection table is full ({director.max_connections})"
    return None


def wanted_tables(services: Iterable[VirtualService], kinds: Iterable[int],
                  resolve: Resolve) -> list[ServiceTable]:
    """The tables of every service the program may schedule."""
    kinds = frozenset(kinds)
    out = []
    for svc in services:
        why = unsuitable(svc, kinds)
        if why is None:
            out.append(service_table(svc, resolve))
        else:
            log.debug("xdp: %s stays with the core: %s", svc, why)
    return out
