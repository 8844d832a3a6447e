"""IPv4 fragments follow their first fragment's connection; overlapping and never-completing
datagrams are dropped and counted per reason, in bounded memory."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.model import ForwardingMethod, Protocol
from pylvs.dataplane.packet import codec
from tests.dataplane.packet.test_codec import udp_frame
from tests.dataplane.packet.test_forward import CLIENT, CLIENT_MAC, DIR_MAC, NAT1, VIP, make

RS = (bytes([192, 168, 168, 10]), bytes([192, 168, 168, 20]))


def fragments(sport: int, size: int = 3000, ident: int = 77, mtu: int = 1500) -> list[bytearray]:
    """A UDP datagram from the client to VIP:80 in fragments, as the client's kernel cuts it."""
    whole = udp_frame(CLIENT, VIP, sport, 80, bytes(i & 0xFF for i in range(size)))
    ip = bytearray(whole[14:])
    struct.pack_into("!HH", ip, 4, ident, 0)  # IP ID, DF clear
    ip[10:12] = b"\0\0"
    ip[10:12] = codec.checksum(ip[:20]).to_bytes(2, "big")
    eth = codec.ethernet(DIR_MAC, CLIENT_MAC, codec.ETH_P_IP)
    return [bytearray(eth + p) for p in codec.ipv4_fragment(bytes(ip), mtu)]


def reassemble(frames: list[bytes | bytearray]) -> bytes:
    parts = sorted((((struct.unpack_from("!H", f, 20)[0] & 0x1FFF) * 8), bytes(f[34:])) for f in frames)
    return b"".join(p for _o, p in parts)


def test_fragments_follow_the_first_to_one_real_server_with_nat_checksums() -> None:
    fw, d = make(ForwardingMethod.MASQ, rips=(NAT1,), proto=Protocol.UDP)
    frags = fragments(5000)
    assert len(frags) == 3
    outs = [fw.handle(2, f) for f in frags]
    assert all(o is not None for o in outs)
    sent = [bytes(o[1]) for o in outs if o is not None]
    assert {s[30:34] for s in sent} == {NAT1}
    for s in sent:
        assert codec.ones_sum(s[14:34]) == 0xFFFF
    payload = reassemble(sent)
    # the reassembled datagram's UDP checksum is right over the new addresses
    assert codec.l4_checksum(CLIENT, NAT1, 17, payload) == 0
    assert fw.frags.counters["frag_forwarded"] == 3
    assert fw.frags.counters["frag_datagrams"] == 1 and not fw.frags.datagrams
    assert d.connection_count == 1


def test_fragments_before_the_first_are_held_then_sent_the_same_way() -> None:
    fw, _d = make(ForwardingMethod.DROUTE, proto=Protocol.UDP)
    frags = fragments(5001)
    assert fw.handle(2, frags[2]) is None and fw.handle(2, frags[1]) is None
    out = fw.handle(2, frags[0])
    assert out is not None
    assert len(fw.side_frames) == 2
    assert {bytes(o[1][0:6]) for o in [out, *fw.side_frames]} == {bytes(out[1][0:6])}
    assert fw.frags.held == 0 and fw.frags.counters["frag_datagrams"] == 1


def test_overlapping_fragments_drop_the_datagram_and_are_counted() -> None:
    fw, _d = make(ForwardingMethod.DROUTE, proto=Protocol.UDP)
    frags = fragments(5002)
    assert fw.handle(2, frags[0]) is not None
    bad = bytearray(frags[1])
    struct.pack_into("!H", bad, 20, 0x2000 | 10)  # offset 80: inside the first fragment
    bad[24:26] = b"\0\0"
    bad[24:26] = codec.checksum(bad[14:34]).to_bytes(2, "big")
    assert fw.handle(2, bad) is None
    assert fw.frags.counters["frag_overlap"] == 1
    assert fw.handle(2, frags[2]) is None  # the datagram is gone: the rest is held, not sent


def test_never_completing_datagrams_expire_and_memory_stays_bounded() -> None:
    fw, _d = make(ForwardingMethod.DROUTE, proto=Protocol.UDP)
    for i in range(200):  # only later fragments: each held until its first fragment comes
        assert fw.handle(2, fragments(6000 + i, ident=i)[1]) is None
    assert fw.frags.held <= fw.frags.max_held
    assert fw.frags.counters["frag_held_full"] == 200 - fw.frags.max_held
    fw.clock.t += 10  # type: ignore[attr-defined]
    fw.handle(2, fragments(7000, ident=999)[1])
    assert fw.frags.counters["frag_incomplete"] >= fw.frags.max_held
    assert len(fw.frags.datagrams) == 1


def test_tun_fragments_the_outer_packet_when_df_is_clear() -> None:
    fw, _d = make(ForwardingMethod.TUNNEL, proto=Protocol.UDP)
    first = fragments(5003)[0]  # 1500 bytes: 1520 once encapsulated
    out = fw.handle(2, first)
    assert out is not None and len(fw.side_frames) == 1
    pieces = [bytes(out[1]), bytes(fw.side_frames[0][1])]
    assert all(len(p) - 14 <= 1500 and codec.ones_sum(p[14:34]) == 0xFFFF for p in pieces)
    assert reassemble(pieces) == bytes(first[14:])  # the whole inner fragment, IP header first


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 0x3FFF), st.binary(max_size=64)),
                max_size=12))
def test_random_fragment_headers_never_raise(items: list[tuple[int, int, bytes]]) -> None:
    fw, _d = make(ForwardingMethod.MASQ, rips=(NAT1,), proto=Protocol.UDP)
    for ident, fragword, tail in items:
        f = fragments(5004, size=100, ident=ident)[0]
        struct.pack_into("!H", f, 20, fragword)
        f[24:26] = b"\0\0"
        f[24:26] = codec.checksum(f[14:34]).to_bytes(2, "big")
        f += tail
        struct.pack_into("!H", f, 16, len(f) - 14)
        f[24:26] = b"\0\0"
        f[24:26] = codec.checksum(f[14:34]).to_bytes(2, "big")
        fw.handle(2, f)
    assert fw.frags.held <= fw.frags.max_held
