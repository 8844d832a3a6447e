"""The forwarding decision without I/O: frames in, frames out, the director core behind it."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.core.table import IPVSTable
from pylvs.dataplane.packet import codec
from pylvs.dataplane.packet.codec import Drop
from pylvs.dataplane.packet.forward import Forwarder, Interface
from tests.dataplane.packet.test_codec import tcp_frame, udp_frame

VIP = bytes([192, 168, 168, 100])
CLIENT = bytes([192, 168, 168, 60])
RS1, RS2 = bytes([192, 168, 168, 10]), bytes([192, 168, 168, 20])
NAT1 = bytes([10, 168, 0, 10])
DIR_MAC, DIR_MAC1 = b"\x02\0\0\0\0\x50", b"\x02\0\0\0\1\x50"
CLIENT_MAC, RS1_MAC, RS2_MAC, NAT1_MAC = (b"\x02\0\0\0\0\x60", b"\x02\0\0\0\0\x10",
                                          b"\x02\0\0\0\0\x20", b"\x02\0\0\0\1\x10")
LAN = (int.from_bytes(bytes([192, 168, 168, 0]), "big"), 0xFFFFFF00)
BACK = (int.from_bytes(bytes([10, 168, 0, 0]), "big"), 0xFFFFFF00)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(fwd: ForwardingMethod, rips: tuple[bytes, ...] = (RS1, RS2), max_conns: int = 1000,
         sched: str = "rr", proto: Protocol = Protocol.TCP) -> tuple[Forwarder, Director]:
    clock = Clock()
    table = IPVSTable()
    key = ServiceKey.inet(proto, ipaddress.ip_address(VIP), 80)
    table.add_service(ServiceSpec(key, sched))
    for rip in rips:
        table.add_dest(key, DestSpec(ipaddress.ip_address(rip), 80, fwd))
    d = Director(table, clock=clock, max_connections=max_conns)
    eth0 = Interface(2, "eth0", DIR_MAC, bytes([192, 168, 168, 50]), [LAN], 1500,
                     {bytes([192, 168, 168, 50])})
    eth1 = Interface(3, "eth1", DIR_MAC1, bytes([10, 168, 0, 50]), [BACK], 1500,
                     {bytes([10, 168, 0, 50])})
    fw = Forwarder(d, [eth0, eth1])
    fw.neighbours.update({RS1: RS1_MAC, RS2: RS2_MAC, NAT1: NAT1_MAC, CLIENT: CLIENT_MAC})
    fw.set_vips([VIP])
    return fw, d


def from_client(sport: int = 40000, flags: int = codec.TCP_SYN, payload: bytes = b"") -> bytearray:
    f = tcp_frame(CLIENT, VIP, sport, 80, payload, flags=flags)
    f[0:6], f[6:12] = DIR_MAC, CLIENT_MAC
    return f


def test_dr_rewrites_only_the_destination_mac() -> None:
    fw, d = make(ForwardingMethod.DROUTE)
    frame = from_client()
    ip_before = bytes(frame[14:])
    out = fw.handle(2, frame)
    assert out is not None
    idx, f = out
    assert idx == 2 and f[0:6] in (RS1_MAC, RS2_MAC) and f[6:12] == DIR_MAC
    assert bytes(f[14:]) == ip_before
    assert d.connection_count == 1
    # the next segment of that connection goes to the same server
    again = fw.handle(2, from_client(flags=codec.TCP_ACK))
    assert again is not None and again[1][0:6] == f[0:6]


def test_nat_rewrites_both_ways_with_valid_checksums() -> None:
    fw, d = make(ForwardingMethod.MASQ, rips=(NAT1,))
    out = fw.handle(2, from_client(payload=b"GET /"))
    assert out is not None
    idx, f = out
    info = codec.parse_ipv4(f)
    assert isinstance(info, tuple)
    assert idx == 3 and info[2] == NAT1 and f[0:6] == NAT1_MAC and f[6:12] == DIR_MAC1
    assert codec.l4_checksum_ok(f, 14, info[6], info[7], 6)
    reply = tcp_frame(NAT1, CLIENT, 80, 40000, b"hello", flags=codec.TCP_SYN | codec.TCP_ACK)
    reply[0:6], reply[6:12] = DIR_MAC1, NAT1_MAC
    back = fw.handle(3, reply)
    assert back is not None
    idx, f = back
    info = codec.parse_ipv4(f)
    assert isinstance(info, tuple)
    assert idx == 2 and info[1] == VIP and info[3] == 80 and f[0:6] == CLIENT_MAC
    assert codec.l4_checksum_ok(f, 14, info[6], info[7], 6)
    (entry,) = d.connection_entries()
    assert entry.state == "SYN_RECV"
    ack = from_client(flags=codec.TCP_ACK)
    assert fw.handle(2, ack) is not None
    assert d.connection_entries()[0].state == "ESTABLISHED"


def test_tun_encapsulates_to_the_real_server() -> None:
    fw, _ = make(ForwardingMethod.TUNNEL, rips=(RS1,))
    frame = from_client(payload=b"x" * 10)
    inner = bytes(frame[14:])
    out = fw.handle(2, frame)
    assert out is not None
    f = out[1]
    assert f[0:6] == RS1_MAC
    assert f[14 + 9] == codec.IPPROTO_IPIP and bytes(f[30:34]) == RS1
    dec = codec.ipip_decapsulate(bytes(f[14:]))
    assert not isinstance(dec, Drop) and bytes(dec) == inner


def test_tun_too_big_sends_frag_needed_to_the_client() -> None:
    fw, _ = make(ForwardingMethod.TUNNEL, rips=(RS1,))
    frame = from_client(payload=b"x" * 1460)  # 1500-byte IP packet, DF set
    assert fw.handle(2, frame) is None
    assert fw.drops.get("too_big") == 1
    (idx, icmp), = fw.side_frames
    assert idx == 2 and icmp[0:6] == CLIENT_MAC
    assert (icmp[34], icmp[35]) == (3, 4) and struct.unpack_from("!H", icmp, 40)[0] == 1480


def test_only_syn_opens_a_connection() -> None:
    fw, d = make(ForwardingMethod.DROUTE)
    assert fw.handle(2, from_client(flags=codec.TCP_ACK)) is None
    assert fw.drops == {"no_connection": 1} and d.connection_count == 0


def test_sloppy_tcp_forwards_a_mid_flow_segment_and_tracks_it_established() -> None:
    """sloppy_tcp: a flow rehashed here (ACK, no entry) is scheduled and forwarded; a RST of no
    known connection is still not."""
    fw, d = make(ForwardingMethod.DROUTE, sched="mh")
    d.table.set_sysctl({"sloppy_tcp": 1})
    assert fw.handle(2, from_client(sport=40001, flags=codec.TCP_RST)) is None
    out = fw.handle(2, from_client(flags=codec.TCP_ACK, payload=b"more"))
    assert out is not None and out[1][0:6] in (RS1_MAC, RS2_MAC)
    (entry,) = d.connection_entries()
    assert entry.state == "ESTABLISHED" and fw.drops == {"no_connection": 1}


def test_corrupt_syn_creates_no_entry() -> None:
    fw, d = make(ForwardingMethod.DROUTE)
    f = from_client(payload=b"abc")
    f[-1] ^= 0xFF
    assert fw.handle(2, f) is None
    assert fw.drops == {"bad_l4_checksum": 1} and d.connection_count == 0


def test_syn_flood_is_bounded_and_established_connections_carry_on() -> None:
    fw, d = make(ForwardingMethod.DROUTE, max_conns=50)
    assert fw.handle(2, from_client(sport=1000)) is not None
    assert fw.handle(2, from_client(sport=1000, flags=codec.TCP_ACK)) is not None
    for port in range(2000, 2500):
        fw.handle(2, from_client(sport=port))
    assert d.connection_count <= 50
    # each SYN past the limit either took the place of an older half-open entry (the core's
    # flood defence) or was refused and counted as table_full
    assert fw.drops.get("table_full", 0) + d.defense.evicted_entries >= 450
    assert fw.handle(2, from_client(sport=1000, flags=codec.TCP_ACK | codec.TCP_PSH, payload=b"more")) is not None


def test_icmp_error_about_a_connection_goes_to_its_real_server() -> None:
    fw, _ = make(ForwardingMethod.DROUTE)
    out = fw.handle(2, from_client(sport=41000))
    assert out is not None
    rs_mac = bytes(out[1][0:6])
    # the client says our reply (VIP:80 -> client:41000) was too big
    quoted = tcp_frame(VIP, CLIENT, 80, 41000, b"")[14:]
    body = bytearray(struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + bytes(quoted[:28]))
    body[2:4] = codec.checksum(body).to_bytes(2, "big")
    icmp = bytearray(codec.ethernet(DIR_MAC, CLIENT_MAC, codec.ETH_P_IP)) + codec.ipv4_header(
        CLIENT, VIP, 1, len(body)) + body
    res = fw.handle(2, icmp)
    assert res is not None and res[1][0:6] == rs_mac
    assert fw.icmp_forwarded == 1


def test_director_answers_arp_for_the_vip_only() -> None:
    fw, _ = make(ForwardingMethod.MASQ, rips=(NAT1,))
    fw.handle(2, bytearray(codec.arp_request(CLIENT_MAC, CLIENT, VIP)))
    fw.handle(2, bytearray(codec.arp_request(CLIENT_MAC, CLIENT, RS1)))
    assert len(fw.side_frames) == 1
    idx, reply = fw.side_frames[0]
    assert idx == 2
    assert codec.parse_arp(reply) == (codec.ARP_REPLY, DIR_MAC, VIP, CLIENT_MAC, CLIENT)


def test_missing_neighbour_is_asked_for_once() -> None:
    fw, _ = make(ForwardingMethod.DROUTE)
    fw.neighbours.clear()
    assert fw.handle(2, from_client(sport=1)) is None
    assert fw.handle(2, from_client(sport=1, flags=codec.TCP_ACK)) is None
    asks = [f for _, f in fw.side_frames if codec.ethertype(f) == codec.ETH_P_ARP]
    assert len(asks) == 1 and fw.drops["no_neighbour"] == 2
    arp = codec.parse_arp(asks[0])
    assert not isinstance(arp, Drop) and arp[4] in (RS1, RS2)
    # the answer teaches the cache; the retransmission goes through
    fw.handle(2, bytearray(codec.arp_packet(codec.ARP_REPLY, RS1_MAC, RS1, DIR_MAC, arp[2], DIR_MAC)))
    fw.handle(2, bytearray(codec.arp_packet(codec.ARP_REPLY, RS2_MAC, RS2, DIR_MAC, arp[2], DIR_MAC)))
    assert fw.handle(2, from_client(sport=1, flags=codec.TCP_ACK)) is not None


def test_udp_is_forwarded() -> None:
    fw, d = make(ForwardingMethod.MASQ, rips=(NAT1,), proto=Protocol.UDP)
    f = udp_frame(CLIENT, VIP, 5353, 80, b"query")
    out = fw.handle(2, f)
    assert out is not None and out[0] == 3
    assert d.connection_count == 1


@settings(max_examples=400)
@given(st.binary(max_size=200), st.sampled_from(list(ForwardingMethod)[:4]))
def test_any_frame_is_handled_without_raising(data: bytes, fwd: ForwardingMethod) -> None:
    fw, _ = make(fwd)
    fw.handle(2, bytearray(data))
    fw.handle(2, memoryview(bytearray(data)))  # as the ring hands frames out
    # and with a valid Ethernet/IPv4 prefix so the deeper parsers get exercised
    frame = from_client()
    cut = bytearray(frame[:14]) + bytearray(data)
    fw.handle(2, cut)
    arp = bytearray(codec.ethernet(DIR_MAC, CLIENT_MAC, codec.ETH_P_ARP)) + bytearray(data)
    fw.handle(2, arp)
    assert all(isinstance(v, int) for v in fw.drops.values())


def test_ring_views_are_rewritten_in_place() -> None:
    fw, _ = make(ForwardingMethod.MASQ, rips=(NAT1,))
    ring = bytearray(100) + from_client(payload=b"abc")
    view = memoryview(ring)[100:]
    out = fw.handle(2, view)
    assert out is not None and out[1] is view
    info = codec.parse_ipv4(ring, 114)
    assert isinstance(info, tuple) and info[2] == NAT1


def test_tcp_header_cut_short_is_dropped_not_raised() -> None:
    """A 42-byte frame whose valid IP header says TCP with only 8 bytes of it: the TCP header
    fields past the frame's end must not be read."""
    fw, d = make(ForwardingMethod.DROUTE)
    ip = codec.ipv4_header(CLIENT, VIP, codec.IPPROTO_TCP, 8)
    for tail in (b"", b"\0" * 5):  # cut at the packet's end, or Ethernet padding after it
        frame = bytearray(codec.ethernet(DIR_MAC, CLIENT_MAC, codec.ETH_P_IP) + ip
                          + b"\x9c\x40\x00\x50\0\0\0\1" + tail)
        assert fw.handle(2, frame) is None
        assert fw.handle(2, memoryview(frame)) is None
    assert fw.drops == {"truncated_l4": 4} and d.connection_count == 0
