"""IPv6 through the forwarder without I/O: neighbour discovery for a VIP, DR, NAT (checksums over
the IPv6 pseudo-header, ICMPv6 errors translated), TUN (IPv6-in-IPv6), extension-header chains,
fragments, super-frames; bogus chains dropped by reason and never an exception."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.core.table import IPVSTable
from pylvs.dataplane.packet import codec6, offload
from pylvs.dataplane.packet.codec import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN, Drop
from pylvs.dataplane.packet.codec6 import (
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
)
from pylvs.dataplane.packet.forward import Forwarder, Interface
from tests.dataplane.packet.test_codec import tcp_frame


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


VIP = ip6("2001:db8:168::100")
CLIENT = ip6("2001:db8:168::60")
RS1, RS2 = ip6("2001:db8:168::10"), ip6("2001:db8:168::20")
NAT1 = ip6("2001:db8:10:168::10")
DIR6, DIR6_BACK = ip6("2001:db8:168::50"), ip6("2001:db8:10:168::50")
DIR_MAC, DIR_MAC1 = b"\x02\0\0\0\0\x50", b"\x02\0\0\0\1\x50"
CLIENT_MAC, RS1_MAC, RS2_MAC, NAT1_MAC = (b"\x02\0\0\0\0\x60", b"\x02\0\0\0\0\x10",
                                          b"\x02\0\0\0\0\x20", b"\x02\0\0\0\1\x10")
MASK64 = ((1 << 64) - 1) << 64
LAN6 = (int.from_bytes(ip6("2001:db8:168::"), "big"), MASK64)
BACK6 = (int.from_bytes(ip6("2001:db8:10:168::"), "big"), MASK64)


def make(fwd: ForwardingMethod, rips: tuple[bytes, ...] = (RS1, RS2),
         proto: Protocol = Protocol.TCP, mtu: int = 1500) -> tuple[Forwarder, Director]:
    table = IPVSTable()
    key = ServiceKey.inet(proto, ipaddress.ip_address(VIP), 80)
    table.add_service(ServiceSpec(key, "rr"))
    for rip in rips:
        table.add_dest(key, DestSpec(ipaddress.ip_address(rip), 80, fwd))
    t = [1000.0]
    d = Director(table, clock=lambda: t[0])
    eth0 = Interface(2, "eth0", DIR_MAC, bytes([192, 168, 168, 50]), [], mtu, {DIR6}, DIR6,
                     [LAN6])
    eth1 = Interface(3, "eth1", DIR_MAC1, bytes([10, 168, 0, 50]), [], mtu, {DIR6_BACK},
                     DIR6_BACK, [BACK6])
    fw = Forwarder(d, [eth0, eth1])
    fw.neighbours.update({RS1: RS1_MAC, RS2: RS2_MAC, NAT1: NAT1_MAC, CLIENT: CLIENT_MAC})
    fw.set_vips([VIP])
    return fw, d


def l4(src: bytes, dst: bytes, proto: int, sport: int, dport: int, payload: bytes = b"",
       flags: int = TCP_SYN) -> bytes:
    """A TCP or UDP segment with its checksum over the IPv6 pseudo-header."""
    if proto == IPPROTO_TCP:
        seg = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
                        + payload)
        co = 16
    else:
        seg = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
        co = 6
    c = codec6.l4_checksum6(src, dst, proto, seg) or (0xFFFF if proto == IPPROTO_UDP else 0)
    seg[co:co + 2] = c.to_bytes(2, "big")
    return bytes(seg)


def frame6(src: bytes, dst: bytes, nh: int, body: bytes, hop: int = 64, tclass: int = 0,
           dst_mac: bytes = DIR_MAC, src_mac: bytes = CLIENT_MAC) -> bytearray:
    return bytearray(dst_mac + src_mac + b"\x86\xdd"
                     + codec6.ipv6_header(src, dst, nh, len(body), hop, tclass) + body)


def syn(sport: int = 40000, payload: bytes = b"", flags: int = TCP_SYN) -> bytearray:
    return frame6(CLIENT, VIP, IPPROTO_TCP,
                  l4(CLIENT, VIP, IPPROTO_TCP, sport, 80, payload, flags))


def checksum_ok(f: bytes | bytearray | memoryview) -> bool:
    info = codec6.parse_ipv6(f)
    assert not isinstance(info, Drop), info
    return codec6.l4_checksum6_ok(f, 14, info[6], info[7], info[0])


def ns_frame(target: bytes, src: bytes = CLIENT, src_mac: bytes = CLIENT_MAC) -> bytearray:
    f = bytearray(codec6.neighbour_solicit(src_mac, src, target))
    return f


def test_neighbour_solicitation_for_the_vip_is_answered_with_the_directors_mac() -> None:
    fw, _ = make(ForwardingMethod.DROUTE)
    assert fw.handle(2, ns_frame(VIP)) is None
    assert len(fw.side_frames) == 1
    idx, na = fw.side_frames.pop()
    assert idx == 2 and na[0:6] == CLIENT_MAC and na[6:12] == DIR_MAC
    info = codec6.parse_nd(na)
    assert not isinstance(info, Drop)
    typ, target, lladdr, flags = info
    assert (typ, target, lladdr) == (codec6.ND_NEIGHBOR_ADVERT, VIP, DIR_MAC)
    assert flags == codec6.NA_SOLICITED | codec6.NA_OVERRIDE
    assert na[22:38] == VIP and na[38:54] == CLIENT and na[21] == 255
    # the solicitation taught the director the client's MAC
    assert fw.neighbours[CLIENT] == CLIENT_MAC
    # others' addresses are not ours to answer; a hop limit below 255 is refused (RFC 4861)
    fw.handle(2, ns_frame(RS1))
    bad = ns_frame(VIP)
    bad[21] = 64
    fw.handle(2, bad)
    assert fw.side_frames == [] and fw.drops["bad_nd"] == 1


def test_a_new_vip_is_announced_by_an_unsolicited_advertisement() -> None:
    fw, _ = make(ForwardingMethod.DROUTE)
    other = ip6("2001:db8:168::101")
    out = fw.set_vips([VIP, other, bytes([192, 168, 168, 100])])
    assert len(out) == 1  # only the new one, only on the interface it is on-link with
    idx, na = out[0]
    assert idx == 2 and na[0:6] == b"\x33\x33\0\0\0\x01"
    info = codec6.parse_nd(na)
    assert not isinstance(info, Drop) and info[1] == other and info[3] == codec6.NA_OVERRIDE
    assert fw.set_vips([VIP, other]) == []


def test_missing_next_hop_is_solicited_and_learnt_from_the_advertisement() -> None:
    fw, _ = make(ForwardingMethod.DROUTE)
    del fw.neighbours[RS1], fw.neighbours[RS2]
    assert fw.handle(2, syn()) is None
    _idx, ns = fw.side_frames.pop()
    info = codec6.parse_nd(ns)
    assert not isinstance(info, Drop) and info[0] == codec6.ND_NEIGHBOR_SOLICIT
    assert info[2] == DIR_MAC and ns[0:6] == codec6.multicast_mac(codec6.solicited_node(info[1]))
    target = info[1]
    mac = RS1_MAC if target == RS1 else RS2_MAC
    na = bytearray(codec6.neighbour_advert(mac, target, DIR_MAC, DIR6, codec6.NA_SOLICITED))
    fw.handle(2, na)
    assert fw.neighbours[target] == mac


def test_dr_rewrites_only_the_macs() -> None:
    fw, d = make(ForwardingMethod.DROUTE)
    frame = syn()
    before = bytes(frame[14:])
    out = fw.handle(2, frame)
    assert out is not None
    idx, f = out
    assert idx == 2 and f[0:6] in (RS1_MAC, RS2_MAC) and f[6:12] == DIR_MAC
    assert bytes(f[14:]) == before and d.connection_count == 1
    again = fw.handle(2, syn(flags=TCP_ACK))
    assert again is not None and again[1][0:6] == f[0:6]


def test_nat_rewrites_both_ways_with_checksums_over_the_pseudo_header() -> None:
    for proto in (IPPROTO_TCP, IPPROTO_UDP):
        fw, _ = make(ForwardingMethod.MASQ, rips=(NAT1,),
                     proto=Protocol.TCP if proto == IPPROTO_TCP else Protocol.UDP)
        f = frame6(CLIENT, VIP, proto, l4(CLIENT, VIP, proto, 40000, 80, b"GET /"))
        out = fw.handle(2, f)
        assert out is not None
        idx, g = out
        assert idx == 3 and g[0:6] == NAT1_MAC and g[38:54] == NAT1 and g[22:38] == CLIENT
        assert checksum_ok(g)
        reply = frame6(NAT1, CLIENT, proto, l4(NAT1, CLIENT, proto, 80, 40000, b"hello",
                                              TCP_SYN | TCP_ACK), src_mac=NAT1_MAC,
                       dst_mac=DIR_MAC1)
        back = fw.handle(3, reply)
        assert back is not None
        idx, h = back
        assert idx == 2 and h[0:6] == CLIENT_MAC and h[22:38] == VIP and h[38:54] == CLIENT
        assert checksum_ok(h)


def test_nat_translates_icmpv6_errors_both_ways() -> None:
    fw, _ = make(ForwardingMethod.MASQ, rips=(NAT1,))
    assert fw.handle(2, syn()) is not None
    # the client's "packet too big" about a reply it got (VIP:80 -> client:40000)
    quoted = codec6.ipv6_header(VIP, CLIENT, IPPROTO_TCP, 20) + l4(VIP, CLIENT, IPPROTO_TCP, 80,
                                                                   40000)
    ptb = struct.pack("!BBHI", codec6.ICMP6_PACKET_TOO_BIG, 0, 0, 1400) + quoted
    err = bytearray(DIR_MAC + CLIENT_MAC + b"\x86\xdd" + codec6.icmp6_packet(CLIENT, VIP, ptb))
    out = fw.handle(2, err)
    assert out is not None
    idx, g = out
    assert idx == 3 and g[38:54] == NAT1 and checksum_ok(g)
    inner = 14 + 40 + 8
    assert g[inner + 8:inner + 24] == NAT1 and g[inner + 40:inner + 42] == b"\0\x50"
    # a real server's router says "unreachable" about client -> NAT1:80: back to the client
    quoted = codec6.ipv6_header(CLIENT, NAT1, IPPROTO_TCP, 20) + l4(CLIENT, NAT1, IPPROTO_TCP,
                                                                    40000, 80)
    unr = struct.pack("!BBHI", codec6.ICMP6_DEST_UNREACH, 4, 0, 0) + quoted
    err = bytearray(DIR_MAC1 + NAT1_MAC + b"\x86\xdd" + codec6.icmp6_packet(NAT1, CLIENT, unr))
    out = fw.handle(3, err)
    assert out is not None
    idx, g = out
    assert idx == 2 and g[22:38] == VIP and g[inner + 24:inner + 40] == VIP and checksum_ok(g)
    assert fw.v6.icmp_forwarded == 2


def test_tun_wraps_the_packet_in_ipv6_with_its_traffic_class_and_hop_limit() -> None:
    fw, _ = make(ForwardingMethod.TUNNEL)
    f = frame6(CLIENT, VIP, IPPROTO_TCP, l4(CLIENT, VIP, IPPROTO_TCP, 40000, 80), hop=57,
               tclass=0xB8)
    inner = bytes(f[14:])
    out = fw.handle(2, f)
    assert out is not None
    idx, g = out
    assert idx == 2 and g[0:6] in (RS1_MAC, RS2_MAC) and g[12:14] == b"\x86\xdd"
    assert g[20] == codec6.IPPROTO_IPV6 and g[21] == 57 and g[22:38] == DIR6
    assert g[38:54] in (RS1, RS2) and bytes(g[54:]) == inner
    assert ((g[14] & 0x0F) << 4 | g[15] >> 4) == 0xB8
    assert codec6.ip6ip6_inner(bytes(g[54:])) == inner


def test_tun_answers_packet_too_big_when_the_tunnel_would_not_fit() -> None:
    fw, _ = make(ForwardingMethod.TUNNEL, mtu=1500)
    f = syn(payload=bytes(1500 - 40 - 20))  # a full-size packet: no room for 40 more bytes
    assert fw.handle(2, f) is None
    assert fw.drops["too_big"] == 1
    idx, ptb = fw.side_frames.pop()
    assert idx == 2 and ptb[0:6] == CLIENT_MAC and ptb[20] == IPPROTO_ICMPV6
    assert ptb[54] == codec6.ICMP6_PACKET_TOO_BIG and ptb[58:62] == (1460).to_bytes(4, "big")
    assert checksum_ok(ptb)


def ext(nh: int, length8: int = 0, routing_left: int = 0) -> bytes:
    """An extension header of (length8 + 1) * 8 bytes whose next header is ``nh``."""
    body = bytearray(bytes((nh, length8)) + bytes(6 + length8 * 8))
    if routing_left:
        body[3] = routing_left
    return bytes(body)


def chain_frame(headers: list[tuple[int, int, int]]) -> bytearray:
    """A SYN behind extension headers [(type, length8, segments left), ...]."""
    tcp = l4(CLIENT, VIP, IPPROTO_TCP, 40001, 80)
    body = b""
    types = [h[0] for h in headers] + [IPPROTO_TCP]
    for (_t, n8, left), nxt in zip(headers, types[1:], strict=True):
        body += ext(nxt, n8, left)
    return frame6(CLIENT, VIP, types[0], body + tcp)


def test_extension_headers_are_walked_and_bogus_chains_dropped_by_reason() -> None:
    fw, _ = make(ForwardingMethod.MASQ, rips=(NAT1,))
    good = chain_frame([(IPPROTO_HOPOPTS, 0, 0), (IPPROTO_DSTOPTS, 1, 0),
                        (IPPROTO_ROUTING, 0, 0)])
    out = fw.handle(2, good)
    assert out is not None and out[1][38:54] == NAT1 and checksum_ok(out[1])
    cases = [
        ([(IPPROTO_DSTOPTS, 0, 0)] * 9, "ext_chain_too_long"),
        ([(IPPROTO_DSTOPTS, 0, 0), (IPPROTO_HOPOPTS, 0, 0)], "bad_ext_header"),
        ([(IPPROTO_ROUTING, 0, 2)], "routing_header"),
    ]
    for headers, reason in cases:
        assert fw.handle(2, chain_frame(headers)) is None
        assert fw.drops.get(reason) == 1, (reason, fw.drops)
    truncated = frame6(CLIENT, VIP, IPPROTO_DSTOPTS, ext(IPPROTO_TCP, 5)[:16])  # says 48
    assert fw.handle(2, truncated) is None and fw.drops["bad_ext_header"] == 2


def fragments(payload: bytes, ident: int, sizes: list[int], proto: int = IPPROTO_UDP,
              src: bytes = CLIENT, dst: bytes = VIP) -> list[bytearray]:
    out, off = [], 0
    for i, n in enumerate(sizes):
        more = i < len(sizes) - 1
        chunk = payload[off:off + n]
        fh = struct.pack("!BBHI", proto, 0, off | more, ident)
        out.append(frame6(src, dst, IPPROTO_FRAGMENT, fh + chunk))
        off += n
    return out


def test_fragments_follow_their_first_fragment_and_nat_rewrites_each() -> None:
    fw, _ = make(ForwardingMethod.MASQ, rips=(NAT1,), proto=Protocol.UDP)
    data = l4(CLIENT, VIP, IPPROTO_UDP, 40000, 80, bytes(range(256)) * 12)
    first, middle, last = fragments(data, 7, [1232, 1232, len(data) - 2464])
    assert fw.handle(2, middle) is None  # held until the first one says where it goes
    out = fw.handle(2, first)
    assert out is not None and out[1][38:54] == NAT1
    (_idx, held), = fw.side_frames
    fw.side_frames.clear()
    assert held[38:54] == NAT1
    out3 = fw.handle(2, last)
    assert out3 is not None and out3[1][38:54] == NAT1
    # the receiver's reassembly: the rewritten datagram's checksum holds
    whole = bytes(out[1][62:]) + bytes(held[62:]) + bytes(out3[1][62:])
    assert codec6.l4_checksum6(CLIENT, NAT1, IPPROTO_UDP, whole) == 0
    assert fw.frags.counters["frag_datagrams"] == 1


def test_ipv6_super_frames_are_cut_into_checksummed_segments() -> None:
    fw, _ = make(ForwardingMethod.DROUTE)
    assert fw.handle(2, syn(40002)) is not None
    payload = bytes(i & 0xFF for i in range(5000))
    big = syn(40002, payload, TCP_ACK | 0x08)
    meta = offload.GSO_TCPV6 << offload.META_GSO_SHIFT_TYPE | 1440 << offload.META_GSO_SHIFT_SIZE
    assert fw.handle(2, big, meta) is None
    segs = [f for _i, f in fw.side_frames]
    assert len(segs) == 4 and all(len(s) <= 14 + 40 + 20 + 1440 for s in segs)
    assert all(checksum_ok(s) for s in segs)
    assert b"".join(bytes(s[74:]) for s in segs) == payload
    assert [s[67] & 0x08 for s in segs] == [0, 0, 0, 0x08]  # PSH on the last one only


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_random_ipv6_payloads_never_raise(body: bytes, nh: int, plen: int) -> None:
    fw, _ = make(ForwardingMethod.MASQ, rips=(NAT1,))
    f = bytearray(DIR_MAC + CLIENT_MAC + b"\x86\xdd"
                  + codec6.ipv6_header(CLIENT, VIP, nh, plen) + body)
    fw.handle(2, f)
    fw.handle(3, bytearray(f))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 43, 44, 60, 6, 17, 58, 59]),
                          st.integers(0, 3), st.integers(0, 2)), max_size=12),
       st.binary(max_size=64))
def test_random_extension_chains_never_raise(chain: list[tuple[int, int, int]],
                                             tail: bytes) -> None:
    fw, _ = make(ForwardingMethod.TUNNEL)
    body = b""
    types = [c[0] for c in chain] + [IPPROTO_TCP]
    for (_t, n8, left), nxt in zip(chain, types[1:], strict=True):
        body += ext(nxt, n8, left)
    for f in (frame6(CLIENT, VIP, types[0], body + tail),
              frame6(CLIENT, VIP, types[0], body + l4(CLIENT, VIP, IPPROTO_TCP, 1, 80))):
        out = fw.handle(2, f)
        assert out is None or out[1][12:14] == b"\x86\xdd"


def test_mixed_family_tunnels_are_dropped_and_counted() -> None:
    """IPVS lets a TUN service have real servers of the other family; the packet plane builds
    neither IPv4-in-IPv6 nor IPv6-in-IPv4, so such packets are dropped and counted, never sent
    with a mangled outer header."""
    fw, _ = make(ForwardingMethod.TUNNEL, rips=(bytes([192, 168, 168, 10]),))
    assert fw.handle(2, syn()) is None
    assert fw.drops["unsupported_protocol"] == 1 and fw.side_frames == []
    table = IPVSTable()
    key = ServiceKey.inet(Protocol.TCP, ipaddress.ip_address("192.168.168.100"), 80)
    table.add_service(ServiceSpec(key, "rr"))
    table.add_dest(key, DestSpec(ipaddress.ip_address(RS1), 80, ForwardingMethod.TUNNEL))
    eth0 = Interface(2, "eth0", DIR_MAC, bytes([192, 168, 168, 50]),
                     [(0xC0A8A800, 0xFFFFFF00)], 1500, set(), DIR6, [LAN6])
    fw4 = Forwarder(Director(table), [eth0])
    f = tcp_frame(bytes([192, 168, 168, 60]), bytes([192, 168, 168, 100]), 40000, 80, b"")
    f[0:6], f[6:12] = DIR_MAC, CLIENT_MAC
    assert fw4.handle(2, f) is None
    assert fw4.drops["unsupported_protocol"] == 1 and fw4.side_frames == []


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=160), st.integers(0, 60))
def test_ipv6_parsers_never_raise_on_any_bytes(data: bytes, cut: int) -> None:
    """The codec's IPv6 readers return a value or a Drop for every input, truncated or not."""
    f = bytearray(b"\0" * 12 + b"\x86\xdd" + data)
    for res in (codec6.parse_ipv6(f), codec6.parse_nd(f), codec6.ip6ip6_inner(bytes(data))):
        assert isinstance(res, (tuple, memoryview, Drop))
    if len(f) >= 62:
        res = codec6.parse_icmp6_error(f, 54, min(len(f), 54 + cut + 8))
        assert isinstance(res, (tuple, Drop))


def test_ip6ip6_inner_is_trimmed_and_checked() -> None:
    inner = codec6.ipv6_header(CLIENT, VIP, IPPROTO_TCP, 20) + l4(CLIENT, VIP, IPPROTO_TCP, 1, 80)
    assert codec6.ip6ip6_inner(inner + b"pad") == inner
    assert codec6.ip6ip6_inner(inner[:30]) is Drop.TRUNCATED_IP
    assert codec6.ip6ip6_inner(b"\x45" + inner[1:]) is Drop.BAD_IP_HEADER
