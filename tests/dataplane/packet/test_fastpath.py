"""The C hot path's flow table against the Python Forwarder: the same frames must come out byte
for byte the same, everything it must not touch goes to Python unchanged, the Director gets the
counters at its tick, and no frame (random, truncated, mutated) makes it crash."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.director import DIR_INPUT, DIR_OUTPUT, Director
from pylvs.core.model import ForwardingMethod, Protocol
from pylvs.dataplane.packet import codec
from pylvs.dataplane.packet.forward import Forwarder
from pylvs.dataplane.packet.ring import fastpath_wanted
from tests.dataplane.packet.test_codec import tcp_frame, udp_frame
from tests.dataplane.packet.test_forward import (
    CLIENT,
    CLIENT_MAC,
    DIR_MAC,
    DIR_MAC1,
    NAT1,
    NAT1_MAC,
    RS1,
    RS1_MAC,
    VIP,
    make,
)

_fastpath = pytest.importorskip("pylvs.dataplane.packet._fastpath",
                                reason="the C hot path is not built (no compiler at install)")

ACK, PSH, SYN, FIN, RST = codec.TCP_ACK, 0x08, codec.TCP_SYN, codec.TCP_FIN, codec.TCP_RST


def client_tcp(flags: int, payload: bytes = b"", sport: int = 40000) -> bytearray:
    f = tcp_frame(CLIENT, VIP, sport, 80, payload, flags=flags)
    f[0:6], f[6:12] = DIR_MAC, CLIENT_MAC
    return f


def server_tcp(flags: int, payload: bytes = b"", sport: int = 40000) -> bytearray:
    f = tcp_frame(NAT1, CLIENT, 80, sport, payload, flags=flags)
    f[0:6], f[6:12] = DIR_MAC1, NAT1_MAC
    return f


def client_udp(payload: bytes = b"q", with_csum: bool = True) -> bytearray:
    f = udp_frame(CLIENT, VIP, 40000, 80, payload, with_csum)
    f[0:6], f[6:12] = DIR_MAC, CLIENT_MAC
    return f


def server_udp(payload: bytes = b"a", with_csum: bool = True) -> bytearray:
    f = udp_frame(NAT1, CLIENT, 80, 40000, payload, with_csum)
    f[0:6], f[6:12] = DIR_MAC1, NAT1_MAC
    return f


def with_flows(fwd: ForwardingMethod, proto: Protocol = Protocol.TCP,
               limit: int = 1024) -> tuple[Forwarder, Director, _fastpath.FlowTable]:
    fw, d = make(fwd, rips=(NAT1,) if fwd == ForwardingMethod.MASQ else (RS1,), proto=proto)
    flows = _fastpath.FlowTable(limit)
    flows.attach(2)
    flows.attach(3)
    fw.flows = flows
    return fw, d, flows


def established(fwd: ForwardingMethod) -> tuple[Forwarder, Director, _fastpath.FlowTable]:
    """A TCP connection through the Python path up to ESTABLISHED (NAT: both directions)."""
    fw, d, flows = with_flows(fwd)
    assert fw.handle(2, client_tcp(SYN)) is not None
    if fwd == ForwardingMethod.MASQ:
        assert fw.handle(3, server_tcp(SYN | ACK)) is not None
    assert fw.handle(2, client_tcp(ACK)) is not None
    assert d.connection_entries()[0].state == "ESTABLISHED"
    if fwd == ForwardingMethod.MASQ:  # the reply direction is installed by a reply
        assert fw.handle(3, server_tcp(ACK, b"hello")) is not None
    return fw, d, flows


def python_result(fw: Forwarder, ifindex: int, frame: bytearray) -> tuple[int, bytes] | None:
    """What the Python path makes of ``frame`` (flows detached: it must not install), called
    after the C path saw the same frame: a TUN header gets the IP ID C gave it."""
    flows, fw.flows = fw.flows, None
    assert flows is not None
    fw._ident = (flows.ident - 1) & 0xFFFF
    try:
        out = fw.handle(ifindex, frame)
    finally:
        fw.flows = flows
    return None if out is None else (out[0], bytes(out[1]))


def c_result(flows: _fastpath.FlowTable, frame: bytearray) -> tuple[int, bytes] | None:
    out = flows.forward(frame)
    return None if out < 0 else (out, bytes(frame))


@pytest.mark.parametrize("fwd", [ForwardingMethod.DROUTE, ForwardingMethod.MASQ])
@pytest.mark.parametrize("flags", [ACK, ACK | PSH, ACK | 0x20, ACK | 0x40 | 0x80])
def test_c_forwards_established_tcp_exactly_as_python(fwd: ForwardingMethod, flags: int) -> None:
    fw, d, flows = established(fwd)
    assert flows.count == (2 if fwd == ForwardingMethod.MASQ else 1)
    for payload in (b"", b"GET / HTTP/1.0\r\n\r\n", b"x" * 1400):
        frame = client_tcp(flags, payload)
        assert c_result(flows, bytearray(frame)) == python_result(fw, 2, bytearray(frame))
        if fwd == ForwardingMethod.MASQ:
            reply = server_tcp(flags, payload)
            got = c_result(flows, bytearray(reply))
            assert got is not None and got == python_result(fw, 3, bytearray(reply))
            info = codec.parse_ipv4(got[1])
            assert isinstance(info, tuple) and info[1] == VIP
            assert codec.l4_checksum_ok(got[1], 14, info[6], info[7], 6)
    assert d.connection_entries()[0].state == "ESTABLISHED"  # none of these moves it


@pytest.mark.parametrize("fwd", [ForwardingMethod.DROUTE, ForwardingMethod.MASQ])
@pytest.mark.parametrize("with_csum", [True, False])
def test_c_forwards_udp_exactly_as_python(fwd: ForwardingMethod, with_csum: bool) -> None:
    fw, _d, flows = with_flows(fwd, Protocol.UDP)
    assert fw.handle(2, client_udp()) is not None
    if fwd == ForwardingMethod.MASQ:
        assert fw.handle(3, server_udp()) is not None
    assert flows.count == (2 if fwd == ForwardingMethod.MASQ else 1)
    for payload in (b"", b"\0\0", b"\xff\xff" * 30, b"abc"):
        frame = client_udp(payload, with_csum)
        assert c_result(flows, bytearray(frame)) == python_result(fw, 2, bytearray(frame))
        if fwd == ForwardingMethod.MASQ:
            reply = server_udp(payload, with_csum)
            got = c_result(flows, bytearray(reply))
            assert got is not None and got == python_result(fw, 3, bytearray(reply))
            if not with_csum:
                assert got[1][40:42] == b"\0\0"  # UDP without a checksum stays without


@pytest.mark.parametrize("proto", [Protocol.TCP, Protocol.UDP])
def test_c_tunnels_exactly_as_python(proto: Protocol) -> None:
    fw, _d, flows = with_flows(ForwardingMethod.TUNNEL, proto)
    first = client_tcp(SYN) if proto == Protocol.TCP else client_udp()
    assert fw.handle(2, first) is not None
    if proto == Protocol.TCP:
        assert fw.handle(2, client_tcp(ACK)) is not None
    assert flows.count == 1
    for payload in (b"", b"GET / HTTP/1.0\r\n\r\n", b"x" * 1400):
        frame = client_tcp(ACK | PSH, payload) if proto == Protocol.TCP else client_udp(payload)
        frame += b"\0" * 6  # Ethernet padding stays out of the tunnel
        got = c_result(flows, bytearray(frame))
        assert got is not None and got == python_result(fw, 2, bytearray(frame))
        assert got[0] == 2 and got[1][0:6] == RS1_MAC and got[1][23] == codec.IPPROTO_IPIP
        inner = codec.ipip_decapsulate(got[1][14:])
        assert not isinstance(inner, codec.Drop) and bytes(inner) == bytes(frame[14:-6])
    # too big once encapsulated (1500-byte inner packet): Python answers "fragmentation needed"
    big = client_tcp(ACK, b"x" * 1460) if proto == Protocol.TCP else client_udp(b"x" * 1472)
    before = bytes(big)
    assert flows.forward(big) == -1 and bytes(big) == before


def test_state_changing_and_odd_frames_go_to_python_untouched() -> None:
    _fw, _d, flows = established(ForwardingMethod.MASQ)
    # PSH alone, no flag at all: the kernel's state machine closes the entry on those
    odd = [client_tcp(SYN), client_tcp(FIN | ACK), client_tcp(RST), client_tcp(SYN | ACK),
           client_tcp(PSH), client_tcp(0), client_tcp(RST | ACK)]
    frag = client_tcp(ACK, b"abc")
    struct.pack_into("!H", frag, 20, 0x2000)  # more fragments
    bad_sum = client_tcp(ACK, b"abc")
    bad_sum[24] ^= 0x01
    options = bytearray(client_tcp(ACK))
    options[14] = 0x46  # IHL 6: options
    short = client_tcp(ACK)[:50]
    long_ip = client_tcp(ACK)
    struct.pack_into("!H", long_ip, 16, 200)  # total length beyond the frame
    other = udp_frame(CLIENT, VIP, 40001, 80, b"x")
    other[0:6] = DIR_MAC
    icmp = bytearray(client_tcp(ACK))
    icmp[23] = 1
    # IP says TCP with 8 bytes of it: the header fields beyond must not be read
    cut_tcp = bytearray(client_tcp(ACK)[:42])
    cut_tcp[14:34] = codec.ipv4_header(CLIENT, VIP, codec.IPPROTO_TCP, 8)
    for frame in [*odd, frag, bad_sum, options, short, long_ip, other, icmp, cut_tcp,
                  bytearray(b"\0" * 60)]:
        before = bytes(frame)
        assert flows.forward(frame) == -1
        assert bytes(frame) == before
    assert flows.forwarded == 0


def test_leaving_established_takes_the_flows_out_and_counts_what_they_did() -> None:
    fw, d, flows = established(ForwardingMethod.MASQ)
    dest = next(iter(d.table.services())).destinations[0]
    assert flows.count == 2
    inp, outp = dest.stats.inpkts, dest.stats.outpkts
    for _ in range(4):
        assert flows.forward(client_tcp(ACK, b"abc")) == 3
        assert flows.forward(server_tcp(ACK, b"abc")) == 2
    assert fw.handle(2, client_tcp(FIN | ACK)) is not None  # Python: the state machine
    assert d.connection_entries()[0].state == "CLOSE_WAIT"
    assert flows.count == 0
    assert flows.forward(client_tcp(ACK)) == -1
    # no tick yet: the flows' packets were counted when they went, plus the FIN
    assert (dest.stats.inpkts, dest.stats.outpkts) == (inp + 5, outp + 4)


def test_a_table_change_counts_what_the_flows_did() -> None:
    fw, d, flows = established(ForwardingMethod.DROUTE)
    dest = next(iter(d.table.services())).destinations[0]
    inp = dest.stats.inpkts
    for _ in range(3):
        assert flows.forward(client_tcp(ACK)) == 2
    fw.clear_flows()
    assert flows.count == 0 and dest.stats.inpkts == inp + 3
    fw.clear_flows()
    assert dest.stats.inpkts == inp + 3


def test_neighbour_change_clears_the_flows() -> None:
    fw, _d, flows = established(ForwardingMethod.DROUTE)
    assert flows.count == 1
    fw.learn({RS1: b"\x02\0\0\0\0\x99"})
    assert flows.count == 0
    out = fw.handle(2, client_tcp(ACK))  # the next packet reinstalls with the new MAC
    assert out is not None and out[1][0:6] == b"\x02\0\0\0\0\x99" and flows.count == 1
    frame = client_tcp(ACK)
    assert flows.forward(frame) == 2 and frame[0:6] == b"\x02\0\0\0\0\x99"


@pytest.mark.parametrize("fwd", [ForwardingMethod.DROUTE, ForwardingMethod.MASQ],
                         ids=["dr", "nat"])
def test_a_new_neighbour_leaves_the_flows_and_a_moved_one_clears_them(
        fwd: ForwardingMethod) -> None:
    """A neighbour we did not know (a new on-link client's SYN, its ARP, the kernel's table)
    cannot be behind any flow: the flows stay. A known one whose MAC changed is."""
    fw, d, flows = established(fwd)
    installed = flows.count
    assert installed >= 1
    other = bytes([192, 168, 168, 61])  # on the client's LAN, never seen before
    syn = tcp_frame(other, VIP, 41000, 80, b"", flags=SYN)
    syn[0:6], syn[6:12] = DIR_MAC, b"\x02\0\0\0\0\x61"
    assert fw.handle(2, syn) is not None
    assert fw.neighbours[other] == b"\x02\0\0\0\0\x61"
    fw.learn({bytes([192, 168, 168, 62]): b"\x02\0\0\0\0\x62"})
    assert flows.count == installed
    frame = client_tcp(ACK)
    assert flows.forward(frame) >= 0  # still forwarded in C
    # the same client from another MAC: it moved, so whatever went through it goes
    moved = tcp_frame(other, VIP, 41001, 80, b"", flags=SYN)
    moved[0:6], moved[6:12] = DIR_MAC, b"\x02\0\0\0\0\x63"
    assert fw.handle(2, moved) is not None
    assert flows.count == 0 and fw.neighbours[other] == b"\x02\0\0\0\0\x63"
    assert d.connection_count == 3


def test_many_next_hops_bound_the_cache_not_the_flows() -> None:
    """NAT replies fill the next-hop cache with one entry per client; its bound empties the
    cache only (until 2026-12-08 it took every flow with it)."""
    fw, _d, flows = established(ForwardingMethod.DROUTE)
    fw._l2.pop(RS1)
    for i in range(65537):
        fw._l2[i.to_bytes(4, "big")] = (2, bytes(12))
    syn = tcp_frame(CLIENT, VIP, 42000, 80, b"", flags=SYN)
    syn[0:6], syn[6:12] = DIR_MAC, CLIENT_MAC
    assert fw.handle(2, syn) is not None  # RS1's next hop made again, past the bound
    assert list(fw._l2) == [RS1] and flows.count == 1


def test_sync_hands_counters_to_the_director_and_keeps_the_entry_alive() -> None:
    fw, d, flows = established(ForwardingMethod.MASQ)
    d.before_tick.append(fw.sync_flows)
    dest = next(iter(d.table.services())).destinations[0]
    inp, outp = dest.stats.inpkts, dest.stats.outpkts
    for _ in range(5):
        assert flows.forward(client_tcp(ACK, b"abcd")) == 3
    for _ in range(3):
        assert flows.forward(server_tcp(ACK, b"xy")) == 2
    clock = d.clock
    clock.t += 800  # type: ignore[attr-defined]
    d.tick()
    assert dest.stats.inpkts == inp + 5 and dest.stats.outpkts == outp + 3
    assert dest.stats.inbytes >= 5 * 44
    (entry,) = d.connection_entries()
    assert entry.state == "ESTABLISHED" and entry.expires == pytest.approx(900)
    d.tick()  # nothing new: nothing counted twice
    assert dest.stats.inpkts == inp + 5


def test_an_expired_connection_loses_its_flows() -> None:
    fw, d, flows = established(ForwardingMethod.DROUTE)
    d.before_tick.append(fw.sync_flows)
    d.clock.t += 901  # type: ignore[attr-defined]
    d.tick()
    assert d.connection_count == 0
    d.tick()  # the flow of the gone entry is dropped at the next sync
    assert flows.count == 0
    assert flows.forward(client_tcp(ACK)) == -1


def test_flow_table_has_a_hard_limit() -> None:
    fw, d, flows = with_flows(ForwardingMethod.DROUTE, Protocol.UDP, limit=3)
    for port in range(40000, 40010):
        f = udp_frame(CLIENT, VIP, port, 80, b"x")
        f[0:6], f[6:12] = DIR_MAC, CLIENT_MAC
        assert fw.handle(2, f) is not None
    assert d.connection_count == 10
    assert flows.count == 3 and flows.refused_full == 7


def test_removal_keeps_colliding_flows_reachable() -> None:
    # many flows in a small table: deletions shift entries, all others stay findable
    _fw, _d, flows = with_flows(ForwardingMethod.DROUTE, Protocol.UDP, limit=64)
    conn = object()
    for port in range(64):
        assert flows.install(17, CLIENT, port, VIP, 80, 0, b"", 0, 2, RS1 * 3, conn, DIR_INPUT)
    for port in range(0, 64, 3):
        assert flows.remove(17, CLIENT, port, VIP, 80)
    for port in range(64):
        f = udp_frame(CLIENT, VIP, port, 80, b"x")
        assert (flows.forward(f) == 2) == (port % 3 != 0), port
    with pytest.raises(ValueError):
        flows.install(17, b"\0", 1, VIP, 80, 0, b"", 0, 2, RS1 * 3, conn, DIR_INPUT)
    with pytest.raises(ValueError):
        flows.install(17, CLIENT, 70000, VIP, 80, 0, b"", 0, 2, RS1 * 3, conn, DIR_INPUT)
    assert not flows.install(17, CLIENT, 1, VIP, 80, 0, b"", 0, 99, RS1 * 3, conn, DIR_OUTPUT)


def test_environment_and_option_turn_the_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from pylvs.dataplane.packet.dataplane import PacketDataPlane

    monkeypatch.setenv("PYLVS_PACKET_FASTPATH", "0")
    assert not fastpath_wanted(None) and not fastpath_wanted(True)
    assert not PacketDataPlane(Director()).fastpath
    monkeypatch.setenv("PYLVS_PACKET_FASTPATH", "1")
    assert fastpath_wanted(None) and not fastpath_wanted(False)
    assert PacketDataPlane(Director()).fastpath
    assert not PacketDataPlane(Director(), fastpath=False).fastpath


_FWD = st.sampled_from([ForwardingMethod.DROUTE, ForwardingMethod.MASQ, ForwardingMethod.TUNNEL])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1600), _FWD)
def test_random_frames_never_crash_the_c_path(data: bytes, fwd: ForwardingMethod) -> None:
    _fw, _d, flows = established(fwd)
    for frame in (bytearray(data), bytearray(client_tcp(ACK)[:34]) + bytearray(data),
                  client_tcp(ACK, data)[:len(data)]):
        before = bytes(frame)
        out = flows.forward(frame)
        assert out in (-1, 2, 3)
        if out == -1:
            assert bytes(frame) == before


@settings(max_examples=300, deadline=None)
@given(_FWD, st.booleans(), st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)),
                                     max_size=4), st.integers(0, 80), st.binary(max_size=40))
def test_mutated_frames_match_python_whenever_c_takes_them(
        fwd: ForwardingMethod, reply: bool, edits: list[tuple[int, int]], cut: int,
        payload: bytes) -> None:
    fw, _d, flows = established(fwd)
    if reply and fwd == ForwardingMethod.MASQ:
        frame, ifindex = server_tcp(ACK, payload), 3
    else:
        frame, ifindex = client_tcp(ACK, payload), 2
    for pos, value in edits:
        if pos < len(frame):
            frame[pos] = value
    if cut:
        frame = frame[:max(0, len(frame) - cut)]
    c = c_result(flows, bytearray(frame))
    if c is not None:  # whatever C forwards, Python forwards the same way
        assert python_result(fw, ifindex, bytearray(frame)) == c

