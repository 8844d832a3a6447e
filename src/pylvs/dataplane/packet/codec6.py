"""IPv6 codecs for the ``packet`` data plane: the header and its extension-header chain,
ICMPv6 (errors, neighbour discovery), NAT rewrites over the IPv6 pseudo-header, IPv6-in-IPv6.

What this is for: the IPv6 half of ``codec``, with the same rules (sans-IO, plain tuples and
ints, a ``Drop`` code instead of an exception for anything malformed: a frame is counted and
dropped, never stops the forwarder). Kept apart from ``codec`` because IPv6 differs in ways that
matter per packet: no header checksum (NAT only updates the TCP/UDP/ICMPv6 checksum, whose
pseudo-header holds both 128-bit addresses), transport found at the end of a chain of extension
headers (walked here with a bound on its length), fragments marked by a header of their own
(32-bit identification), and neighbour discovery instead of ARP (ICMPv6 inside IPv6, hop limit
255, checksummed).

What this is not for: deciding where a packet goes (``forward6``), reassembly (``frag`` follows
fragments one by one), jumbograms or IPsec (AH/ESP packets are handed to the local stack).
"""

from __future__ import annotations

import struct

from pylvs.dataplane.packet.codec import (
    ETH_HLEN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Drop,
    ones_sum,
)

ETH_P_IPV6 = 0x86DD
IPPROTO_HOPOPTS = 0
IPPROTO_IPV6 = 41  # IPv6-in-IPv6 (RFC 2473)
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
EXT_HEADERS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS})
MAX_EXT_HEADERS = 8  # a longer chain is an attack or a bug, never a real client's packet
IPV6_HLEN = 40
MIN_MTU = 1280  # RFC 8200: every IPv6 link carries at least this

ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROBLEM = 4
ICMP6_ERROR_TYPES = frozenset({1, 2, 3, 4})
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
UNSPECIFIED = bytes(16)

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_PORTS = struct.Struct("!HH")
_ETH = struct.Struct("!6s6sH")

# parse_ipv6 result: (proto, saddr, daddr, sport, dport, tcp_flags, l4, end, frag, ident)
# frag: -1 for a whole packet, else the fragment header's offset-and-flags word (offset in
# 8-byte units << 3 | M); ident: its 32-bit identification. A later fragment (offset > 0) has
# no ports (0, 0) and proto is the fragment header's next header. ICMPv6: sport = type,
# dport = code.
IPv6Info = tuple[int, bytes, bytes, int, int, int, int, int, int, int]


def parse_ipv6(frame: bytes | bytearray | memoryview, l3: int = ETH_HLEN) -> IPv6Info | Drop:
    """The addresses, transport, ports and fragment of the IPv6 packet at ``l3``, after a walk
    of at most ``MAX_EXT_HEADERS`` extension headers (hop-by-hop only first, at most one
    fragment header, a routing header only with no segments left: the VIP must be the final
    destination), or why it is unusable."""
    n = len(frame)
    if n < l3 + IPV6_HLEN:
        return Drop.TRUNCATED_IP
    if frame[l3] >> 4 != 6:
        return Drop.BAD_IP_HEADER
    plen = frame[l3 + 4] << 8 | frame[l3 + 5]
    if plen == 0:  # a jumbogram (RFC 2675) or an empty packet: nothing we forward
        return Drop.BAD_IP_HEADER
    end = l3 + IPV6_HLEN + plen
    if end > n:
        return Drop.TRUNCATED_IP
    saddr = bytes(frame[l3 + 8:l3 + 24])
    daddr = bytes(frame[l3 + 24:l3 + 40])
    nh = frame[l3 + 6]
    off = l3 + IPV6_HLEN
    frag = -1
    ident = 0
    count = 0
    while nh in EXT_HEADERS:
        if count >= MAX_EXT_HEADERS:
            return Drop.EXT_CHAIN_TOO_LONG
        if off + 8 > end:
            return Drop.BAD_EXT_HEADER
        if nh == IPPROTO_HOPOPTS and count:
            return Drop.BAD_EXT_HEADER  # RFC 8200 4.1: hop-by-hop only right after the header
        if nh == IPPROTO_FRAGMENT:
            if frag >= 0:
                return Drop.BAD_EXT_HEADER  # two fragment headers
            word = frame[off + 2] << 8 | frame[off + 3]
            ident = _U32.unpack_from(frame, off + 4)[0]
            if word & 0xFFF9:  # a real fragment; an atomic one (offset 0, M clear) is whole
                frag = word & 0xFFF9
            hl = 8
        else:
            hl = (frame[off + 1] + 1) << 3
            if off + hl > end:
                return Drop.BAD_EXT_HEADER
            if nh == IPPROTO_ROUTING and frame[off + 3]:
                return Drop.ROUTING_HEADER  # segments left: the VIP is not the destination
        nh = frame[off]
        off += hl
        count += 1
        if frag > 7:  # a later fragment: what follows is the middle of the datagram
            return (nh, saddr, daddr, 0, 0, 0, off, end, frag, ident)
    l4 = off
    if nh == IPPROTO_TCP:
        if end < l4 + 20:
            return Drop.TRUNCATED_L4
        doff = (frame[l4 + 12] >> 4) << 2
        if doff < 20 or l4 + doff > end:
            return Drop.TRUNCATED_L4
        sport, dport = _PORTS.unpack_from(frame, l4)
        return (nh, saddr, daddr, sport, dport, frame[l4 + 13], l4, end, frag, ident)
    if nh == IPPROTO_UDP:
        if end < l4 + 8:
            return Drop.TRUNCATED_L4
        sport, dport = _PORTS.unpack_from(frame, l4)
        ulen = frame[l4 + 4] << 8 | frame[l4 + 5]
        # a first fragment holds only part of the datagram its length counts
        if ulen < 8 or (frag < 0 and l4 + ulen > end):
            return Drop.TRUNCATED_L4
        return (nh, saddr, daddr, sport, dport, 0, l4, end, frag, ident)
    if nh == IPPROTO_ICMPV6:
        if end < l4 + 8:
            return Drop.TRUNCATED_L4
        return (nh, saddr, daddr, frame[l4], frame[l4 + 1], 0, l4, end, frag, ident)
    return (nh, saddr, daddr, 0, 0, 0, l4, end, frag, ident)


def fragment_payload(frame: bytes | bytearray | memoryview, l3: int = ETH_HLEN) -> int:
    """Where the fragmentable part of a fragment starts (right after its fragment header),
    the origin of its offset; for a packet ``parse_ipv6`` accepted as a fragment."""
    nh = frame[l3 + 6]
    off = l3 + IPV6_HLEN
    for _ in range(MAX_EXT_HEADERS):
        if nh == IPPROTO_FRAGMENT:
            return off + 8
        if nh not in EXT_HEADERS or off + 8 > len(frame):
            break
        nh = frame[off]
        off += (frame[off + 1] + 1) << 3
    return off


# parse_icmp6_error result: the quoted packet's (proto, saddr, daddr, sport, dport, inner_l3,
# inner_l4)
Icmp6Inner = tuple[int, bytes, bytes, int, int, int, int]


def parse_icmp6_error(frame: bytes | bytearray | memoryview, l4: int,
                      end: int) -> Icmp6Inner | Drop:
    """The packet an ICMPv6 error quotes (its header, extension headers and at least the
    ports), to find its connection; the chain walk has the same bounds as ``parse_ipv6``."""
    if frame[l4] not in ICMP6_ERROR_TYPES:
        return Drop.BAD_ICMP
    inner = l4 + 8
    if end < inner + IPV6_HLEN or frame[inner] >> 4 != 6:
        return Drop.BAD_ICMP
    nh = frame[inner + 6]
    off = inner + IPV6_HLEN
    count = 0
    while nh in EXT_HEADERS:
        if count >= MAX_EXT_HEADERS or off + 8 > end:
            return Drop.BAD_ICMP
        if nh == IPPROTO_FRAGMENT:
            if (frame[off + 2] << 8 | frame[off + 3]) & 0xFFF8:
                return Drop.BAD_ICMP  # quotes a later fragment: no ports to match
            hl = 8
        else:
            hl = (frame[off + 1] + 1) << 3
        nh = frame[off]
        off += hl
        count += 1
    if nh not in (IPPROTO_TCP, IPPROTO_UDP) or end < off + 4:
        return Drop.BAD_ICMP
    sport, dport = _PORTS.unpack_from(frame, off)
    return (nh, bytes(frame[inner + 8:inner + 24]), bytes(frame[inner + 24:inner + 40]),
            sport, dport, inner, off)


# -- checksums ---------------------------------------------------------------------------------


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo_sum(saddr: bytes, daddr: bytes, proto: int, length: int) -> int:
    """One's-complement sum of the IPv6 pseudo-header (RFC 8200 8.1)."""
    return ones_sum(saddr + daddr + length.to_bytes(4, "big") + bytes((0, 0, 0, proto)))


def l4_checksum6(saddr: bytes, daddr: bytes, proto: int,
                 segment: bytes | bytearray | memoryview) -> int:
    """TCP/UDP/ICMPv6 checksum over the IPv6 pseudo-header and ``segment`` (its checksum field
    zeroed to compute, left in place to verify: then 0 means correct)."""
    return ~_fold(pseudo_sum(saddr, daddr, proto, len(segment)) + ones_sum(segment)) & 0xFFFF


def l4_checksum6_ok(frame: bytes | bytearray | memoryview, l3: int, l4: int, end: int,
                    proto: int) -> bool:
    """Whether the TCP/UDP/ICMPv6 checksum of the packet at ``l3`` is right (a UDP checksum
    of 0 is wrong in IPv6: RFC 8200 8.1)."""
    return l4_checksum6(bytes(frame[l3 + 8:l3 + 24]), bytes(frame[l3 + 24:l3 + 40]), proto,
                        frame[l4:end]) == 0


def csum_offset(proto: int) -> int:
    """Where the checksum sits in a TCP, UDP or ICMPv6 header."""
    return 16 if proto == IPPROTO_TCP else 6 if proto == IPPROTO_UDP else 2


def nat_delta6(old_ip: bytes, new_ip: bytes, old_port: int, new_port: int) -> int:
    """RFC 1624's ~m + m' for a 128-bit address and a port changing together: the same for
    every packet of a connection, so the forwarder computes it once per mapping."""
    return ((~ones_sum(old_ip) & 0xFFFF) + ones_sum(new_ip)
            + (~old_port & 0xFFFF) + new_port)


def apply_delta(csum: int, delta: int) -> int:
    """RFC 1624 eqn. 3: the checksum after fields changed by ``delta`` (``nat_delta6``)."""
    return ~_fold((~csum & 0xFFFF) + delta) & 0xFFFF


def nat_rewrite6(frame: bytearray | memoryview, l3: int, l4: int, proto: int, new_ip: bytes,
                 new_port: int, dst: bool, delta: int | None = None,
                 first: bool = True) -> None:
    """Rewrite the destination (``dst``) or source address, and the port when ``first`` (a
    later fragment has none), of a TCP/UDP packet in place, updating its checksum
    incrementally over the pseudo-header (the only checksum IPv6 has). A UDP checksum of 0
    (not allowed over IPv6, but seen from tunnels) is computed whole."""
    ip_off = l3 + (24 if dst else 8)
    port_off = l4 + (2 if dst else 0)
    old_ip = bytes(frame[ip_off:ip_off + 16])
    frame[ip_off:ip_off + 16] = new_ip
    if not first:
        return  # the checksum is in the first fragment, where the delta was applied
    old_port = frame[port_off] << 8 | frame[port_off + 1]
    frame[port_off] = new_port >> 8
    frame[port_off + 1] = new_port & 0xFF
    co = l4 + csum_offset(proto)
    c = frame[co] << 8 | frame[co + 1]
    if proto == IPPROTO_UDP and c == 0:
        end = l3 + IPV6_HLEN + (frame[l3 + 4] << 8 | frame[l3 + 5])
        c = l4_checksum6(bytes(frame[l3 + 8:l3 + 24]), bytes(frame[l3 + 24:l3 + 40]), proto,
                         frame[l4:end]) or 0xFFFF
    else:
        if delta is None:
            delta = nat_delta6(old_ip, new_ip, old_port, new_port)
        c = apply_delta(c, delta)
        if proto == IPPROTO_UDP and c == 0:
            c = 0xFFFF
    frame[co] = c >> 8
    frame[co + 1] = c & 0xFF


def nat_addr_only6(frame: bytearray | memoryview, l3: int, new_ip: bytes, dst: bool) -> None:
    """A later fragment of a NAT-ed datagram: only its address (IPv6 has no header sum)."""
    off = l3 + (24 if dst else 8)
    frame[off:off + 16] = new_ip


def nat_rewrite_icmp6_error(frame: bytearray | memoryview, l3: int, l4: int, end: int,
                            inner: int, inner_l4: int, new_ip: bytes, new_port: int,
                            outer_dst: bool) -> None:
    """Rewrite an ICMPv6 error quoting a NAT-ed packet: the outer address (destination when
    ``outer_dst``, else source), the quoted packet's opposite address and port, and the ICMPv6
    checksum (computed whole: the quoted bytes and the pseudo-header both changed)."""
    off = l3 + (24 if outer_dst else 8)
    frame[off:off + 16] = new_ip
    in_off = inner + (8 if outer_dst else 24)
    frame[in_off:in_off + 16] = new_ip
    port_off = inner_l4 + (0 if outer_dst else 2)
    frame[port_off] = new_port >> 8
    frame[port_off + 1] = new_port & 0xFF
    frame[l4 + 2] = frame[l4 + 3] = 0
    c = l4_checksum6(bytes(frame[l3 + 8:l3 + 24]), bytes(frame[l3 + 24:l3 + 40]),
                     IPPROTO_ICMPV6, frame[l4:end])
    frame[l4 + 2] = c >> 8
    frame[l4 + 3] = c & 0xFF


# -- building ----------------------------------------------------------------------------------


def ipv6_header(saddr: bytes, daddr: bytes, nh: int, payload_len: int, hop_limit: int = 64,
                tclass: int = 0, flow: int = 0) -> bytes:
    return (_U32.pack(6 << 28 | tclass << 20 | flow) + _U16.pack(payload_len)
            + bytes((nh, hop_limit)) + saddr + daddr)


def icmp6_packet(saddr: bytes, daddr: bytes, body: bytes, hop_limit: int = 64) -> bytes:
    """An IPv6 packet carrying ICMPv6 ``body`` (its checksum field zero), checksummed."""
    b = bytearray(body)
    b[2] = b[3] = 0
    c = l4_checksum6(saddr, daddr, IPPROTO_ICMPV6, b)
    b[2], b[3] = c >> 8, c & 0xFF
    return ipv6_header(saddr, daddr, IPPROTO_ICMPV6, len(b), hop_limit) + bytes(b)


def solicited_node(addr: bytes) -> bytes:
    """The solicited-node multicast address of ``addr`` (ff02::1:ffXX:XXXX)."""
    return bytes.fromhex("ff0200000000000000000001ff") + addr[13:16]


def multicast_mac(addr: bytes) -> bytes:
    """The Ethernet address of an IPv6 multicast address (33:33 + its last 32 bits)."""
    return b"\x33\x33" + addr[12:16]


def neighbour_solicit(my_mac: bytes, my_ip: bytes, target: bytes) -> bytes:
    """A whole NS frame asking for ``target``, with our link-layer address (RFC 4861 7.2.2)."""
    group = solicited_node(target)
    body = (bytes((ND_NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0)) + target
            + bytes((ND_OPT_SOURCE_LL, 1)) + my_mac)
    return _ETH.pack(multicast_mac(group), my_mac, ETH_P_IPV6) + icmp6_packet(
        my_ip, group, body, 255)


def neighbour_advert(my_mac: bytes, target: bytes, dst_mac: bytes, dst_ip: bytes,
                     flags: int) -> bytes:
    """A whole NA frame saying ``target`` is at ``my_mac``, from ``target`` itself as the
    kernel answers for its own addresses (RFC 4861 7.2.4)."""
    body = (bytes((ND_NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0)) + target
            + bytes((ND_OPT_TARGET_LL, 1)) + my_mac)
    return _ETH.pack(dst_mac, my_mac, ETH_P_IPV6) + icmp6_packet(target, dst_ip, body, 255)


def unsolicited_advert(my_mac: bytes, target: bytes) -> bytes:
    """An unsolicited NA to all nodes (override set): IPv6's gratuitous ARP (RFC 4861 7.2.6)."""
    return neighbour_advert(my_mac, target, multicast_mac(ALL_NODES), ALL_NODES, NA_OVERRIDE)


# parse_nd result: (icmp type, target, link-layer address option or b"", NA flags)
NdInfo = tuple[int, bytes, bytes, int]


def parse_nd(frame: bytes | bytearray | memoryview, l3: int = ETH_HLEN) -> NdInfo | Drop:
    """A neighbour solicitation or advertisement checked as RFC 4861 7.1.1/7.1.2 asks (hop
    limit 255, code 0, checksum, no extension headers, options of non-zero length inside the
    packet), or ``Drop.BAD_ND``."""
    n = len(frame)
    if n < l3 + IPV6_HLEN + 24 or frame[l3] >> 4 != 6 or frame[l3 + 6] != IPPROTO_ICMPV6:
        return Drop.BAD_ND
    end = l3 + IPV6_HLEN + (frame[l3 + 4] << 8 | frame[l3 + 5])
    l4 = l3 + IPV6_HLEN
    if end > n or end < l4 + 24 or frame[l3 + 7] != 255 or frame[l4 + 1] != 0:
        return Drop.BAD_ND
    typ = frame[l4]
    if typ not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
        return Drop.BAD_ND
    if not l4_checksum6_ok(frame, l3, l4, end, IPPROTO_ICMPV6):
        return Drop.BAD_ND
    target = bytes(frame[l4 + 8:l4 + 24])
    if target[0] == 0xFF:
        return Drop.BAD_ND  # a multicast target
    want = ND_OPT_SOURCE_LL if typ == ND_NEIGHBOR_SOLICIT else ND_OPT_TARGET_LL
    lladdr = b""
    off = l4 + 24
    while off + 2 <= end:
        olen = frame[off + 1] << 3
        if olen == 0 or off + olen > end:
            return Drop.BAD_ND
        if frame[off] == want and olen >= 8:
            lladdr = bytes(frame[off + 2:off + 8])
        off += olen
    return (typ, target, lladdr, frame[l4 + 4])


def icmp6_packet_too_big(orig: bytes | bytearray | memoryview, l3: int, my_ip: bytes,
                         mtu: int) -> bytes:
    """An ICMPv6 "packet too big" about the packet at ``l3``, to its sender, quoting as much
    of it as fits the minimum MTU (RFC 4443 3.2): what the kernel sends when encapsulation
    would exceed the path MTU."""
    end = l3 + IPV6_HLEN + (orig[l3 + 4] << 8 | orig[l3 + 5])
    quoted = bytes(orig[l3:min(end, l3 + MIN_MTU - IPV6_HLEN - 8)])
    body = struct.pack("!BBHI", ICMP6_PACKET_TOO_BIG, 0, 0, max(mtu, MIN_MTU)) + quoted
    return icmp6_packet(my_ip, bytes(orig[l3 + 8:l3 + 24]), body)


def ip6ip6_encapsulate(inner: bytes | bytearray | memoryview, saddr: bytes,
                       daddr: bytes) -> bytes:
    """IPv6-in-IPv6 (RFC 2473, next header 41): an outer header to ``daddr`` around the whole
    inner packet with its traffic class and hop limit, flow label 0, as the kernel's
    ip_vs_tunnel_xmit_v6 builds it."""
    tclass = (inner[0] & 0x0F) << 4 | inner[1] >> 4
    return ipv6_header(saddr, daddr, IPPROTO_IPV6, len(inner), inner[7], tclass) + bytes(inner)


def ip6ip6_inner(payload: bytes | bytearray | memoryview) -> memoryview | Drop:
    """The inner IPv6 packet of an IPv6-in-IPv6 payload (what a raw socket for protocol 41
    hands over: the outer header already stripped), trimmed to its own length."""
    if len(payload) < IPV6_HLEN:
        return Drop.TRUNCATED_IP
    if payload[0] >> 4 != 6:
        return Drop.BAD_IP_HEADER
    end = IPV6_HLEN + (payload[4] << 8 | payload[5])
    if end > len(payload) or end == IPV6_HLEN:
        return Drop.TRUNCATED_IP
    return memoryview(payload)[:end]
