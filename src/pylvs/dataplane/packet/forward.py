"""What the director does with one frame: the LVS forwarding decision, without I/O.

What this is for: the per-packet logic of kernel IPVS (``ip_vs_in``/``ip_vs_out`` and the
``ip_vs_*_xmit`` functions) for the ``packet`` data plane. ``Forwarder.handle(ifindex, frame)``
takes a received Ethernet frame (a bytearray or ring view it may rewrite in place) and returns
where it goes as ``(out_ifindex, frame)`` or None, using the ``Director`` for scheduling,
connection tracking (TCP flags drive the states), persistence and statistics:

- DR: destination MAC <- the real server's, source MAC <- the director's; the IP packet is
  untouched, so the real server (VIP on lo) answers the client directly.
- NAT: destination address/port <- the real server's, with incremental checksums; replies from
  the real server (its gateway is the director) get their source rewritten back to VIP:port.
- TUN: the whole IP packet inside an outer IPv4 header to the real server (IPIP); a packet that
  would exceed the MTU once encapsulated gets ICMP "fragmentation needed" back (when DF is set).
- IPv4 fragments (TCP/UDP): the first fragment (the only one with ports) is scheduled like a
  whole packet (its L4 checksum cannot be verified: the real server checks the datagram);
  later fragments follow it by (source, destination, protocol, IP ID), as behind the kernel's
  defragmentation; those arriving first are held (bounded); overlapping and never-completing
  datagrams are dropped and counted (``frag.FragTable``). NAT rewrites the address of every
  fragment and the ports and L4 checksum in the first one (the RFC 1624 update does not need
  the rest of the datagram).
- ICMP errors quoting a tracked connection go to the same real server (and NAT ones are
  rewritten both ways), as ``ip_vs_in_icmp``/``ip_vs_out_icmp`` do.
- ARP: requests for a VIP the local stack does not own are answered with the director's MAC
  (only the director answers for the VIP); every ARP packet teaches the neighbour cache; a
  missing neighbour is asked for by ARP (and through ``on_missing_neighbour``, the kernel) and
  the packet is dropped (the sender retransmits).

New TCP connections are only created by a SYN, or with ``sloppy_tcp`` by any segment but a RST
(``pylvs sysctl -w net.ipv4.vs.sloppy_tcp=1``: a flow ECMP rehashed to this director); their
TCP/UDP checksum is verified first, so a flood of corrupt SYNs creates no entries, unless the
ring's rx meta says it is known good (``offload.META_CSUM_OK``: verified by the receiving device,
or a partial checksum from an offloading sender that the ring completed). Super-frames (TSO/GSO/GRO, rx meta
with a ``gso_size``) are cut into MTU-sized, checksummed segments (``offload.segment``) and each
is forwarded like a received frame; they go out as ``side_frames``. Other packets are forwarded
with their checksums as received (the real server verifies them; NAT updates are incremental so
a bad checksum stays bad). Drops are counted by reason in ``drops``.

Flows (the C hot path): when ``flows`` is set (a ``_fastpath.FlowTable``), every DR/NAT/TUN
packet this path forwards for an ESTABLISHED TCP or a stored UDP connection whose next hop is
known offers the connection's rewrite to it, per direction (TUN: client to real server only);
the ring then forwards the connection's later frames (ACK without SYN/FIN/RST) in C. A packet
that leaves the connection in another state takes its flows out; a neighbour change clears them
all. ``sync_flows`` (run before each
``Director.tick``) gives the Director what the flows forwarded, as those packets would have.

IPv6: every IPv6 frame goes to ``self.v6`` (``forward6.IPv6Path``), which shares this object's
Director, interfaces, neighbours, next-hop cache, side frames, drop counters and fragment table.
IPv6 flows are offered to ``self.v6.flows`` only (the C flow table's keys are IPv4, so the
``packet`` plane leaves it unset; the ``xdp`` plane gives it the sink it gives ``flows``);
``clear_flows`` and ``sync_flows`` cover that sink too.

A sink that can take a TCP connection's way in at its SYN (``opens``, the ``xdp`` plane's) is
given it as soon as the core has scheduled and forwarded that SYN (DR, NAT): the handshake's
ACK then stays in the kernel with everything after it, instead of coming up for a second pass.

What this is not for: sockets, rings, netlink (``ring``/``dataplane`` own those).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from pylvs.core.director import (
    DIR_INPUT,
    DIR_OUTPUT,
    TCP_S_ESTABLISHED,
    TCP_S_SYN_RECV,
    Connection,
    Director,
)
from pylvs.core.model import ForwardingMethod
from pylvs.dataplane.packet import codec, offload
from pylvs.dataplane.packet.codec import (
    ARP_REQUEST,
    ETH_HLEN,
    ETH_P_ARP,
    ETH_P_IP,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_SYN,
    Drop,
)
from pylvs.dataplane.packet.codec6 import ETH_P_IPV6
from pylvs.dataplane.packet.forward6 import (  # the flow kinds and sink: shared with IPv6
    FLOW_DR,
    FLOW_NAT_DST,
    FLOW_NAT_SRC,
    FLOW_TUN,
    FlowSink,
    IPv6Path,
    NextHop,
)
from pylvs.dataplane.packet.frag import FragTable
from pylvs.dataplane.packet.interface import Interface

__all__ = ["FLOW_DR", "FLOW_NAT_DST", "FLOW_NAT_SRC", "FLOW_TUN", "FlowSink", "Forwarder",
           "Interface"]

_MASQ = int(ForwardingMethod.MASQ)
_DROUTE = int(ForwardingMethod.DROUTE)
_TUNNEL = int(ForwardingMethod.TUNNEL)
_ARP_RETRY = 1.0  # seconds between ARP requests for the same missing neighbour

# A frame is rewritten in place: a bytearray, or a writable view into a receive ring.
Frame = bytearray | memoryview
Output = tuple[int, bytearray | bytes | memoryview]
# IPv4 header without options followed by the two ports of TCP/UDP
_FAST = struct.Struct("!BBHHHBBH4s4sHH")


class Forwarder(NextHop):
    """The sans-IO forwarding engine of one director (all its interfaces); ``_send_to``,
    ``route`` and ``drop`` are ``NextHop``'s, shared with the IPv6 half."""

    def __init__(
        self,
        director: Director,
        interfaces: Iterable[Interface],
        gateway: tuple[int, bytes] | None = None,
        clock: Callable[[], float] | None = None,
        verify_new_checksums: bool = True,
        gateway6: tuple[int, bytes] | None = None,
    ) -> None:
        self.director = director
        self.interfaces = {i.ifindex: i for i in interfaces}
        self.gateway = gateway  # default route: (ifindex, next hop address)
        self.clock = clock or director.clock
        self.verify_new_checksums = verify_new_checksums
        self.neighbours: dict[bytes, bytes] = {}
        self.arp_vips: set[bytes] = set()  # VIPs this forwarder answers ARP for
        self.local_addrs: set[bytes] = set()
        for i in self.interfaces.values():
            self.local_addrs |= i.local
        self.drops: dict[str, int] = {}
        self.forwarded = 0
        self.arp_replies = 0
        self.arp_requests = 0
        self.icmp_forwarded = 0
        self.gso_split = 0  # super-frames cut into segments
        self.frags = FragTable()
        self._frags_expired_at = 0.0
        self._csum_ok = 0  # the rx meta's META_CSUM_OK of the frame being handled
        self.side_frames: list[Output] = []  # ARP requests/replies and ICMP made here
        # a second way to resolve (the driver asks the kernel too), called with the address
        self.on_missing_neighbour: Callable[[bytes], None] | None = None
        self.on_unknown_reply = None  # (NextHop._late_reply)
        self.opens = None  # (NextHop._open)
        self._route_cache: dict[bytes, tuple[Interface, bytes] | None] = {}
        # destination IP -> (out ifindex, dst MAC + src MAC): one lookup per forwarded frame
        self._l2: dict[bytes, tuple[int, bytes]] = {}
        # (old ip, old port, new ip, new port) -> the RFC 1624 sums that rewrite adds
        self._nat_deltas: dict[tuple[bytes, int, bytes, int], tuple[int, int]] = {}
        self._arp_asked: dict[bytes, float] = {}
        self._ident = 0
        # established connections forwarded without Python (see the module docstring)
        self.flows: FlowSink | None = None
        # IPv6 frames: the same tables, neighbours, side frames and counters
        self.v6 = IPv6Path(director, self.interfaces, self.neighbours, self._l2,
                           self.side_frames, self.drops, self.frags, self.clock, self._l2_reset,
                           gateway6, verify_new_checksums)

    # -- helpers -------------------------------------------------------------------------------
    def learn(self, entries: dict[bytes, bytes]) -> None:
        """Neighbours found elsewhere (the kernel's table); changed ones replace ours (new ones
        are only added: see ``_learn``)."""
        changed = False
        for ip, mac in entries.items():
            old = self.neighbours.get(ip)
            if old != mac:
                self.neighbours[ip] = mac
                changed = changed or old is not None
        if changed:
            self._l2_reset()

    def _l2_reset(self) -> None:
        """A neighbour changed: cached next hops go, and with them every flow (the next
        packet of each connection takes this path and installs it again)."""
        self._l2.clear()
        self.clear_flows()

    def set_vips(self, vips: Iterable[bytes]) -> list[Output]:
        """The VIPs of the table; ARP (IPv4) and neighbour solicitations (IPv6) are answered
        for those the local stack does not own. Returns the unsolicited neighbour
        advertisements announcing IPv6 VIPs that just appeared, for the caller to send."""
        ours = {v for v in vips if v not in self.local_addrs}
        self.arp_vips = {v for v in ours if len(v) == 4}
        return self.v6.set_vips(v for v in ours if len(v) == 16)

    def _next_mac(self, iface: Interface, hop: bytes) -> bytes | None:
        mac = self.neighbours.get(hop)
        if mac is not None:
            return mac
        now = self.clock()
        if now - self._arp_asked.get(hop, -1e9) >= _ARP_RETRY:
            self._arp_asked[hop] = now
            self.arp_requests += 1
            self.side_frames.append((iface.ifindex, codec.arp_request(iface.mac, iface.addr, hop)))
            if self.on_missing_neighbour is not None:
                self.on_missing_neighbour(hop)
        self.drop(Drop.NO_NEIGHBOUR)
        return None

    # -- the entry point -----------------------------------------------------------------------
    def handle(self, ifindex: int, frame: Frame, meta: int = 0) -> Output | None:
        """Decide what happens to ``frame`` received on ``ifindex`` (addressed to our MAC or
        broadcast). Extra frames to send (ARP, ICMP, the segments of a super-frame) are
        appended to ``side_frames``. ``meta``: the ring's verdict (``offload.META_*``).

        The first block is the hot path, written out in one function on purpose (each Python
        call costs about as much as a header check): a client packet of a known DR or NAT
        connection whose next hop is cached. It applies exactly the checks and steps of the
        general path below, which handles everything else."""
        if meta >> offload.META_GSO_SHIFT_TYPE:
            self._split(ifindex, frame, meta)
            return None
        self._csum_ok = meta & offload.META_CSUM_OK
        n = len(frame)
        if 42 <= n <= 1514 and frame[12] == 8 and frame[13] == 0 and frame[14] == 0x45:
            _v, _tos, tot, _id, frag, _ttl, proto, _c, saddr, daddr, sport, dport = _FAST.unpack_from(frame, 14)
            end = 14 + tot
            if (end <= n and tot >= 28 and not frag & 0x3FFF
                    and not int.from_bytes(frame[14:34], "big") % 0xFFFF):
                if proto == IPPROTO_UDP:
                    ulen = frame[38] << 8 | frame[39]
                    ok = ulen >= 8 and 34 + ulen <= end
                elif proto == IPPROTO_TCP and tot >= 40:  # a whole 20-byte TCP header
                    doff = (frame[46] >> 4) << 2
                    ok = doff >= 20 and 34 + doff <= end
                else:
                    ok = False
                if ok:
                    d = self.director
                    conn = d.lookup(proto, saddr, sport, daddr, dport)
                    if conn is not None:
                        fwd = conn.dest.fwd
                        hit = self._l2.get(conn.daddr)
                        if hit is not None and fwd in (_DROUTE, _MASQ):
                            if proto == IPPROTO_TCP:
                                d.tcp_packet(conn, DIR_INPUT, frame[47])
                            else:
                                d.udp_packet(conn, DIR_INPUT)
                            d.account(conn, DIR_INPUT, 1, tot)
                            if fwd == _MASQ:
                                self._nat(frame, 34, proto, conn.vaddr, conn.vport, conn.daddr,
                                          conn.dport, 30, 36)
                            frame[0:12] = hit[1]
                            self.forwarded += 1
                            if self.flows is not None:
                                self._offer(conn, proto, DIR_INPUT)
                            return (hit[0], frame)
                        return self._input(ifindex, frame, conn, proto,
                                           frame[47] if proto == IPPROTO_TCP else 0, 34, end)
                    # no entry: what _ipv4 and _transport would find after checking all this
                    # again (a flood's SYNs take this way: each call saved is ~5 % of one)
                    return self._unknown(ifindex, frame, proto, saddr, daddr, sport, dport,
                                         frame[47] if proto == IPPROTO_TCP else 0, 34, end)
        if n < ETH_HLEN:
            self.drop(Drop.TRUNCATED_ETHERNET)
            return None
        et = frame[12] << 8 | frame[13]
        if et == ETH_P_IP:
            return self._ipv4(ifindex, frame)
        if et == ETH_P_IPV6:
            return self.v6.handle(ifindex, frame, self._csum_ok)
        if et == ETH_P_ARP:
            self._arp(ifindex, frame)
        return None

    def _split(self, ifindex: int, frame: Frame, meta: int) -> None:
        """A super-frame: each of its segments is handled as a received frame with a good
        checksum (``segment`` computed it); what they become is sent as side frames."""
        gso_type, gso_size = offload.meta_gso(meta)
        segs = offload.segment(frame, gso_type, gso_size)
        if segs is None:
            self.drop(Drop.BAD_GSO)
            return
        self.gso_split += 1
        outs = []
        for seg in segs:
            out = self.handle(ifindex, seg, offload.META_CSUM_OK)
            if out is not None:
                outs.append(out)
        # the segments' own side frames (ARP, ICMP) came first; then the segments, in order
        self.side_frames.extend(outs)

    def _arp(self, ifindex: int, frame: Frame) -> None:
        info = codec.parse_arp(frame)
        if isinstance(info, Drop):
            self.drop(info)
            return
        op, sha, spa, _tha, tpa = info
        iface = self.interfaces.get(ifindex)
        if iface is None:
            return
        if spa != b"\0\0\0\0" and iface.on_link(int.from_bytes(spa, "big")):
            self._learn(spa, sha)
        if op == ARP_REQUEST and tpa in self.arp_vips:
            self.arp_replies += 1
            self.side_frames.append((ifindex, codec.arp_reply_for(info, iface.mac)))

    def _ipv4(self, ifindex: int, frame: Frame) -> Output | None:
        n = len(frame)
        if n > codec.MAX_FRAME:
            self.drop(Drop.OVERSIZED)
            return None
        # fast path: a 20-byte header and TCP/UDP, validated with a handful of integer tests
        if n >= 42 and frame[14] == 0x45:
            _v, _tos, tot, _id, frag, _ttl, proto, _c, saddr, daddr, sport, dport = _FAST.unpack_from(frame, 14)
            end = 14 + tot
            if int.from_bytes(frame[14:34], "big") % 0xFFFF:
                self.drop(Drop.BAD_IP_CHECKSUM)
                return None
            if end > n or tot < 28:
                self.drop(Drop.TRUNCATED_IP if end > n else Drop.BAD_IP_HEADER)
                return None
            if frag & 0x3FFF:
                return self._fragment(ifindex, frame, end)
            if proto == IPPROTO_TCP:
                if tot < 40:  # not even a 20-byte TCP header
                    self.drop(Drop.TRUNCATED_L4)
                    return None
                doff = (frame[46] >> 4) << 2
                if doff < 20 or 34 + doff > end:
                    self.drop(Drop.TRUNCATED_L4)
                    return None
                flags = frame[47]
            elif proto == IPPROTO_UDP:
                ulen = frame[38] << 8 | frame[39]
                if ulen < 8 or 34 + ulen > end:
                    self.drop(Drop.TRUNCATED_L4)
                    return None
                flags = 0
            else:
                return self._ipv4_slow(ifindex, frame)
            return self._transport(ifindex, frame, proto, saddr, daddr, sport, dport, flags, 34, end)
        return self._ipv4_slow(ifindex, frame)

    def _ipv4_slow(self, ifindex: int, frame: Frame) -> Output | None:
        info = codec.parse_ipv4(frame)
        if info is Drop.FRAGMENT:  # the header is valid (parse_ipv4 checked it first)
            return self._fragment(ifindex, frame, ETH_HLEN + (frame[16] << 8 | frame[17]))
        if isinstance(info, Drop):
            self.drop(info)
            return None
        proto, saddr, daddr, sport, dport, flags, l4, end = info
        if proto in (IPPROTO_TCP, IPPROTO_UDP):
            return self._transport(ifindex, frame, proto, saddr, daddr, sport, dport, flags, l4, end)
        if proto == IPPROTO_ICMP:
            return self._icmp(ifindex, frame, sport, l4, end)
        return None

    def _transport(self, ifindex: int, frame: Frame, proto: int, saddr: bytes, daddr: bytes,
                   sport: int, dport: int, flags: int, l4: int, end: int) -> Output | None:
        conn = self.director.lookup(proto, saddr, sport, daddr, dport)
        if conn is not None:
            return self._input(ifindex, frame, conn, proto, flags, l4, end)
        return self._unknown(ifindex, frame, proto, saddr, daddr, sport, dport, flags, l4, end)

    def _unknown(self, ifindex: int, frame: Frame, proto: int, saddr: bytes, daddr: bytes,
                 sport: int, dport: int, flags: int, l4: int, end: int) -> Output | None:
        """A TCP/UDP packet with no client entry: a NAT reply, a new connection, or not ours."""
        d = self.director
        conn = d.lookup_reply(proto, saddr, sport, daddr, dport)
        if conn is not None:
            if conn.dest.fwd != _MASQ:
                return None  # a DR/TUN server talking to its client: not ours to touch
            return self._output(frame, conn, proto, flags, l4, end)
        if d.find_service(proto, daddr, dport) is None:
            conn = self._late_reply(proto, saddr, sport, daddr, dport)  # a NAT reply, late
            if conn is not None:
                return self._output(frame, conn, proto, flags, l4, end)
            return None  # not for a virtual service: the local stack's business
        if proto == IPPROTO_TCP and not d.sysctls.tcp_opens(flags):
            self.drop(Drop.NO_CONNECTION)
            return None
        if (self.verify_new_checksums and not self._csum_ok
                and not codec.l4_checksum_ok(frame, ETH_HLEN, l4, end, proto)):
            self.drop(Drop.BAD_L4_CHECKSUM)
            return None
        iface = self.interfaces.get(ifindex)
        if iface is not None and iface.on_link(int.from_bytes(saddr, "big")):
            mac = bytes(frame[6:12])
            if self.neighbours.get(saddr) != mac:
                self._learn(saddr, mac)
        refused = d.refused_full
        if proto == IPPROTO_TCP and not flags & TCP_SYN:  # sloppy_tcp let it through
            conn = d.schedule_sloppy(proto, saddr, sport, daddr, dport, flags)
        else:
            conn = d.schedule(proto, saddr, sport, daddr, dport)
        if conn is None:
            self.drop(Drop.TABLE_FULL if d.refused_full != refused else Drop.NO_SERVICE)
            return None
        fwd = conn.dest.fwd
        if flags & TCP_SYN and fwd in (_DROUTE, _MASQ):
            # A new connection's SYN (a lookup just missed, so ``schedule`` made the entry):
            # it is already in SYN_RECV, where a SYN leaves it, and has no flow to offer or
            # take out, so of ``_input`` only the count and the rewrite remain. This is every
            # new connection's first packet and a SYN flood's whole path.
            d.account(conn, DIR_INPUT, 1, end - ETH_HLEN)
            if fwd == _MASQ:
                self._nat(frame, l4, proto, conn.vaddr, conn.vport, conn.daddr, conn.dport, 30,
                          l4 + 2)
            out = self._send_to(frame, conn.daddr)
            if out is not None and self.opens is not None:
                self._open(conn, proto, end - ETH_HLEN, saddr, sport, daddr, dport)
            return out
        out = self._input(ifindex, frame, conn, proto, flags, l4, end)
        if out is not None and flags & TCP_SYN and self.opens is not None:  # a tunnel's SYN
            self._open(conn, proto, end - ETH_HLEN, saddr, sport, daddr, dport)
        return out

    # -- fragments -----------------------------------------------------------------------------
    def _fragment(self, ifindex: int, frame: Frame, end: int) -> Output | None:
        """One IPv4 fragment (header already validated, ``end`` where the packet ends)."""
        proto = frame[23]
        if proto not in (IPPROTO_TCP, IPPROTO_UDP):
            self.drop(Drop.FRAGMENT)  # ICMP and the rest: not forwarded, as before
            return None
        now = self.clock()
        if now - self._frags_expired_at >= 1.0:
            self._frags_expired_at = now
            self.frags.expire(now)
        l4 = ETH_HLEN + ((frame[14] & 0x0F) << 2)
        fw = frame[20] << 8 | frame[21]
        offset, more = (fw & 0x1FFF) << 3, bool(fw & 0x2000)
        saddr, daddr = bytes(frame[26:30]), bytes(frame[30:34])
        key = (saddr, daddr, proto, frame[18] << 8 | frame[19])
        if offset:
            target = self.frags.later(key, frame, offset, end - l4, more, now)
            return None if target is None else self._frag_send(ifindex, frame, target, False, end)
        need = 20 if proto == IPPROTO_TCP else 8
        if end < l4 + need:
            self.drop(Drop.TRUNCATED_L4)
            return None
        sport, dport = frame[l4] << 8 | frame[l4 + 1], frame[l4 + 2] << 8 | frame[l4 + 3]
        flags = frame[l4 + 13] if proto == IPPROTO_TCP else 0
        target = self._frag_target(proto, saddr, daddr, sport, dport, flags)
        held = self.frags.first(key, end - l4, more, target, now)
        if held is None or target is None:
            return None
        out = self._frag_send(ifindex, frame, target, True, end)
        for h in held:
            o = self._frag_send(ifindex, h, target, False, ETH_HLEN + (h[16] << 8 | h[17]))
            if o is not None:
                self.side_frames.append(o)
        return out

    def _frag_target(self, proto: int, saddr: bytes, daddr: bytes, sport: int, dport: int,
                     flags: int) -> tuple[Connection, int] | None:
        """(connection, direction) a first fragment belongs to, scheduling a new one as
        ``_transport`` would (without the L4 checksum, which covers the whole datagram)."""
        d = self.director
        conn = d.lookup(proto, saddr, sport, daddr, dport)
        if conn is not None:
            return (conn, DIR_INPUT)
        conn = d.lookup_reply(proto, saddr, sport, daddr, dport)
        if conn is not None:
            return (conn, DIR_OUTPUT) if conn.dest.fwd == _MASQ else None
        if d.find_service(proto, daddr, dport) is None:
            return None
        if proto == IPPROTO_TCP and not d.sysctls.tcp_opens(flags):
            self.drop(Drop.NO_CONNECTION)
            return None
        refused = d.refused_full
        if proto == IPPROTO_TCP and not flags & TCP_SYN:  # sloppy_tcp let it through
            conn = d.schedule_sloppy(proto, saddr, sport, daddr, dport, flags)
        else:
            conn = d.schedule(proto, saddr, sport, daddr, dport)
        if conn is None:
            self.drop(Drop.TABLE_FULL if d.refused_full != refused else Drop.NO_SERVICE)
            return None
        return (conn, DIR_INPUT)

    def _frag_send(self, ifindex: int, frame: Frame, target: tuple[Connection, int], first: bool,
                   end: int) -> Output | None:
        conn, direction = target
        d = self.director
        proto = conn.ckey & 0xFF
        l4 = ETH_HLEN + ((frame[14] & 0x0F) << 2)
        if first:  # the connection's state moves once per datagram, on the fragment with ports
            if proto == IPPROTO_TCP:
                d.tcp_packet(conn, direction, frame[l4 + 13])
            else:
                d.udp_packet(conn, direction)
        d.account(conn, direction, 1, end - ETH_HLEN)
        fwd = conn.dest.fwd
        if direction == DIR_OUTPUT:  # a NAT reply: source back to VIP(:vport)
            if first:
                self._nat(frame, l4, proto, conn.daddr, conn.dport, conn.vaddr, conn.vport, 26, l4)
            else:
                self._nat_addr(frame, 26, conn.vaddr)
            return self._send_to(frame, bytes(frame[30:34]))
        if fwd == _MASQ:
            if first:
                self._nat(frame, l4, proto, conn.vaddr, conn.vport, conn.daddr, conn.dport, 30,
                          l4 + 2)
            else:
                self._nat_addr(frame, 30, conn.daddr)
        if fwd == _TUNNEL:
            return self._tunnel(ifindex, frame, conn.daddr, end)
        return self._send_to(frame, conn.daddr)

    @staticmethod
    def _nat_addr(frame: Frame, ip_off: int, new_ip: bytes) -> None:
        """A later fragment of a NAT-ed datagram: only its address (and the IP checksum)."""
        old = int.from_bytes(frame[ip_off:ip_off + 4], "big")
        frame[ip_off:ip_off + 4] = new_ip
        c = frame[24] << 8 | frame[25]
        c = codec.csum_replace32(c, old, int.from_bytes(new_ip, "big"))
        frame[24], frame[25] = c >> 8, c & 0xFF

    # -- client -> real server -----------------------------------------------------------------
    def _input(self, ifindex: int, frame: Frame, conn: Connection, proto: int, flags: int,
               l4: int, end: int) -> Output | None:
        d = self.director
        if proto == IPPROTO_TCP:
            d.tcp_packet(conn, DIR_INPUT, flags)
        else:
            d.udp_packet(conn, DIR_INPUT)
        d.account(conn, DIR_INPUT, 1, end - ETH_HLEN)
        fwd = conn.dest.fwd
        if fwd in (_DROUTE, _MASQ):
            if fwd == _MASQ:
                self._nat(frame, l4, proto, conn.vaddr, conn.vport, conn.daddr, conn.dport, 30,
                          l4 + 2)
            out = self._send_to(frame, conn.daddr)
            if out is not None and self.flows is not None:
                self._offer(conn, proto, DIR_INPUT)
            return out
        if fwd == _TUNNEL:
            out = self._tunnel(ifindex, frame, conn.daddr, end)
            if out is not None and self.flows is not None:
                self._offer(conn, proto, DIR_INPUT)
            return out
        self.drop(Drop.UNSUPPORTED_PROTOCOL)
        return None

    def _tunnel(self, ifindex: int, frame: Frame, rip: bytes, end: int) -> Output | None:
        if len(rip) != 4:  # an IPv6 real server behind an IPv4 VIP: IPv4-in-IPv6 is not built
            self.drop(Drop.UNSUPPORTED_PROTOCOL)
            return None
        r = self.route(rip)
        if r is None:
            self.drop(Drop.NO_NEIGHBOUR)
            return None
        iface = r[0]
        inner_len = end - ETH_HLEN
        df = frame[ETH_HLEN + 6] & 0x40
        if inner_len + 20 > iface.mtu and df:
            self.drop(Drop.TOO_BIG)
            self._icmp_back(ifindex, frame, iface.mtu - 20)  # tell the sender the path MTU
            return None
        flows = self.flows
        if flows is not None:  # the C path numbers its outer headers from the same counter
            ident = flows.ident = (flows.ident + 1) & 0xFFFF
        else:
            ident = self._ident = (self._ident + 1) & 0xFFFF
        outer = codec.ipip_encapsulate(memoryview(frame)[ETH_HLEN:end], iface.addr, rip, ident)
        if len(outer) > iface.mtu:
            # DF clear (a fragment, or a sender that allows it): the outer packet is
            # fragmented, as the kernel's ip_vs_tunnel_xmit lets ip_fragment do
            outs = []
            for piece in codec.ipv4_fragment(outer, iface.mtu):
                o = self._send_to(bytearray(frame[0:ETH_HLEN]) + piece, rip)
                if o is None:
                    return None
                outs.append(o)
            self.side_frames.extend(outs[1:])
            return outs[0]
        out = bytearray(frame[0:ETH_HLEN])
        out += outer
        return self._send_to(out, rip)

    def _icmp_back(self, ifindex: int, frame: Frame, mtu: int) -> None:
        iface = self.interfaces.get(ifindex)
        if iface is None:
            return
        icmp = codec.icmp_frag_needed(frame, ETH_HLEN, iface.addr, mtu)
        out = bytearray(codec.ethernet(bytes(frame[6:12]), iface.mac, ETH_P_IP)) + icmp
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
        self._nat(frame, l4, proto, conn.daddr, conn.dport, conn.vaddr, conn.vport, 26, l4)
        out = self._send_to(frame, bytes(frame[30:34]))
        if out is not None and self.flows is not None:
            self._offer(conn, proto, DIR_OUTPUT)
        return out

    # -- flows ---------------------------------------------------------------------------------
    def _offer(self, conn: Connection, proto: int, direction: int) -> None:
        """After this path forwarded a packet of ``conn`` in ``direction``: hand the flow its
        rewrite, or take the connection's flows out when it is no longer ESTABLISHED."""
        flows = self.flows
        assert flows is not None
        stable = conn.bucket is not None and (proto != IPPROTO_TCP or conn.state == TCP_S_ESTABLISHED)
        if not stable and not flows.count:
            return  # the SYN path: nothing to take out
        caddr, cport = conn.caddr, conn.cport
        if len(caddr) != 4:
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
            if r is not None:
                flows.install(proto, caddr, cport, conn.vaddr, conn.vport, FLOW_TUN, conn.daddr,
                              0, hit[0], hit[1], conn, DIR_INPUT, r[0].addr, r[0].mtu)
            return
        kind = FLOW_NAT_DST if fwd == _MASQ else FLOW_DR
        flows.install(proto, caddr, cport, conn.vaddr, conn.vport, kind, conn.daddr,
                      conn.dport, hit[0], hit[1], conn, DIR_INPUT)

    def clear_flows(self) -> None:
        """Forget every flow (a neighbour or the table changed); what they forwarded since the
        last sync is counted now. The next packet of each connection installs it again."""
        d = self.director
        for flows in self._sinks():
            for conn, direction, packets, nbytes, _seen in flows.clear():
                d.account(conn, direction, packets, nbytes)

    def _sinks(self) -> list[FlowSink]:
        """The flow tables to clear and sync: ours, and the IPv6 path's when it is another."""
        sinks = [] if self.flows is None else [self.flows]
        v6 = self.v6.flows
        if v6 is not None and v6 is not self.flows:
            sinks.append(v6)
        return sinks

    def sync_flows(self) -> int:
        """Give the Director what the flows forwarded since the last call: the counters
        (``account``) and the timer restart each packet would have made (one ACK-only segment
        or UDP datagram per direction). Run before ``Director.tick`` so entries that live on in
        C are not expired; flows whose entry is gone are dropped. Returns the packets."""
        if self.flows is None and self.v6.flows is None:
            return 0
        d = self.director
        total = 0
        rows = [row for flows in self._sinks() for row in flows.sync()]
        for conn, direction, packets, nbytes, _seen in rows:
            d.account(conn, direction, packets, nbytes)
            if conn.ckey & 0xFF == IPPROTO_TCP:
                # replies while the connection is still opening are the server's SYN-ACKs (only
                # a NAT reply flow an XDP program made with the connection forwards those): an
                # ACK would move the entry to ESTABLISHED, as no SYN-ACK does
                opening = direction == DIR_OUTPUT and conn.state == TCP_S_SYN_RECV
                d.tcp_packet(conn, direction, TCP_SYN | TCP_ACK if opening else TCP_ACK)
            else:
                d.udp_packet(conn, direction)
            total += packets
        return total

    def _nat(self, frame: Frame, l4: int, proto: int, old_ip: bytes, old_port: int,
             new_ip: bytes, new_port: int, ip_off: int, port_off: int) -> None:
        """Rewrite one address and port (destination or source) with checksum deltas computed
        once per mapping: RFC 1624's ~m + m' is the same for every packet of a connection."""
        key = (old_ip, old_port, new_ip, new_port)
        deltas = self._nat_deltas.get(key)
        if deltas is None:
            o, nw = int.from_bytes(old_ip, "big"), int.from_bytes(new_ip, "big")
            ip_sum = (~o >> 16 & 0xFFFF) + (~o & 0xFFFF) + (nw >> 16) + (nw & 0xFFFF)
            deltas = (ip_sum, ip_sum + (~old_port & 0xFFFF) + new_port)
            if len(self._nat_deltas) > 65536:
                self._nat_deltas.clear()
            self._nat_deltas[key] = deltas
        frame[ip_off:ip_off + 4] = new_ip
        frame[port_off] = new_port >> 8
        frame[port_off + 1] = new_port & 0xFF
        s = (~(frame[24] << 8 | frame[25]) & 0xFFFF) + deltas[0]
        s = (s & 0xFFFF) + (s >> 16)
        s = ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF
        frame[24] = s >> 8
        frame[25] = s & 0xFF
        co = l4 + (16 if proto == IPPROTO_TCP else 6)
        c = frame[co] << 8 | frame[co + 1]
        if c == 0 and proto != IPPROTO_TCP:
            return  # UDP without a checksum stays without
        s = (~c & 0xFFFF) + deltas[1]
        s = (s & 0xFFFF) + (s >> 16)
        s = ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF
        if s == 0 and proto != IPPROTO_TCP:
            s = 0xFFFF
        frame[co] = s >> 8
        frame[co + 1] = s & 0xFF

    # -- ICMP errors ---------------------------------------------------------------------------
    def _icmp(self, ifindex: int, frame: Frame, icmp_type: int, l4: int, end: int) -> Output | None:
        if icmp_type not in codec.ICMP_ERROR_TYPES:
            return None  # echo and friends: the local stack answers for its own addresses
        inner = codec.parse_icmp_error(frame, l4, end)
        if isinstance(inner, Drop):
            self.drop(inner)
            return None
        iproto, isaddr, idaddr, isport, idport, inner_off = inner
        if iproto not in (IPPROTO_TCP, IPPROTO_UDP):
            return None
        d = self.director
        # about a packet the client got from us (VIP:vport -> client): goes to the real server
        conn = d.lookup(iproto, idaddr, idport, isaddr, isport)
        if conn is not None:
            d.account(conn, DIR_INPUT, 1, end - ETH_HLEN)
            self.icmp_forwarded += 1
            fwd = conn.dest.fwd
            if fwd == _MASQ:
                codec.nat_rewrite_icmp_error(frame, ETH_HLEN, l4, end, inner_off, conn.daddr,
                                             conn.dport, True)
                return self._send_to(frame, conn.daddr)
            if fwd == _TUNNEL:
                return self._tunnel(ifindex, frame, conn.daddr, end)
            return self._send_to(frame, conn.daddr)
        # about a packet a NAT real server got (client -> RIP:rport): goes back to the client
        conn = d.lookup_reply(iproto, idaddr, idport, isaddr, isport)
        if conn is not None and conn.dest.fwd == _MASQ:
            d.account(conn, DIR_OUTPUT, 1, end - ETH_HLEN)
            self.icmp_forwarded += 1
            codec.nat_rewrite_icmp_error(frame, ETH_HLEN, l4, end, inner_off, conn.vaddr,
                                         conn.vport, False)
            return self._send_to(frame, isaddr)
        return None
