"""Packet codecs: checksums agree with RFC 1071, rewrites keep packets valid, and no input
(truncated, malformed, fragmented, random) makes a parser raise."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.dataplane.packet import codec
from pylvs.dataplane.packet.codec import Drop

ips = st.binary(min_size=4, max_size=4)
ports = st.integers(0, 65535)
macs = st.binary(min_size=6, max_size=6)


def ref_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_frame(saddr: bytes, daddr: bytes, sport: int, dport: int, payload: bytes = b"",
              flags: int = codec.TCP_SYN, frag: int = 0, ttl: int = 64) -> bytearray:
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload)
    struct.pack_into("!H", tcp, 16, codec.l4_checksum(saddr, daddr, 6, tcp))
    ip = bytearray(codec.ipv4_header(saddr, daddr, 6, len(tcp), ttl=ttl))
    if frag:
        struct.pack_into("!H", ip, 6, frag)
        struct.pack_into("!H", ip, 10, 0)
        struct.pack_into("!H", ip, 10, codec.checksum(ip))
    return bytearray(codec.ethernet(b"\x02" * 6, b"\x04" * 6, codec.ETH_P_IP)) + ip + tcp


def udp_frame(saddr: bytes, daddr: bytes, sport: int, dport: int, payload: bytes,
              with_csum: bool = True) -> bytearray:
    udp = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    if with_csum:
        c = codec.l4_checksum(saddr, daddr, 17, udp) or 0xFFFF
        struct.pack_into("!H", udp, 6, c)
    ip = codec.ipv4_header(saddr, daddr, 17, len(udp))
    return bytearray(codec.ethernet(b"\x02" * 6, b"\x04" * 6, codec.ETH_P_IP)) + ip + udp


@given(st.binary(max_size=200))
def test_checksum_matches_rfc1071(data: bytes) -> None:
    assert codec.checksum(data) == ref_checksum(data)


@given(st.binary(min_size=20, max_size=20), st.integers(0, 9), ips)
def test_incremental_update_equals_recompute(hdr: bytes, word: int, new: bytes) -> None:
    h = bytearray(hdr)
    h[0] = 0x45  # a real header is never all zeros (where -0 and +0 differ)
    h[10:12] = b"\0\0"
    h[10:12] = codec.checksum(h).to_bytes(2, "big")
    old32 = int.from_bytes(h[12:16], "big")
    h2 = bytearray(h)
    h2[12:16] = new
    c = codec.csum_replace32(int.from_bytes(h[10:12], "big"), old32, int.from_bytes(new, "big"))
    h2[10:12] = c.to_bytes(2, "big")
    assert codec.ones_sum(h2) == 0xFFFF


@given(ips, ips, ports, ports, st.binary(max_size=64), ips, ports, st.booleans())
def test_nat_rewrite_keeps_checksums_valid(s: bytes, d: bytes, sp: int, dp: int, payload: bytes,
                                          new_ip: bytes, new_port: int, dst: bool) -> None:
    for frame in (tcp_frame(s, d, sp, dp, payload), udp_frame(s, d, sp, dp, payload)):
        info = codec.parse_ipv4(frame)
        assert not isinstance(info, Drop)
        proto, _sa, _da, _sp, _dp, _fl, l4, end = info
        codec.nat_rewrite(frame, 14, l4, proto, new_ip, new_port, dst)
        again = codec.parse_ipv4(frame)
        assert not isinstance(again, Drop)
        if dst:
            assert again[2] == new_ip and again[4] == new_port
        else:
            assert again[1] == new_ip and again[3] == new_port
        assert codec.l4_checksum_ok(frame, 14, l4, end, proto)


def test_udp_without_checksum_stays_without() -> None:
    f = udp_frame(b"\1\2\3\4", b"\5\6\7\10", 1000, 53, b"q", with_csum=False)
    codec.nat_rewrite(f, 14, 34, 17, b"\11\11\11\11", 5353, True)
    assert f[40:42] == b"\0\0"


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data: bytes) -> None:
    res = codec.parse_ipv4(data, 0)
    assert isinstance(res, Drop | tuple)
    codec.parse_arp(data, 0)
    codec.ipip_decapsulate(data)
    codec.ethertype(data)
    if isinstance(res, tuple) and res[0] == codec.IPPROTO_ICMP:
        codec.parse_icmp_error(data, res[6], res[7])


@given(ips, ips, ports, ports, st.binary(max_size=40), st.data())
def test_truncated_packets_are_dropped(s: bytes, d: bytes, sp: int, dp: int, payload: bytes,
                                       data: st.DataObject) -> None:
    frame = tcp_frame(s, d, sp, dp, payload)
    cut = data.draw(st.integers(0, len(frame) - 1))
    assert isinstance(codec.parse_ipv4(frame[:cut]), Drop)


def test_fragments_and_bad_checksums_are_dropped() -> None:
    a, b = b"\xc0\xa8\xa8\x3c", b"\xc0\xa8\xa8\x64"
    assert codec.parse_ipv4(tcp_frame(a, b, 1, 80, frag=0x2000)) is Drop.FRAGMENT  # MF
    assert codec.parse_ipv4(tcp_frame(a, b, 1, 80, frag=0x0010)) is Drop.FRAGMENT  # offset
    f = tcp_frame(a, b, 1, 80)
    f[14 + 8] ^= 0xFF  # TTL changed, checksum not
    assert codec.parse_ipv4(f) is Drop.BAD_IP_CHECKSUM
    g = tcp_frame(a, b, 1, 80, b"payload")
    g[-1] ^= 1
    info = codec.parse_ipv4(g)
    assert isinstance(info, tuple)
    assert not codec.l4_checksum_ok(g, 14, info[6], info[7], 6)


def test_parse_reports_ports_and_flags() -> None:
    f = tcp_frame(b"\1\1\1\1", b"\2\2\2\2", 40000, 80, flags=codec.TCP_SYN | codec.TCP_ACK)
    assert codec.parse_ipv4(f) == (6, b"\1\1\1\1", b"\2\2\2\2", 40000, 80, 0x12, 34, len(f))


@given(st.binary(min_size=20, max_size=1400), ips, ips, ports, ports)
def test_ipip_round_trip(payload: bytes, s: bytes, d: bytes, sp: int, dp: int) -> None:
    inner = bytes(tcp_frame(s, d, sp, dp, payload)[14:])
    outer = codec.ipip_encapsulate(inner, b"\xc0\xa8\xa8\x32", b"\xc0\xa8\xa8\x0a")
    assert codec.ones_sum(outer[:20]) == 0xFFFF
    assert outer[9] == codec.IPPROTO_IPIP
    got = codec.ipip_decapsulate(outer)
    assert not isinstance(got, Drop)
    assert bytes(got) == inner


@given(macs, ips, ips)
def test_arp_request_and_reply(mac: bytes, mine: bytes, target: bytes) -> None:
    req = codec.arp_request(mac, mine, target)
    assert len(req) == 60 and codec.ethertype(req) == codec.ETH_P_ARP
    info = codec.parse_arp(req)
    assert info == (codec.ARP_REQUEST, mac, mine, b"\0" * 6, target)
    assert not isinstance(info, Drop)
    reply = codec.arp_reply_for(info, b"\x02\0\0\0\0\x01")
    assert codec.parse_arp(reply) == (codec.ARP_REPLY, b"\x02\0\0\0\0\x01", target, mac, mine)
    assert reply[:6] == mac


def test_frag_needed_quotes_the_packet_with_valid_checksums() -> None:
    f = tcp_frame(b"\xc0\xa8\xa8\x3c", b"\xc0\xa8\xa8\x64", 40000, 80, b"x" * 100)
    icmp = codec.icmp_frag_needed(f, 14, b"\xc0\xa8\xa8\x32", 1480)
    info = codec.parse_ipv4(icmp, 0)
    assert isinstance(info, tuple)
    assert info[0] == codec.IPPROTO_ICMP and info[2] == b"\xc0\xa8\xa8\x3c"
    assert (info[3], info[4]) == (3, 4)
    assert codec.checksum(icmp[20:]) == 0
    assert struct.unpack_from("!H", icmp, 26)[0] == 1480
    inner = codec.parse_icmp_error(icmp, info[6], info[7])
    assert inner == (6, b"\xc0\xa8\xa8\x3c", b"\xc0\xa8\xa8\x64", 40000, 80, 28)


def test_icmp_error_rewrite_keeps_checksums_valid() -> None:
    client, vip, rip = b"\xc0\xa8\xa8\x3c", b"\xc0\xa8\xa8\x64", b"\x0a\xa8\x00\x0a"
    # the RS answers a NAT-ed UDP packet client->rip:8053 with port unreachable
    quoted = udp_frame(client, rip, 5000, 8053, b"hello")[14:]
    body = bytearray(struct.pack("!BBHI", 3, 3, 0, 0) + bytes(quoted[:28]))
    body[2:4] = codec.checksum(body).to_bytes(2, "big")
    frame = bytearray(codec.ethernet(b"\1" * 6, b"\2" * 6, codec.ETH_P_IP)) + codec.ipv4_header(
        rip, client, 1, len(body)) + body
    info = codec.parse_ipv4(frame)
    assert isinstance(info, tuple)
    codec.nat_rewrite_icmp_error(frame, 14, info[6], info[7], info[6] + 8, vip, 53, False)
    after = codec.parse_ipv4(frame)
    assert isinstance(after, tuple) and after[1] == vip
    assert codec.checksum(frame[info[6]:info[7]]) == 0
    inner = codec.parse_icmp_error(frame, info[6], info[7])
    assert inner == (17, client, vip, 5000, 53, 42)
    assert codec.ones_sum(frame[42:62]) == 0xFFFF


def test_decrement_ttl() -> None:
    f = tcp_frame(b"\1\1\1\1", b"\2\2\2\2", 1, 2, ttl=2)
    assert codec.decrement_ttl(f, 14)
    assert f[22] == 1 and codec.ones_sum(f[14:34]) == 0xFFFF
    assert not codec.decrement_ttl(f, 14)
