"""The IPv6 half of the director's per-packet logic (DR, NAT, TUN), without I/O.

What this is for: what ``forward.Forwarder`` does for IPv4, for IPv6 services, as kernel IPVS
does it (``ip_vs_in``/``ip_vs_out`` for AF_INET6 and the ``*_xmit_v6`` functions); the
``Forwarder`` hands every IPv6 frame here (``IPv6Path.handle``) and shares its Director, its
interfaces, its neighbour table, its next-hop cache, its side frames, its drop counters and its
fragment table with this object:

- DR: destination MAC <- the real server's, source MAC <- the director's; the packet is left
  as it is (the real server holds the VIP on ``lo``; IPv6 answers neighbour solicitations only
  for addresses of the receiving interface, so no ``arp_ignore`` is needed there).
- NAT: destination address and port <- the real server's, with the TCP/UDP checksum updated
  incrementally over the IPv6 pseudo-header (IPv6 has no header checksum); replies from the
  real server get their source rewritten back to VIP:port. ICMPv6 errors about a connection are
  translated both ways (outer and quoted addresses, quoted port, ICMPv6 checksum).
- TUN: IPv6-in-IPv6 (next header 41) to the real server, the outer header taking the inner
  packet's traffic class and hop limit; a packet that would not fit the MTU once encapsulated
  gets ICMPv6 "packet too big" back (IPv6 routers never fragment).
- Extension headers: a bounded chain is walked to the transport (``codec6.parse_ipv6``); a
  bogus chain is dropped and counted by reason. Fragments follow their first fragment by
  (source, destination, identification), as behind the kernel's defragmentation (the shared
  ``frag.FragTable``).
- Neighbour discovery (on the ND socket, ``nd``): solicitations for a VIP the local stack does
  not own are answered with the director's MAC, as ARP is for IPv4; unsolicited
  advertisements announce a VIP when it appears (``set_vips``); next hops are solicited (and
  the driver asks the kernel too, ``on_missing_neighbour``) and learnt from advertisements.

Flows: when ``flows`` is set (a sink that takes 16-byte addresses: the XDP plane's, never the
C hot path's table, whose keys are IPv4), a packet this path forwards for an ESTABLISHED TCP or
a stored UDP connection whose next hop is known offers the connection's rewrite to it per
direction, exactly as ``forward.Forwarder`` does for IPv4: DR the MACs, NAT the new address and
port both ways, TUN the outer IPv6 source and destination and the egress MTU (client to real
server only). A packet that leaves the connection in another state takes its flows out. Unset
(the default, and on the ``packet`` plane) IPv6 stays on this Python path. The ``Forwarder``
clears and syncs this sink with its own.

What this is not for: sockets and rings (``ring``/``dataplane``), or IPv4 (``forward``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pylvs.core.conntrack import TCP_S_SYN_RECV
from pylvs.core.director import DIR_INPUT, DIR_OUTPUT, TCP_S_ESTABLISHED, Connection, Director
from pylvs.core.model import ForwardingMethod
from pylvs.dataplane.packet import codec6
from pylvs.dataplane.packet.codec import (
    ETH_HLEN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    MAX_FRAME,
    TCP_ACK,
    TCP_SYN,
    Drop,
)
from pylvs.dataplane.packet.codec6 import (
    IPPROTO_ICMPV6,
    IPV6_HLEN,
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    UNSPECIFIED,
)
from pylvs.dataplane.packet.frag import FragTable
from pylvs.dataplane.packet.interface import Interface

_MASQ = int(ForwardingMethod.MASQ)
_DROUTE = int(ForwardingMethod.DROUTE)
_TUNNEL = int(ForwardingMethod.TUNNEL)
_NS_RETRY = 1.0  # seconds between solicitations for the same missing neighbour
_SRC, _DST = ETH_HLEN + 8, ETH_HLEN + 24  # where the addresses sit in a frame

Frame = bytearray | memoryview
Output = tuple[int, bytearray | bytes | memoryview]
Target = tuple[Connection, int]

# The kinds of rewrite a flow does (as _fastpath.c numbers them). Defined here, the lowest
# module that offers flows, and re-exported by ``forward``.
FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN = 0, 1, 2, 3


class FlowSink(Protocol):
    """What the forwarder needs of a flow table (``_fastpath.FlowTable``, the XDP plane's
    ``SplitFlowSink``). Addresses are 4 bytes (IPv4) or 16 (IPv6, only to a sink that says
    it takes them by being given to ``IPv6Path.flows``)."""

    ident: int  # the IP ID of the last outer IPIP header, one sequence for C and Python

    @property
    def count(self) -> int: ...

    def install(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
                new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
                direction: int, tun_src: bytes | None = None, mtu: int = 0) -> bool: ...

    def remove(self, proto: int, saddr: bytes, sport: int, daddr: bytes,
               dport: int) -> tuple[Any, int, int, int, float] | None: ...

    def clear(self) -> list[tuple[Any, int, int, int, float]]: ...

    def sync(self) -> list[tuple[Any, int, int, int, float]]: ...


class OpeningSink(Protocol):
    """A flow table that can take a TCP connection's way in at its SYN (the XDP plane's):
    see ``NextHop._open``."""

    def open(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
             new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
             first_len: int, tun_src: bytes | None = None, mtu: int = 0) -> bool: ...


class NextHop:
    """What the IPv4 ``Forwarder`` and ``IPv6Path`` share to send a frame: the drop counters,
    and the way from a destination address to an out interface and MACs: the next-hop cache
    ``_l2`` (shared by both), else ``route`` (on-link networks of the address's family, then
    that family's default route) and the family's ``_next_mac`` (ARP or neighbour
    discovery). ``_l2_reset`` empties the cache when it grows too big (and, being a neighbour
    change, the flows with it)."""

    _l2: dict[bytes, tuple[int, bytes]]
    _route_cache: dict[bytes, tuple[Interface, bytes] | None]
    interfaces: dict[int, Interface]
    neighbours: dict[bytes, bytes]  # IP -> MAC, both families (shared)
    gateway: tuple[int, bytes] | None  # the family's default route: (ifindex, next hop)
    drops: dict[str, int]
    forwarded: int
    director: Director
    # a packet to no service and of no known connection: may a connection be entered late
    # (the driver imports what an XDP program scheduled; True: something was, look again)
    on_unknown_reply: Callable[[], bool] | None
    # where a new TCP connection's flow goes at its SYN (None: at its ACK, through ``_offer``)
    opens: OpeningSink | None

    def _open(self, conn: Connection, proto: int, first_len: int, saddr: bytes, sport: int,
              daddr: bytes, dport: int) -> None:
        """The SYN of ``conn``, which the core just scheduled, has been forwarded (DR, NAT's
        way in, or a tunnel): install its flow now (``opens``) so that its handshake's ACK and
        what follows stay where the flow is, rather than the ACK coming up for a second
        decision. The flow's key is the SYN's own tuple (``saddr`` ... ``dport``, as
        received), which the caller has at hand: cheaper than the entry's properties, on every
        new connection's path."""
        opens = self.opens
        hit = self._l2.get(conn.daddr)
        if opens is None or hit is None or proto != IPPROTO_TCP:
            return
        fwd = conn.dest.fwd
        new_port, tun_src, mtu = conn.dport, None, 0
        if fwd == _DROUTE:
            kind = FLOW_DR
        elif fwd == _MASQ:
            kind = FLOW_NAT_DST
        elif fwd == _TUNNEL:
            # the outer header's source and the egress MTU, as the tunnel path wrote and
            # checked them (IPIP: the interface's address; IPv6-in-IPv6: its global one, else
            # its link-local one)
            r = self.route(conn.daddr)
            if r is None:
                return
            iface = r[0]
            tun_src = iface.addr if len(conn.daddr) == 4 else (iface.addr6 or iface.ll6)
            if not tun_src:
                return
            kind, new_port, mtu = FLOW_TUN, 0, iface.mtu
        else:
            return
        opens.open(proto, saddr, sport, daddr, dport, kind, conn.daddr, new_port, hit[0], hit[1],
                   conn, first_len, tun_src, mtu)

    def _still_opening(self, conn: Connection, proto: int) -> bool:
        """A TCP connection in its handshake whose flows were made at its SYN (``_open``):
        they stay when a packet of that handshake passes through the core (a retransmitted
        SYN, a NAT server's SYN-ACK), for the table that holds them to forward and report
        the ACK. (With ``opens`` set, a connection in SYN_RECV has no other flow: the rest
        are installed once it is ESTABLISHED.)"""
        return (self.opens is not None and proto == IPPROTO_TCP and conn.bucket is not None
                and conn.state == TCP_S_SYN_RECV)

    def _late_reply(self, proto: int, saddr: bytes, sport: int, daddr: bytes,
                    dport: int) -> Connection | None:
        """A packet to no service and of no known connection: a NAT reply whose connection
        the driver enters only now (``on_unknown_reply``), or None."""
        late = self.on_unknown_reply
        if late is None or not late():
            return None
        conn = self.director.lookup_reply(proto, saddr, sport, daddr, dport)
        return conn if conn is not None and conn.dest.fwd == _MASQ else None

    def route(self, ip: bytes) -> tuple[Interface, bytes] | None:
        """(out interface, next hop) for ``ip``: on-link first, else the default route."""
        try:
            return self._route_cache[ip]
        except KeyError:
            pass
        n = int.from_bytes(ip, "big")
        on_link = Interface.on_link6 if len(ip) == 16 else Interface.on_link
        res: tuple[Interface, bytes] | None = None
        for iface in self.interfaces.values():
            if on_link(iface, n):
                res = (iface, ip)
                break
        else:
            if self.gateway is not None and self.gateway[0] in self.interfaces:
                res = (self.interfaces[self.gateway[0]], self.gateway[1])
        if len(self._route_cache) > 65536:
            self._route_cache.clear()
        self._route_cache[ip] = res
        return res

    def _next_mac(self, iface: Interface, hop: bytes) -> bytes | None:
        raise NotImplementedError

    def _l2_reset(self) -> None:
        raise NotImplementedError

    def _learn(self, ip: bytes, mac: bytes) -> None:
        """A neighbour's MAC, as seen on the wire. One we did not know is only added: no
        cached next hop and no flow can have been made through it. One that changed makes
        them stale: every cached next hop and flow goes (``_l2_reset``). Until 2026-12-08 a
        new one reset them too, so each new on-link client (the first SYN from an address of
        the director's LAN) took every established flow out of the C table and the XDP
        program."""
        old = self.neighbours.get(ip)
        if old != mac:
            self.neighbours[ip] = mac
            if old is not None:
                self._l2_reset()

    def drop(self, reason: Drop) -> None:
        name = reason.name.lower()
        self.drops[name] = self.drops.get(name, 0) + 1

    def _send_to(self, frame: Frame, ip: bytes) -> Output | None:
        """``frame`` with the MACs of the way to ``ip``, and the interface it leaves on; None
        (counted) when there is no route or the next hop is not resolved yet."""
        hit = self._l2.get(ip)
        if hit is not None:
            frame[0:12] = hit[1]
            self.forwarded += 1
            return (hit[0], frame)
        r = self.route(ip)
        if r is None:
            self.drop(Drop.NO_NEIGHBOUR)
            return None
        iface, hop = r
        mac = self._next_mac(iface, hop)
        if mac is None:
            return None
        macs = mac + iface.mac
        if len(self._l2) > 65536:
            # a bound on the cache alone (NAT replies fill it with one entry per client):
            # nothing changed, so the flows stay
            self._l2.clear()
        self._l2[ip] = (iface.ifindex, macs)
        frame[0:12] = macs
        self.forwarded += 1
        return (iface.ifindex, frame)


class IPv6Path(NextHop):
    """IPv6 forwarding for one director, sharing the IPv4 ``Forwarder``'s state."""

    def __init__(self, director: Director, interfaces: dict[int, Interface],
                 neighbours: dict[bytes, bytes], l2: dict[bytes, tuple[int, bytes]],
                 side_frames: list[Output], drops: dict[str, int], frags: FragTable,
                 clock: Callable[[], float], on_neighbour_change: Callable[[], None],
                 gateway: tuple[int, bytes] | None = None,
                 verify_new_checksums: bool = True) -> None:
        self.director = director
        self.interfaces = interfaces
        self.neighbours = neighbours
        self._l2 = l2
        self.side_frames = side_frames
        self.drops = drops
        self.frags = frags
        self.clock = clock
        self.on_neighbour_change = on_neighbour_change
        self.gateway = gateway  # the IPv6 default route: (ifindex, next hop)
        self.verify_new_checksums = verify_new_checksums
        self.vips: set[bytes] = set()  # IPv6 VIPs neighbour solicitations are answered for
        self.on_missing_neighbour: Callable[[bytes], None] | None = None
        self.on_unknown_reply = None
        self.opens = None
        self.forwarded = 0
        self.icmp_forwarded = 0
        self.nd_replies = 0
        self.nd_solicits = 0
        self.nd_announced = 0
        self._asked: dict[bytes, float] = {}
        self._route_cache: dict[bytes, tuple[Interface, bytes] | None] = {}
        self._deltas: dict[tuple[bytes, int, bytes, int], int] = {}
        self._expired_at = 0.0
        # IPv6 flows forwarded without Python (see the module docstring); None: all here
        self.flows: FlowSink | None = None

    def _l2_reset(self) -> None:
        self.on_neighbour_change()

    # -- neighbours ----------------------------------------------------------------------------
    def set_vips(self, vips: Iterable[bytes]) -> list[Output]:
        """The IPv6 VIPs to answer for; returns an unsolicited advertisement for each one that
        just appeared, on each interface it is on-link with (all IPv6 interfaces when none),
        as the director's gratuitous ARP would announce an IPv4 VIP."""
        new = set(vips)
        out: list[Output] = []
        for vip in sorted(new - self.vips):
            n = int.from_bytes(vip, "big")
            ifaces = [i for i in self.interfaces.values() if i.on_link6(n)] or [
                i for i in self.interfaces.values() if i.networks6 or i.ll6]
            for i in ifaces:
                out.append((i.ifindex, codec6.unsolicited_advert(i.mac, vip)))
        self.nd_announced += len(out)
        self.vips = new
        return out

    def nd(self, ifindex: int, frame: Frame) -> None:
        """A neighbour solicitation or advertisement received on ``ifindex``: learn from it,
        and answer a solicitation for one of our VIPs (replies go to ``side_frames``)."""
        info = codec6.parse_nd(frame)
        if isinstance(info, Drop):
            self.drop(info)
            return
        typ, target, lladdr, _flags = info
        iface = self.interfaces.get(ifindex)
        if iface is None:
            return
        src = bytes(frame[_SRC:_SRC + 16])
        if typ == ND_NEIGHBOR_ADVERT:
            if lladdr and iface.on_link6(int.from_bytes(target, "big")):
                self._learn(target, lladdr)
            return
        if src != UNSPECIFIED and lladdr and iface.on_link6(int.from_bytes(src, "big")):
            self._learn(src, lladdr)
        if target not in self.vips:
            return
        if src == UNSPECIFIED:  # duplicate address detection: tell everyone it is taken
            reply = codec6.neighbour_advert(iface.mac, target,
                                            codec6.multicast_mac(codec6.ALL_NODES),
                                            codec6.ALL_NODES, codec6.NA_OVERRIDE)
        else:
            reply = codec6.neighbour_advert(iface.mac, target, lladdr or bytes(frame[6:12]),
                                            src, codec6.NA_SOLICITED | codec6.NA_OVERRIDE)
        self.nd_replies += 1
        self.side_frames.append((ifindex, reply))

    def _next_mac(self, iface: Interface, hop: bytes) -> bytes | None:
        mac = self.neighbours.get(hop)
        if mac is not None:
            return mac
        now = self.clock()
        if now - self._asked.get(hop, -1e9) >= _NS_RETRY:
            self._asked[hop] = now
            src = iface.addr6 or iface.ll6
            if src:
                self.nd_solicits += 1
                self.side_frames.append((iface.ifindex,
                                         codec6.neighbour_solicit(iface.mac, src, hop)))
            if self.on_missing_neighbour is not None:
                self.on_missing_neighbour(hop)
        self.drop(Drop.NO_NEIGHBOUR)
        return None

    # -- the entry point -----------------------------------------------------------------------
    def handle(self, ifindex: int, frame: Frame, csum_ok: int = 0) -> Output | None:
        """An IPv6 frame received on ``ifindex``: where it goes, or None (dropped and counted,
        or not ours: the local stack's). ``csum_ok``: the ring found its checksum good."""
        if len(frame) > MAX_FRAME:
            self.drop(Drop.OVERSIZED)
            return None
        info = codec6.parse_ipv6(frame)
        if isinstance(info, Drop):
            self.drop(info)
            return None
        proto, saddr, daddr, sport, dport, flags, l4, end, frag, _ident = info
        if frag >= 0:
            return self._fragment(ifindex, frame, info)
        if proto in (IPPROTO_TCP, IPPROTO_UDP):
            return self._transport(ifindex, frame, proto, saddr, daddr, sport, dport, flags,
                                   l4, end, csum_ok)
        if proto == IPPROTO_ICMPV6:
            if sport in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
                self.nd(ifindex, frame)
                return None
            return self._icmp(ifindex, frame, sport, l4, end)
        return None

    def _transport(self, ifindex: int, frame: Frame, proto: int, saddr: bytes, daddr: bytes,
                   sport: int, dport: int, flags: int, l4: int, end: int,
                   csum_ok: int) -> Output | None:
        d = self.director
        conn = d.lookup(proto, saddr, sport, daddr, dport)
        if conn is not None:
            return self._input(ifindex, frame, conn, proto, flags, l4, end)
        conn = d.lookup_reply(proto, saddr, sport, daddr, dport)
        if conn is not None:
            if conn.dest.fwd != _MASQ:
                return None  # a DR/TUN server talking to its client: not ours to touch
            return self._output(frame, conn, proto, flags, l4, end)
        if d.find_service(proto, daddr, dport) is None:
            conn = self._late_reply(proto, saddr, sport, daddr, dport)
            return None if conn is None else self._output(frame, conn, proto, flags, l4, end)
        if proto == IPPROTO_TCP and (flags & (TCP_SYN | TCP_ACK)) != TCP_SYN:
            self.drop(Drop.NO_CONNECTION)
            return None
        if (self.verify_new_checksums and not csum_ok
                and not codec6.l4_checksum6_ok(frame, ETH_HLEN, l4, end, proto)):
            self.drop(Drop.BAD_L4_CHECKSUM)
            return None
        iface = self.interfaces.get(ifindex)
        if iface is not None and iface.on_link6(int.from_bytes(saddr, "big")):
            self._learn(saddr, bytes(frame[6:12]))
        refused = d.refused_full
        conn = d.schedule(proto, saddr, sport, daddr, dport)
        if conn is None:
            self.drop(Drop.TABLE_FULL if d.refused_full != refused else Drop.NO_SERVICE)
            return None
        out = self._input(ifindex, frame, conn, proto, flags, l4, end)
        if out is not None and flags & TCP_SYN and self.opens is not None:
            self._open(conn, proto, end - ETH_HLEN, saddr, sport, daddr, dport)
        return out

    # -- client -> real server -----------------------------------------------------------------
    def _input(self, ifindex: int, frame: Frame, conn: Connection, proto: int, flags: int,
               l4: int, end: int) -> Output | None:
        d = self.director
        if proto == IPPROTO_TCP:
            d.tcp_packet(conn, DIR_INPUT, flags)
        else:
            d.udp_packet(conn, DIR_INPUT)
        d.account(conn, DIR_INPUT, 1, end - ETH_HLEN)
        out = self._deliver(ifindex, frame, conn, proto, l4, end, True)
        if out is not None and self.flows is not None:
            self._offer(conn, proto, DIR_INPUT)
        return out

    def _deliver(self, ifindex: int, frame: Frame, conn: Connection, proto: int, l4: int,
                 end: int, first: bool) -> Output | None:
        """A client's packet (or fragment) of ``conn`` on its way to the real server."""
        if len(conn.daddr) != 16:
            self.drop(Drop.UNSUPPORTED_PROTOCOL)  # an IPv4 real server behind an IPv6 VIP
            return None
        fwd = conn.dest.fwd
        if fwd == _MASQ:
            if first:
                self._nat(frame, l4, proto, conn.vaddr, conn.vport, conn.daddr, conn.dport, True)
            else:
                codec6.nat_addr_only6(frame, ETH_HLEN, conn.daddr, True)
            return self._send_to(frame, conn.daddr)
        if fwd == _DROUTE:
            return self._send_to(frame, conn.daddr)
        if fwd == _TUNNEL:
            return self._tunnel(ifindex, frame, conn.daddr, end)
        self.drop(Drop.UNSUPPORTED_PROTOCOL)
        return None

    def _tunnel(self, ifindex: int, frame: Frame, rip: bytes, end: int) -> Output | None:
        r = self.route(rip)
        if r is None or not (r[0].addr6 or r[0].ll6):
            self.drop(Drop.NO_NEIGHBOUR)
            return None
        iface = r[0]
        inner_len = end - ETH_HLEN
        if inner_len + IPV6_HLEN > iface.mtu:
            self.drop(Drop.TOO_BIG)
            self._too_big(ifindex, frame, iface.mtu - IPV6_HLEN)
            return None
        out = bytearray(frame[0:ETH_HLEN])
        out += codec6.ip6ip6_encapsulate(memoryview(frame)[ETH_HLEN:end], iface.addr6 or iface.ll6,
                                         rip)
        return self._send_to(out, rip)

    def _too_big(self, ifindex: int, frame: Frame, mtu: int) -> None:
        """ICMPv6 "packet too big" back to the sender, from the address it wrote to."""
        iface = self.interfaces.get(ifindex)
        if iface is None:
            return
        icmp = codec6.icmp6_packet_too_big(frame, ETH_HLEN, bytes(frame[_DST:_DST + 16]), mtu)
        out = bytearray(frame[6:12]) + iface.mac + b"\x86\xdd" + icmp
        self.side_frames.append((ifindex, out))

    # -- real server -> client (NAT) -----------------------------------------------------------
    def _output(self, frame: Frame, conn: Connection, proto: int, flags: int, l4: int,
                end: int) -> Output | None:
        d = self.director
        if proto == IPPROTO_TCP:
            d.tcp_packet(conn, DIR_OUTPUT, flags)
        else:
            d.udp_packet(conn, DIR_OUTPUT)
        d.account(conn, DIR_OUTPUT, 1, end - ETH_HLEN)
        self._nat(frame, l4, proto, conn.daddr, conn.dport, conn.vaddr, conn.vport, False)
        out = self._send_to(frame, bytes(frame[_DST:_DST + 16]))
        if out is not None and self.flows is not None:
            self._offer(conn, proto, DIR_OUTPUT)
        return out

    # -- flows ---------------------------------------------------------------------------------
    def _offer(self, conn: Connection, proto: int, direction: int) -> None:
        """After this path forwarded a packet of ``conn`` in ``direction``: hand the flow its
        rewrite, or take the connection's flows out when it is no longer ESTABLISHED (the
        IPv4 ``Forwarder._offer``'s rules, with 16-byte addresses)."""
        flows = self.flows
        assert flows is not None
        stable = conn.bucket is not None and (proto != IPPROTO_TCP
                                              or conn.state == TCP_S_ESTABLISHED)
        if not stable and not flows.count:
            return  # the SYN path: nothing to take out
        caddr, cport = conn.caddr, conn.cport
        if len(caddr) != 16 or len(conn.daddr) != 16:
            return
        if not stable:
            if self._still_opening(conn, proto):
                return
            d = self.director
            for row in (flows.remove(proto, caddr, cport, conn.vaddr, conn.vport),
                        flows.remove(proto, conn.daddr, conn.dport, caddr, cport)):
                if row is not None and row[2]:  # what it forwarded since the last sync
                    d.account(row[0], row[1], row[2], row[3])
            return
        if direction == DIR_OUTPUT:  # a NAT reply: source back to VIP:vport, to the client
            hit = self._l2.get(caddr)
            if hit is not None:
                flows.install(proto, conn.daddr, conn.dport, caddr, cport, FLOW_NAT_SRC,
                              conn.vaddr, conn.vport, hit[0], hit[1], conn, DIR_OUTPUT)
            return
        hit = self._l2.get(conn.daddr)
        if hit is None:
            return
        fwd = conn.dest.fwd
        if fwd == _TUNNEL:
            r = self.route(conn.daddr)
            src = (r[0].addr6 or r[0].ll6) if r is not None else None
            if r is not None and src:  # the outer source _tunnel wrote
                flows.install(proto, caddr, cport, conn.vaddr, conn.vport, FLOW_TUN, conn.daddr,
                              0, hit[0], hit[1], conn, DIR_INPUT, src, r[0].mtu)
            return
        kind = FLOW_NAT_DST if fwd == _MASQ else FLOW_DR
        flows.install(proto, caddr, cport, conn.vaddr, conn.vport, kind, conn.daddr,
                      conn.dport, hit[0], hit[1], conn, DIR_INPUT)

    def _nat(self, frame: Frame, l4: int, proto: int, old_ip: bytes, old_port: int,
             new_ip: bytes, new_port: int, dst: bool) -> None:
        key = (old_ip, old_port, new_ip, new_port)
        delta = self._deltas.get(key)
        if delta is None:
            delta = codec6.nat_delta6(old_ip, new_ip, old_port, new_port)
            if len(self._deltas) > 65536:
                self._deltas.clear()
            self._deltas[key] = delta
        codec6.nat_rewrite6(frame, ETH_HLEN, l4, proto, new_ip, new_port, dst, delta)

    # -- fragments -----------------------------------------------------------------------------
    def _fragment(self, ifindex: int, frame: Frame, info: codec6.IPv6Info) -> Output | None:
        proto, saddr, daddr, sport, dport, flags, l4, end, frag, ident = info
        offset, more = frag & 0xFFF8, bool(frag & 1)
        if not offset and proto not in (IPPROTO_TCP, IPPROTO_UDP):
            self.drop(Drop.FRAGMENT)  # ICMPv6 and the rest: not forwarded
            return None
        now = self.clock()
        if now - self._expired_at >= 1.0:
            self._expired_at = now
            self.frags.expire(now)
        key = (saddr, daddr, -1, ident)  # RFC 8200 4.5: source, destination, identification
        start = codec6.fragment_payload(frame)
        if offset:
            target = self.frags.later(key, frame, offset, end - start, more, now)
            if target is None:
                return None
            return self._frag_send(ifindex, frame, target, False, l4, end)
        target = self._frag_target(proto, saddr, daddr, sport, dport, flags)
        held = self.frags.first(key, end - start, more, target, now)
        if held is None or target is None:
            return None
        out = self._frag_send(ifindex, frame, target, True, l4, end)
        for h in held:
            o = self._frag_send(ifindex, h, target, False, 0,
                                ETH_HLEN + IPV6_HLEN + (h[18] << 8 | h[19]))
            if o is not None:
                self.side_frames.append(o)
        return out

    def _frag_target(self, proto: int, saddr: bytes, daddr: bytes, sport: int, dport: int,
                     flags: int) -> Target | None:
        d = self.director
        conn = d.lookup(proto, saddr, sport, daddr, dport)
        if conn is not None:
            return (conn, DIR_INPUT)
        conn = d.lookup_reply(proto, saddr, sport, daddr, dport)
        if conn is not None:
            return (conn, DIR_OUTPUT) if conn.dest.fwd == _MASQ else None
        if d.find_service(proto, daddr, dport) is None:
            return None
        if proto == IPPROTO_TCP and (flags & (TCP_SYN | TCP_ACK)) != TCP_SYN:
            self.drop(Drop.NO_CONNECTION)
            return None
        refused = d.refused_full
        conn = d.schedule(proto, saddr, sport, daddr, dport)
        if conn is None:
            self.drop(Drop.TABLE_FULL if d.refused_full != refused else Drop.NO_SERVICE)
            return None
        return (conn, DIR_INPUT)

    def _frag_send(self, ifindex: int, frame: Frame, target: Target, first: bool, l4: int,
                   end: int) -> Output | None:
        conn, direction = target
        d = self.director
        proto = conn.ckey & 0xFF
        if first:  # the connection's state moves once per datagram, on the fragment with ports
            if proto == IPPROTO_TCP:
                d.tcp_packet(conn, direction, frame[l4 + 13])
            else:
                d.udp_packet(conn, direction)
        d.account(conn, direction, 1, end - ETH_HLEN)
        if direction == DIR_OUTPUT:
            if first:
                self._nat(frame, l4, proto, conn.daddr, conn.dport, conn.vaddr, conn.vport, False)
            else:
                codec6.nat_addr_only6(frame, ETH_HLEN, conn.vaddr, False)
            return self._send_to(frame, bytes(frame[_DST:_DST + 16]))
        return self._deliver(ifindex, frame, conn, proto, l4, end, first)

    # -- ICMPv6 errors -------------------------------------------------------------------------
    def _icmp(self, ifindex: int, frame: Frame, icmp_type: int, l4: int,
              end: int) -> Output | None:
        if icmp_type not in codec6.ICMP6_ERROR_TYPES:
            return None  # echo and friends: the local stack answers for its own addresses
        inner = codec6.parse_icmp6_error(frame, l4, end)
        if isinstance(inner, Drop):
            self.drop(inner)
            return None
        iproto, isaddr, idaddr, isport, idport, inner_l3, inner_l4 = inner
        d = self.director
        # about a packet the client got from us (VIP:vport -> client): to the real server
        conn = d.lookup(iproto, idaddr, idport, isaddr, isport)
        if conn is not None:
            if len(conn.daddr) != 16:
                return None
            d.account(conn, DIR_INPUT, 1, end - ETH_HLEN)
            self.icmp_forwarded += 1
            fwd = conn.dest.fwd
            if fwd == _MASQ:
                codec6.nat_rewrite_icmp6_error(frame, ETH_HLEN, l4, end, inner_l3, inner_l4,
                                               conn.daddr, conn.dport, True)
            elif fwd == _TUNNEL:
                return self._tunnel(ifindex, frame, conn.daddr, end)
            return self._send_to(frame, conn.daddr)
        # about a packet a NAT real server got (client -> RIP:rport): back to the client
        conn = d.lookup_reply(iproto, idaddr, idport, isaddr, isport)
        if conn is not None and conn.dest.fwd == _MASQ:
            d.account(conn, DIR_OUTPUT, 1, end - ETH_HLEN)
            self.icmp_forwarded += 1
            codec6.nat_rewrite_icmp6_error(frame, ETH_HLEN, l4, end, inner_l3, inner_l4,
                                           conn.vaddr, conn.vport, False)
            return self._send_to(frame, isaddr)
        return None
