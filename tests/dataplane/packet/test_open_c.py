"""The packet plane's C flow table gets a TCP connection's flow at its SYN (``opening``): the
handshake's ACK and what follows are forwarded in C, the ACK is reported (``FlowTable.acked``)
and the entry moves on from SYN_RECV; before, the ACK went up for a second pass through the
Python core, which installed the flow only then."""

from __future__ import annotations

from typing import Any

import pytest

from pylvs.core.conntrack import TCP_S_ESTABLISHED, TCP_S_SYN_RECV
from pylvs.core.model import ForwardingMethod
from pylvs.dataplane.packet import codec
from pylvs.dataplane.packet.opening import CFlowOpener
from tests.dataplane.packet.test_fastpath import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    client_tcp,
    server_tcp,
    with_flows,
)
from tests.dataplane.packet.test_forward import CLIENT, NAT1, NAT1_MAC, RS1, VIP


def opening(fwd: ForwardingMethod, limit: int = 1024) -> tuple[Any, Any, Any, CFlowOpener]:
    fw, d, flows = with_flows(fwd, limit=limit)
    opener = fw.opens = CFlowOpener(flows, d)
    return fw, d, flows, opener


def the_conn(d: Any, sport: int = 40000) -> Any:
    conn = d.lookup(6, CLIENT, sport, VIP, 80)
    assert conn is not None
    return conn


@pytest.mark.parametrize("fwd", [ForwardingMethod.DROUTE, ForwardingMethod.MASQ,
                                 ForwardingMethod.TUNNEL], ids=["dr", "nat", "tun"])
def test_the_handshake_ack_is_forwarded_in_c_and_moves_the_entry_on(
        fwd: ForwardingMethod) -> None:
    fw, d, flows, opener = opening(fwd)
    syn = fw.handle(2, client_tcp(SYN))
    assert syn is not None
    syn_out = bytes(syn[1])
    assert flows.count == 1 and opener.opened == 1
    conn = the_conn(d)
    assert conn.state == TCP_S_SYN_RECV
    if fwd == ForwardingMethod.MASQ:  # the server's SYN-ACK through the core: the flow stays
        assert fw.handle(3, server_tcp(SYN | ACK)) is not None
        assert flows.count == 1
    ack = client_tcp(ACK)
    before = bytes(ack)
    out = flows.forward(ack)
    assert out == syn[0]
    if fwd == ForwardingMethod.DROUTE:
        assert bytes(ack) == syn_out[0:12] + before[12:]
    elif fwd == ForwardingMethod.MASQ:
        assert ack[0:6] == NAT1_MAC and ack[30:34] == NAT1
        assert codec.l4_checksum_ok(ack, 14, 34, len(ack), codec.IPPROTO_TCP)
    else:  # IPIP: the outer header as the core wrote the SYN's (but its IP ID)
        assert ack[0:14] == syn_out[0:14] and ack[23] == codec.IPPROTO_IPIP
        assert ack[26:34] == syn_out[26:34] and bytes(ack[34:]) == before[14:]
    assert flows.acked == [conn]
    opener.take_acked()
    assert conn.state == TCP_S_ESTABLISHED and flows.acked == []
    # the rest of the connection: forwarded, not reported again
    assert flows.forward(client_tcp(ACK | PSH, b"GET / HTTP/1.1\r\n\r\n")) == syn[0]
    assert flows.acked == []
    # the counters reach the Director at the next sync: the SYN (counted by the core), then C's
    total = d.table.total
    assert total.inpkts == 1
    assert fw.sync_flows() == 2
    assert total.inpkts == 3 and conn.state == TCP_S_ESTABLISHED
    # a FIN goes up (C leaves it to the state machine) and takes the flow out
    fin = client_tcp(FIN | ACK)
    assert flows.forward(bytearray(fin)) == -1
    assert fw.handle(2, fin) is not None
    assert flows.count == 0


def test_the_flow_lives_as_long_as_the_opening_entry() -> None:
    """A retransmitted SYN and a client's RST go up to the core; the entry stays in SYN_RECV
    (IPVS's state table), and its flow with it; the flow goes when the entry expires."""
    fw, d, flows, _opener = opening(ForwardingMethod.DROUTE)
    assert fw.handle(2, client_tcp(SYN)) is not None
    assert fw.handle(2, client_tcp(SYN)) is not None  # the same SYN again
    assert fw.handle(2, client_tcp(RST)) is not None
    assert flows.count == 1 and the_conn(d).state == TCP_S_SYN_RECV
    d.clock.t += 600  # past SYN_RECV's timeout
    d.tick()
    assert d.connection_count == 0
    fw.sync_flows()
    assert flows.count == 0
    assert flows.forward(client_tcp(ACK)) == -1


def test_a_flood_gets_at_most_half_the_table_then_a_sample() -> None:
    fw, d, flows, opener = opening(ForwardingMethod.DROUTE, limit=8)
    for port in range(41000, 41010):
        assert fw.handle(2, client_tcp(SYN, sport=port)) is not None
    assert flows.count == 4 and opener.opened == 4 and opener.open_skipped == 6
    assert d.connection_count == 10  # every SYN was still scheduled and forwarded


def test_a_syn_flood_turns_opening_down_and_handshakes_turn_it_up() -> None:
    """Flows opened at SYNs that never see their ACK: after two windows of them, one SYN in
    16 gets a flow, until the sampled ones complete their handshakes (reported by C)."""
    fw, d, flows, opener = opening(ForwardingMethod.DROUTE, limit=1 << 16)
    never, now = float("inf"), float("-inf")  # the window ends when the test says
    ports = iter(range(20000, 30000))
    for window in range(2):
        opener._win_start = never
        for _ in range(300):
            assert fw.handle(2, client_tcp(SYN, sport=next(ports))) is not None
        opener._win_start = now
        opener.tick()
        assert opener.open_paused == (window == 1)
    opener._win_start = never
    sampled = []
    for _ in range(320):
        port = next(ports)
        n = flows.count
        assert fw.handle(2, client_tcp(SYN, sport=port)) is not None
        if flows.count > n:
            sampled.append(port)
    assert len(sampled) == 20 and opener.open_sampled_out == 300
    for port in sampled:  # the flood is over: these complete their handshakes, in C
        assert flows.forward(client_tcp(ACK, sport=port)) == 2
    opener._win_start = now
    opener.tick()
    assert not opener.open_paused
    assert all(the_conn(d, port).state == TCP_S_ESTABLISHED for port in sampled)


def test_an_ipv6_syn_gets_no_c_flow() -> None:
    """The C table is IPv4's: an IPv6 connection's flow is not opened there."""
    fw, _d, flows, opener = opening(ForwardingMethod.DROUTE)
    assert fw.v6.opens is None  # the opener is the IPv4 path's only
    assert opener.open(6, bytes(16), 1, bytes(16), 80, 0, RS1, 80, 2, bytes(12), object(),
                       60) is False
    assert flows.count == 0
