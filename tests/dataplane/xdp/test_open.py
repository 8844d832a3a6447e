"""A TCP connection the core schedules gets its flow at the SYN: the forwarder (Python, the
decision) installs the way in as soon as it has forwarded the SYN, the real program (run with
BPF_PROG_TEST_RUN) then forwards the handshake's ACK and what follows, and reports that ACK so
the core's entry leaves SYN_RECV; the counters reach the Director at the next sync. Before,
the ACK went up for a second pass through the core and the flow was installed only then."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pylvs.core.conntrack import TCP_S_ESTABLISHED, TCP_S_SYN_RECV
from pylvs.core.model import ForwardingMethod
from pylvs.dataplane.packet import codec
from pylvs.dataplane.packet.forward import FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN
from pylvs.dataplane.xdp.flows import SplitFlowSink, XdpFlowSink
from pylvs.dataplane.xdp.loader import XDP_PASS, XDP_REDIRECT, XdpProgram
from pylvs.dataplane.xdp.maps import ACTION, FLOW_F_OPENING, KEY, NEW_FLOW, Method, unpack_value
from tests.dataplane.packet import test_forward as v4
from tests.dataplane.packet import test_forward6 as v6

ALL = frozenset({FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN})
PSH = 0x08


@pytest.fixture(autouse=True)
def empty(prog: XdpProgram) -> Iterator[None]:
    yield
    for key in prog.flow_keys(KEY.size):
        prog.flow_delete(key)
    while prog.read_new_flows(NEW_FLOW.size, 1 << 20):
        pass


def forwarder(prog: XdpProgram, fwd: ForwardingMethod, family: int = 4,
              limit: int = 1 << 20) -> tuple[Any, Any, XdpFlowSink]:
    """A forwarder whose flows go to the program, at the SYN, as the xdp plane wires it."""
    if family == 4:
        fw, d = v4.make(fwd, rips=(v4.NAT1,) if fwd == ForwardingMethod.MASQ else (v4.RS1,))
    else:
        fw, d = v6.make(fwd, rips=(v6.NAT1,) if fwd == ForwardingMethod.MASQ else (v6.RS1,))
    sink = XdpFlowSink(prog, limit, d)
    split = SplitFlowSink(sink, None, ALL)
    fw.flows = fw.v6.flows = split
    sink.open_kinds = frozenset({FLOW_DR, FLOW_NAT_DST, FLOW_TUN})  # as the plane's, given all
    fw.opens = fw.v6.opens = sink
    return fw, d, sink


def client4(flags: int, sport: int = 40000, payload: bytes = b"") -> bytearray:
    return v4.from_client(sport, flags, payload)


def client6(flags: int, payload: bytes = b"") -> bytearray:
    return v6.frame6(v6.CLIENT, v6.VIP, codec.IPPROTO_TCP,
                     v6.l4(v6.CLIENT, v6.VIP, codec.IPPROTO_TCP, 40000, 80, payload, flags))


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_the_handshake_ack_and_the_data_stay_in_the_program(prog: XdpProgram,
                                                            family: int) -> None:
    fw, d, sink = forwarder(prog, ForwardingMethod.DROUTE, family)
    client = client4 if family == 4 else client6
    caddr, vaddr = (v4.CLIENT, v4.VIP) if family == 4 else (v6.CLIENT, v6.VIP)
    syn = fw.handle(2, client(codec.TCP_SYN))
    assert syn is not None
    conn = d.lookup(6, caddr, 40000, vaddr, 80)
    assert conn is not None and conn.state == TCP_S_SYN_RECV
    # written in one batch before the drain's frames are sent
    assert prog.flow_keys(KEY.size) == []
    assert sink.flush() == 1 and sink.opened == 1
    (key,) = prog.flow_keys(KEY.size)
    value = prog.flow_get(key, ACTION.size)
    assert value is not None
    action = unpack_value(value)
    assert action.flags == FLOW_F_OPENING
    # the client's ACK and a request: forwarded here, to the server the core chose
    for flags, payload in ((codec.TCP_ACK, b""), (codec.TCP_ACK | PSH, b"GET / HTTP/1.1\r\n\r\n")):
        verdict, out = prog.test_run(bytes(client(flags, payload=payload)))
        assert verdict == XDP_REDIRECT and out[0:12] == bytes(syn[1][0:12])
    # the ACK is reported once: the entry is ESTABLISHED before any sync
    recs = prog.read_new_flows(NEW_FLOW.size, 10)
    assert len(recs) == 1
    sink._enter_records(d, recs)
    assert conn.state == TCP_S_ESTABLISHED
    # the counters: the SYN the core forwarded, then the program's two
    total = d.table.total
    assert total.inpkts == 1
    assert fw.sync_flows() == 2
    assert total.inpkts == 3 and conn.state == TCP_S_ESTABLISHED
    # a FIN goes up; the core takes the flow out
    fin = client(codec.TCP_FIN | codec.TCP_ACK)
    assert prog.test_run(bytes(fin))[0] == XDP_PASS
    assert fw.handle(2, fin) is not None
    assert prog.flow_keys(KEY.size) == [] and sink.count == 0


@pytest.mark.parametrize("family", [4, 6], ids=["v4", "v6"])
def test_a_tunnel_s_handshake_ack_is_encapsulated_by_the_program(prog: XdpProgram,
                                                                 family: int) -> None:
    """TUN: the flow goes in at the SYN too, with the outer header's source and the egress
    MTU the core's tunnel path used; the program encapsulates the ACK (IPIP, or
    IPv6-in-IPv6) exactly as the core encapsulated the SYN, and reports it."""
    fw, d, sink = forwarder(prog, ForwardingMethod.TUNNEL, family)
    client = client4 if family == 4 else client6
    caddr, vaddr = (v4.CLIENT, v4.VIP) if family == 4 else (v6.CLIENT, v6.VIP)
    syn = fw.handle(2, client(codec.TCP_SYN))
    assert syn is not None
    assert sink.flush() == 1 and sink.opened == 1
    (key,) = prog.flow_keys(KEY.size)
    value = prog.flow_get(key, ACTION.size)
    assert value is not None
    action = unpack_value(value)
    assert action.flags == FLOW_F_OPENING and action.method == Method.TUN
    syn_out = bytes(syn[1])
    conn = d.lookup(6, caddr, 40000, vaddr, 80)
    assert conn is not None and conn.state == TCP_S_SYN_RECV
    ack = bytes(client(codec.TCP_ACK))
    verdict, out = prog.test_run(ack)
    assert verdict == XDP_REDIRECT
    if family == 4:
        # the outer header as the core wrote the SYN's (but its IP ID, a counter of each);
        # the inner packet the client's ACK, whole
        assert out[0:14] == syn_out[0:14] and out[23] == codec.IPPROTO_IPIP
        assert out[26:34] == syn_out[26:34] and out[34:] == ack[14:]
        assert not int.from_bytes(out[14:34], "big") % 0xFFFF  # a valid outer checksum
    else:
        assert out[0:14] == syn_out[0:14] and out[20] == 41  # IPv6-in-IPv6
        assert out[22:54] == syn_out[22:54] and out[54:] == ack[14:]
    recs = prog.read_new_flows(NEW_FLOW.size, 10)
    assert len(recs) == 1
    sink._enter_records(d, recs)
    assert conn.state == TCP_S_ESTABLISHED


def test_a_retransmitted_syn_keeps_the_flow(prog: XdpProgram) -> None:
    """The program sends a SYN of a known flow up; the core forwards it again (the entry stays
    SYN_RECV) and the flow stays for the ACK."""
    fw, _d, sink = forwarder(prog, ForwardingMethod.DROUTE)
    assert fw.handle(2, client4(codec.TCP_SYN)) is not None
    sink.flush()
    again = client4(codec.TCP_SYN)
    assert prog.test_run(bytes(again)) == (XDP_PASS, bytes(again))
    assert fw.handle(2, again) is not None
    assert sink.count == 1 and len(prog.flow_keys(KEY.size)) == 1
    assert prog.test_run(bytes(client4(codec.TCP_ACK)))[0] == XDP_REDIRECT


def test_a_nat_connection_s_way_in_survives_the_syn_ack_through_the_core(
        prog: XdpProgram) -> None:
    """NAT: the server's SYN-ACK goes up (no reply flow yet) and through the core, which
    would take an opening connection's flows out; the way in stays, and the ACK is
    rewritten here to the server's address."""
    fw, _d, sink = forwarder(prog, ForwardingMethod.MASQ)
    assert fw.handle(2, client4(codec.TCP_SYN)) is not None
    sink.flush()
    synack = v4.tcp_frame(v4.NAT1, v4.CLIENT, 80, 40000, b"", flags=codec.TCP_SYN | codec.TCP_ACK)
    synack[0:6], synack[6:12] = v4.DIR_MAC1, v4.NAT1_MAC
    assert fw.handle(3, synack) is not None
    verdict, out = prog.test_run(bytes(client4(codec.TCP_ACK)))
    assert verdict == XDP_REDIRECT
    assert out[30:34] == v4.NAT1 and out[0:6] == v4.NAT1_MAC
    assert codec.l4_checksum_ok(bytearray(out), 14, 34, len(out), codec.IPPROTO_TCP)


def test_a_flood_gets_at_most_half_the_flow_table(prog: XdpProgram) -> None:
    fw, d, sink = forwarder(prog, ForwardingMethod.DROUTE, limit=8)
    for port in range(41000, 41010):
        assert fw.handle(2, client4(codec.TCP_SYN, port)) is not None
    sink.flush()
    assert sink.opened == 4 and sink.open_skipped == 6
    assert len(prog.flow_keys(KEY.size)) == 4
    assert d.connection_count == 10  # every SYN was still scheduled and forwarded


def test_a_syn_flood_gets_its_flows_at_the_ack_again(prog: XdpProgram) -> None:
    """Flows opened at SYNs that never see their ACK (a flood) cost the core for nothing: after
    a window where fewer than a quarter did, one SYN in 16 gets a flow, until the sampled ones
    complete their handshakes again."""
    fw, d, sink = forwarder(prog, ForwardingMethod.DROUTE)
    never, now = float("inf"), float("-inf")  # the window's start: it ends when the test says
    sink._win_start = never
    ports = iter(range(20000, 30000))
    for _ in range(300):  # a flood: SYNs only
        assert fw.handle(2, client4(codec.TCP_SYN, next(ports))) is not None
    sink.flush()
    assert sink.opened == 300 and not sink.open_paused
    sink._win_start = now  # the window is over: one strike (its ACKs may be in the next)
    sink.flush()
    assert not sink.open_paused
    for port in range(19000, 19300):  # a second second of the same
        assert fw.handle(2, client4(codec.TCP_SYN, port)) is not None
    sink._win_start = now
    sink.flush()
    assert sink.open_paused
    sink._win_start = never
    sampled = []
    for _ in range(320):
        port = next(ports)
        assert fw.handle(2, client4(codec.TCP_SYN, port)) is not None
        if sink.flush():
            sampled.append(port)
    assert len(sampled) == 20 and sink.open_sampled_out == 300
    assert d.connection_count == 920  # every SYN scheduled and forwarded all the same
    # the flood is over: the sampled connections complete their handshakes
    for port in sampled:
        assert prog.test_run(bytes(client4(codec.TCP_ACK, port)))[0] == XDP_REDIRECT
    sink.import_new()
    sink._win_start = now
    sink.flush()
    assert not sink.open_paused
    assert fw.handle(2, client4(codec.TCP_SYN, next(ports))) is not None
    assert sink.flush() == 1


def test_a_busy_core_is_not_taken_for_a_flood(prog: XdpProgram) -> None:
    """ACKs that reach the core before their flow reached the map (a backlog in the ring)
    complete their handshakes there: those connections count as answered."""
    fw, _d, sink = forwarder(prog, ForwardingMethod.DROUTE)
    sink._win_start = float("inf")
    for port in range(20000, 20300):
        assert fw.handle(2, client4(codec.TCP_SYN, port)) is not None
    for port in range(20000, 20300):  # queued behind the SYNs: up to the core
        assert fw.handle(2, client4(codec.TCP_ACK, port)) is not None
    sink.flush()
    sink._win_start = float("-inf")
    sink.flush()
    assert not sink.open_paused
