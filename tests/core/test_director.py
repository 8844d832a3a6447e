"""The Director's contract with data planes: service lookup, scheduling, both lookups, counters,
the proxy events and the listing."""

from __future__ import annotations

from pylvs.core.director import (
    DIR_INPUT,
    DIR_OUTPUT,
    TCP_ACK,
    TCP_SYN,
    Director,
)
from pylvs.core.model import ForwardingMethod, Protocol
from pylvs.core.table import IPVSTable

from .test_director_support import add_dest, add_service, ip, make_director

C = ip("10.0.0.2")
VIP = ip("10.0.0.100")


def test_schedule_binds_to_a_real_server_and_lookup_finds_it() -> None:
    d, _ = make_director()
    key = add_service(d)
    rs1 = add_dest(d, key, "192.168.168.11")
    rs2 = add_dest(d, key, "192.168.168.12")
    a = d.schedule(6, C, 40000, VIP, 80)
    b = d.schedule(6, C, 40001, VIP, 80)
    assert a is not None and b is not None
    assert {a.dest, b.dest} == {rs1, rs2}
    assert a.daddr == a.dest.addr_packed and a.dport == 80
    assert (a.protocol, a.caddr, a.cport, a.vaddr, a.vport) == (6, C, 40000, VIP, 80)
    assert d.lookup(6, C, 40000, VIP, 80) is a
    assert d.lookup(6, C, 40001, VIP, 80) is b
    assert d.lookup(6, C, 40002, VIP, 80) is None
    assert d.lookup(17, C, 40000, VIP, 80) is None
    assert d.lookup_reply(6, a.daddr, 80, C, 40000) is a
    assert d.lookup_reply(6, b.daddr, 80, C, 40000) is None


def test_schedule_without_service_or_server_returns_none() -> None:
    d, _ = make_director()
    assert d.schedule(6, C, 1234, VIP, 80) is None
    add_service(d)
    assert d.schedule(6, C, 1234, VIP, 80) is None
    assert d.schedule(6, C, 1234, VIP, 81) is None


def test_new_connection_counts_conns_and_is_active_through_the_handshake() -> None:
    d, _ = make_director()
    key = add_service(d)
    rs = add_dest(d, key, "192.168.168.11")
    conn = d.schedule(6, C, 40000, VIP, 80)
    assert conn is not None
    assert conn.state_name == "SYN_RECV"
    assert (rs.activeconns, rs.inactconns) == (1, 0)
    svc = d.table.lookup(key)
    assert svc is not None
    assert rs.stats.conns == svc.stats.conns == d.table.total.conns == 1
    d.tcp_packet(conn, DIR_OUTPUT, TCP_SYN | TCP_ACK)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state_name == "ESTABLISHED"
    assert (rs.activeconns, rs.inactconns) == (1, 0)


def test_proxy_events_walk_established_half_closed_time_wait() -> None:
    d, clock = make_director()
    key = add_service(d)
    rs = add_dest(d, key, "192.168.168.11")
    conn = d.schedule(6, C, 40000, VIP, 80)
    assert conn is not None
    d.proxy_established(conn)
    assert conn.state_name == "ESTABLISHED" and rs.activeconns == 1
    d.proxy_half_closed(conn, by_client=True)
    assert conn.state_name == "CLOSE_WAIT" and (rs.activeconns, rs.inactconns) == (0, 1)
    d.proxy_closed(conn)
    assert conn.state_name == "TIME_WAIT"
    rows = d.connection_entries()
    assert [r.state for r in rows] == ["TIME_WAIT"]
    assert rows[0].expires == 120
    clock.advance(121)
    d.tick()
    assert d.connection_entries() == []
    assert (rs.activeconns, rs.inactconns) == (0, 0)
    # Events on an expired entry change nothing.
    d.proxy_closed(conn)
    d.proxy_established(conn)
    assert (rs.activeconns, rs.inactconns) == (0, 0)


def test_account_adds_to_dest_service_and_total_by_direction() -> None:
    d, _ = make_director()
    key = add_service(d)
    rs = add_dest(d, key, "192.168.168.11")
    conn = d.schedule(6, C, 40000, VIP, 80)
    assert conn is not None
    d.account(conn, DIR_INPUT, 2, 120)
    d.account(conn, DIR_OUTPUT, 1, 60)
    svc = d.table.lookup(key)
    assert svc is not None
    for s in (rs.stats, svc.stats, d.table.total):
        assert (s.inpkts, s.inbytes, s.outpkts, s.outbytes) == (2, 120, 1, 60)


def test_director_lists_connections_through_its_table() -> None:
    table = IPVSTable()
    d = Director(table)
    assert table.connection_provider == d.connection_entries
    key = add_service(d, proto=Protocol.UDP, port=53)
    add_dest(d, key, "192.168.168.11", 53, fwd=ForwardingMethod.MASQ)
    assert d.schedule(17, C, 5353, VIP, 53) is not None
    rows = table.get_connections()
    assert len(rows) == 1
    r = rows[0]
    assert (r.protocol, str(r.caddr), r.cport, str(r.vaddr), r.vport) == (
        17, "10.0.0.2", 5353, "10.0.0.100", 53)
    assert (str(r.daddr), r.dport, r.state) == ("192.168.168.11", 53, "UDP")
    assert 299 <= r.expires <= 300


def test_proxy_connection_that_never_established_closes_like_a_refused_one() -> None:
    d, clock = make_director()
    key = add_service(d)
    rs = add_dest(d, key, "192.168.168.11")
    conn = d.schedule(6, C, 40000, VIP, 80)
    assert conn is not None
    d.proxy_closed(conn)  # the real server refused: no handshake
    assert conn.state_name == "CLOSE" and conn.timeout == 10
    assert (rs.activeconns, rs.inactconns) == (0, 1)
    # A retry from the same client port replaces it at once.
    again = d.schedule(6, C, 40000, VIP, 80)
    assert again is not None and again is not conn and not conn.alive
    clock.advance(61)
    d.tick()
    assert d.connection_count == 0 and (rs.activeconns, rs.inactconns) == (0, 0)
