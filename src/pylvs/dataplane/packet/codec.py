"""Packet codecs for the ``packet`` data plane: Ethernet, ARP, IPv4, TCP/UDP/ICMP, IPIP.

What this is for: reading and rewriting frames in place on the forwarding hot path, with no I/O
(sans-IO: bytes in, values or bytes out). They are hand-written with ``struct`` and integer
arithmetic because every microsecond here is a packet per second lost; they return plain tuples
and ints, never objects, and report malformed input with a ``Drop`` code instead of raising, so a
truncated, fragmented or corrupt frame is counted and dropped and never stops the forwarder.

Checksums: the full Internet checksum (RFC 1071) is the big-integer remainder modulo 0xFFFF of
the data read as one big-endian number (16-bit one's-complement addition is addition modulo
2^16-1), which CPython computes in C. Rewrites use the incremental update of RFC 1624 (eqn. 3).

What this is not for: IPv6 (``codec6``), IP options processing, reassembly of fragments (``frag`` follows
them one by one), or deciding where a packet goes (``pylvs.dataplane.packet.forward``).
"""

from __future__ import annotations

import enum
import struct

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
ICMP_ECHOREPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11
ICMP_FRAG_NEEDED = 4  # code of ICMP_DEST_UNREACH
ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST_MAC = b"\xff" * 6
MAX_FRAME = 65535 + ETH_HLEN

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

_U16 = struct.Struct("!H")
_IP_HDR = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_ETH = struct.Struct("!6s6sH")


class Drop(enum.IntEnum):
    """Why a frame was not forwarded: each is counted separately (``describe()['drops']``)."""

    TRUNCATED_ETHERNET = 1
    NOT_IPV4 = 2
    TRUNCATED_IP = 3
    BAD_IP_HEADER = 4  # version, IHL or total length inconsistent with the frame
    BAD_IP_CHECKSUM = 5
    FRAGMENT = 6
    TRUNCATED_L4 = 7
    BAD_L4_CHECKSUM = 8
    OVERSIZED = 9
    BAD_ARP = 10
    UNSUPPORTED_PROTOCOL = 11
    NO_SERVICE = 12
    NO_CONNECTION = 13
    NO_NEIGHBOUR = 14
    TTL_EXCEEDED = 15
    TOO_BIG = 16
    TABLE_FULL = 17
    BAD_ICMP = 18
    BAD_GSO = 19  # a super-frame that cannot be cut (not TCP / UDP GSO, bad headers)
    BAD_EXT_HEADER = 20  # IPv6: an extension header truncated, misplaced or repeated
    EXT_CHAIN_TOO_LONG = 21  # IPv6: more than codec6.MAX_EXT_HEADERS extension headers
    ROUTING_HEADER = 22  # IPv6: a routing header with segments left (not the destination)
    BAD_ND = 23  # IPv6 neighbour discovery that RFC 4861's validity checks refuse


# -- checksums ---------------------------------------------------------------------------------


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """16-bit one's-complement sum of ``data`` (odd length padded with a zero byte)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    if not data:
        return 0
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and any(data):
        return 0xFFFF
    return s


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Internet checksum (RFC 1071) of ``data``."""
    return ~ones_sum(data) & 0xFFFF


def _fold(s: int) -> int:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s


def csum_replace32(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: the checksum after a 32-bit field (an address) changed old -> new."""
    s = (~csum & 0xFFFF) + (~old >> 16 & 0xFFFF) + (~old & 0xFFFF) + (new >> 16) + (new & 0xFFFF)
    return ~_fold(s) & 0xFFFF


def csum_replace16(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for a 16-bit field (a port)."""
    return ~_fold((~csum & 0xFFFF) + (~old & 0xFFFF) + new) & 0xFFFF


def csum_replace_addr_port(csum: int, old_ip: int, new_ip: int, old_port: int, new_port: int) -> int:
    """One update for an address and a port changing together (NAT), as TCP/UDP need."""
    s = (
        (~csum & 0xFFFF)
        + (~old_ip >> 16 & 0xFFFF) + (~old_ip & 0xFFFF) + (new_ip >> 16) + (new_ip & 0xFFFF)
        + (~old_port & 0xFFFF) + new_port
    )
    return ~_fold(s) & 0xFFFF


def l4_checksum(saddr: bytes, daddr: bytes, proto: int, segment: bytes | bytearray | memoryview) -> int:
    """TCP/UDP checksum over the IPv4 pseudo-header and ``segment`` (its checksum field zeroed
    by the caller when computing, left in place when verifying: then 0 means correct)."""
    pseudo = saddr + daddr + bytes((0, proto)) + len(segment).to_bytes(2, "big")
    s = ones_sum(pseudo) + ones_sum(segment)
    return ~_fold(s) & 0xFFFF


def l4_checksum_ok(frame: bytes | bytearray | memoryview, l3: int, l4: int, end: int, proto: int) -> bool:
    """Whether the TCP/UDP checksum of the packet at ``l3`` is correct (UDP 0 = none)."""
    if proto == IPPROTO_UDP and frame[l4 + 6] == 0 and frame[l4 + 7] == 0:
        return True
    return l4_checksum(bytes(frame[l3 + 12:l3 + 16]), bytes(frame[l3 + 16:l3 + 20]), proto,
                       frame[l4:end]) == 0


# -- parsing -----------------------------------------------------------------------------------

# parse_ipv4 result: (proto, saddr, daddr, sport, dport, tcp_flags, l4_offset, ip_end)
# sport/dport are 0 for protocols without ports; for ICMP, sport = type and dport = code.
IPv4Info = tuple[int, bytes, bytes, int, int, int, int, int]


def parse_ipv4(frame: bytes | bytearray | memoryview, l3: int = ETH_HLEN,
               verify_checksum: bool = True) -> IPv4Info | Drop:
    """The addresses, ports and TCP flags of the IPv4 packet at ``l3``, or why it is unusable."""
    n = len(frame)
    if n < l3 + 20:
        return Drop.TRUNCATED_IP
    vihl, _tos, tot_len, _ident, frag, _ttl, proto, _csum, saddr, daddr = _IP_HDR.unpack_from(frame, l3)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or tot_len < ihl:
        return Drop.BAD_IP_HEADER
    end = l3 + tot_len
    if end > n:
        return Drop.TRUNCATED_IP
    if verify_checksum and ones_sum(frame[l3:l3 + ihl]) != 0xFFFF:
        return Drop.BAD_IP_CHECKSUM
    if frag & 0x3FFF:  # MF set or a non-zero offset
        return Drop.FRAGMENT
    l4 = l3 + ihl
    if proto == IPPROTO_TCP:
        if end < l4 + 20:
            return Drop.TRUNCATED_L4
        doff = (frame[l4 + 12] >> 4) << 2
        if doff < 20 or l4 + doff > end:
            return Drop.TRUNCATED_L4
        sport, dport = _PORTS.unpack_from(frame, l4)
        return (proto, saddr, daddr, sport, dport, frame[l4 + 13], l4, end)
    if proto == IPPROTO_UDP:
        if end < l4 + 8:
            return Drop.TRUNCATED_L4
        sport, dport = _PORTS.unpack_from(frame, l4)
        ulen = _U16.unpack_from(frame, l4 + 4)[0]
        if ulen < 8 or l4 + ulen > end:
            return Drop.TRUNCATED_L4
        return (proto, saddr, daddr, sport, dport, 0, l4, end)
    if proto == IPPROTO_ICMP:
        if end < l4 + 8:
            return Drop.TRUNCATED_L4
        return (proto, saddr, daddr, frame[l4], frame[l4 + 1], 0, l4, end)
    return (proto, saddr, daddr, 0, 0, 0, l4, end)


# parse_icmp_error result: the offending packet's (proto, saddr, daddr, sport, dport, inner_l3)
IcmpInner = tuple[int, bytes, bytes, int, int, int]


def parse_icmp_error(frame: bytes | bytearray | memoryview, l4: int, end: int) -> IcmpInner | Drop:
    """The packet an ICMP error quotes (IP header + 8 bytes), to find its connection."""
    if frame[l4] not in ICMP_ERROR_TYPES:
        return Drop.BAD_ICMP
    inner = l4 + 8
    if end < inner + 20:
        return Drop.BAD_ICMP
    vihl = frame[inner]
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or end < inner + ihl + 8:
        return Drop.BAD_ICMP
    proto = frame[inner + 9]
    saddr = bytes(frame[inner + 12:inner + 16])
    daddr = bytes(frame[inner + 16:inner + 20])
    sport, dport = _PORTS.unpack_from(frame, inner + ihl)
    return (proto, saddr, daddr, sport, dport, inner)


# parse_arp result: (op, sender_mac, sender_ip, target_mac, target_ip)
ArpInfo = tuple[int, bytes, bytes, bytes, bytes]


def parse_arp(frame: bytes | bytearray | memoryview, l3: int = ETH_HLEN) -> ArpInfo | Drop:
    """An Ethernet/IPv4 ARP packet, or ``Drop.BAD_ARP``."""
    if len(frame) < l3 + 28:
        return Drop.BAD_ARP
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, l3)
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4 or op not in (1, 2):
        return Drop.BAD_ARP
    return (op, sha, spa, tha, tpa)


def ethertype(frame: bytes | bytearray | memoryview) -> int:
    """The frame's EtherType, or -1 when the frame is shorter than an Ethernet header."""
    if len(frame) < ETH_HLEN:
        return -1
    t: int = _U16.unpack_from(frame, 12)[0]
    return t


# -- building ----------------------------------------------------------------------------------


def ethernet(dst: bytes, src: bytes, etype: int) -> bytes:
    return _ETH.pack(dst, src, etype)


def arp_packet(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes, eth_dst: bytes) -> bytes:
    """A whole ARP frame (padded to the 60-byte Ethernet minimum)."""
    body = _ARP.pack(1, ETH_P_IP, 6, 4, op, sha, spa, tha, tpa)
    return (ethernet(eth_dst, sha, ETH_P_ARP) + body).ljust(60, b"\0")


def arp_reply_for(request: ArpInfo, my_mac: bytes) -> bytes:
    """The reply to an ARP request for an address we own."""
    _op, sha, spa, _tha, tpa = request
    return arp_packet(ARP_REPLY, my_mac, tpa, sha, spa, sha)


def arp_request(my_mac: bytes, my_ip: bytes, target_ip: bytes) -> bytes:
    return arp_packet(ARP_REQUEST, my_mac, my_ip, b"\0" * 6, target_ip, BROADCAST_MAC)


def ipv4_header(saddr: bytes, daddr: bytes, proto: int, payload_len: int, ttl: int = 64,
                tos: int = 0, ident: int = 0, df: bool = True) -> bytes:
    """A 20-byte IPv4 header with its checksum."""
    hdr = bytearray(_IP_HDR.pack(0x45, tos, 20 + payload_len, ident, 0x4000 if df else 0,
                                 ttl, proto, 0, saddr, daddr))
    _U16.pack_into(hdr, 10, checksum(hdr))
    return bytes(hdr)


def ipip_encapsulate(inner: bytes | bytearray | memoryview, saddr: bytes, daddr: bytes,
                     ident: int = 0) -> bytes:
    """IP-in-IP (RFC 2003): an outer header to ``daddr`` around the whole inner packet, copying
    its TOS and DF bit, as the kernel's ip_vs_tunnel_xmit does."""
    tos = inner[1]
    df = bool(inner[6] & 0x40)
    return ipv4_header(saddr, daddr, IPPROTO_IPIP, len(inner), 64, tos, ident, df) + bytes(inner)


def ipip_decapsulate(packet: bytes | bytearray | memoryview) -> memoryview | Drop:
    """The inner IPv4 packet of an IPIP packet that starts at its outer IP header."""
    if len(packet) < 40:
        return Drop.TRUNCATED_IP
    vihl = packet[0]
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or packet[9] != IPPROTO_IPIP or len(packet) < ihl + 20:
        return Drop.BAD_IP_HEADER
    inner = memoryview(packet)[ihl:]
    res = parse_ipv4(inner, 0)
    # fragments are whole inner packets as far as decapsulation goes: the stack reassembles
    if isinstance(res, Drop) and res is not Drop.FRAGMENT:
        return res
    tot = _U16.unpack_from(inner, 2)[0]
    return inner[:tot]


def ipv4_fragment(packet: bytes | bytearray, mtu: int) -> list[bytes]:
    """An IPv4 packet (starting at its header, DF clear) cut into fragments of at most ``mtu``
    bytes, each payload a multiple of 8 bytes but the last (RFC 791)."""
    ihl = (packet[0] & 0x0F) << 2
    head = bytearray(packet[:ihl])
    step = (mtu - ihl) & ~7
    base = _U16.unpack_from(packet, 6)[0]
    off0, mf0 = base & 0x1FFF, base & 0x2000
    out = []
    pos = ihl
    while pos < len(packet):
        chunk = packet[pos:pos + step]
        last = pos + len(chunk) >= len(packet)
        h = bytearray(head)
        _U16.pack_into(h, 2, ihl + len(chunk))
        _U16.pack_into(h, 6, (off0 + ((pos - ihl) >> 3)) | (mf0 if last else 0x2000))
        h[10] = h[11] = 0
        _U16.pack_into(h, 10, checksum(h))
        out.append(bytes(h) + bytes(chunk))
        pos += len(chunk)
    return out


def icmp_frag_needed(orig: bytes | bytearray | memoryview, l3: int, my_ip: bytes, mtu: int) -> bytes:
    """An ICMP "fragmentation needed" (type 3 code 4) about the packet at ``l3``, to its sender:
    what the kernel sends when encapsulation would exceed the path MTU (RFC 1191)."""
    ihl = (orig[l3] & 0x0F) << 2
    quoted = bytes(orig[l3:l3 + ihl + 8])
    body = bytearray(struct.pack("!BBHHH", ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, mtu) + quoted)
    _U16.pack_into(body, 2, checksum(body))
    return ipv4_header(my_ip, bytes(orig[l3 + 12:l3 + 16]), IPPROTO_ICMP, len(body)) + bytes(body)


# -- rewriting in place ------------------------------------------------------------------------


def set_macs(frame: bytearray | memoryview, dst: bytes, src: bytes) -> None:
    frame[0:6] = dst
    frame[6:12] = src


def decrement_ttl(frame: bytearray | memoryview, l3: int) -> bool:
    """TTL - 1 with the checksum updated; False when the packet must not be forwarded."""
    ttl = frame[l3 + 8]
    if ttl <= 1:
        return False
    frame[l3 + 8] = ttl - 1
    # the TTL is the high byte of the 16-bit word at l3+8
    c = _U16.unpack_from(frame, l3 + 10)[0]
    _U16.pack_into(frame, l3 + 10, csum_replace16(c, ttl << 8 | frame[l3 + 9], (ttl - 1) << 8 | frame[l3 + 9]))
    return True


def _l4_csum_offset(proto: int) -> int:
    return 16 if proto == IPPROTO_TCP else 6


def nat_rewrite(frame: bytearray | memoryview, l3: int, l4: int, proto: int, new_ip: bytes,
                new_port: int, dst: bool) -> None:
    """Rewrite the destination (``dst``) or source address and port of a TCP/UDP packet in place,
    updating the IPv4 and TCP/UDP checksums incrementally (RFC 1624)."""
    ip_off = l3 + (16 if dst else 12)
    port_off = l4 + (2 if dst else 0)
    old_ip = int.from_bytes(frame[ip_off:ip_off + 4], "big")
    nip = int.from_bytes(new_ip, "big")
    old_port = _U16.unpack_from(frame, port_off)[0]
    frame[ip_off:ip_off + 4] = new_ip
    _U16.pack_into(frame, port_off, new_port)
    c = _U16.unpack_from(frame, l3 + 10)[0]
    _U16.pack_into(frame, l3 + 10, csum_replace32(c, old_ip, nip))
    co = l4 + _l4_csum_offset(proto)
    c = _U16.unpack_from(frame, co)[0]
    if proto == IPPROTO_UDP and c == 0:
        return  # no checksum, nothing to update
    c = csum_replace_addr_port(c, old_ip, nip, old_port, new_port)
    if proto == IPPROTO_UDP and c == 0:
        c = 0xFFFF
    _U16.pack_into(frame, co, c)


def nat_rewrite_icmp_error(frame: bytearray | memoryview, l3: int, l4: int, end: int,
                           inner: int, new_ip: bytes, new_port: int, outer_dst: bool) -> None:
    """Rewrite an ICMP error that quotes a NAT-ed packet: the outer address (destination when
    ``outer_dst``, else source), the quoted packet's opposite address and port, and all three
    checksums (outer IP, quoted IP incrementally, ICMP fully since the quoted bytes changed)."""
    ip_off = l3 + (16 if outer_dst else 12)
    old = int.from_bytes(frame[ip_off:ip_off + 4], "big")
    frame[ip_off:ip_off + 4] = new_ip
    c = _U16.unpack_from(frame, l3 + 10)[0]
    _U16.pack_into(frame, l3 + 10, csum_replace32(c, old, int.from_bytes(new_ip, "big")))
    ihl = (frame[inner] & 0x0F) << 2
    # the quoted packet travelled the other way: its source (for an error about a packet we sent
    # on to the client, outer_dst=False) or destination is the rewritten endpoint
    in_ip_off = inner + (12 if outer_dst else 16)
    in_port_off = inner + ihl + (0 if outer_dst else 2)
    old = int.from_bytes(frame[in_ip_off:in_ip_off + 4], "big")
    frame[in_ip_off:in_ip_off + 4] = new_ip
    c = _U16.unpack_from(frame, inner + 10)[0]
    _U16.pack_into(frame, inner + 10, csum_replace32(c, old, int.from_bytes(new_ip, "big")))
    _U16.pack_into(frame, in_port_off, new_port)
    _U16.pack_into(frame, l4 + 2, 0)
    _U16.pack_into(frame, l4 + 2, checksum(frame[l4:end]))
