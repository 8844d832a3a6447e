"""The IPVS connection table: TCP states by direction, active/inactive counting, timeouts and
expiry on a fake clock, thresholds, the flood limit and the estimator tick."""

from __future__ import annotations

import pytest

from pylvs.core.conntrack import (
    CONN_F_NOOUTPUT,
    TCP_S_CLOSE,
    TCP_S_CLOSE_WAIT,
    TCP_S_ESTABLISHED,
    TCP_S_FIN_WAIT,
    TCP_S_LAST_ACK,
    TCP_S_SYN_RECV,
    TCP_S_SYN_SENT,
    TCP_S_TIME_WAIT,
    tcp_next_state,
)
from pylvs.core.director import (
    DIR_INPUT,
    DIR_INPUT_ONLY,
    DIR_OUTPUT,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Connection,
    Director,
)
from pylvs.core.model import DestFlags, DestSpec, ForwardingMethod, Protocol, RealServer, Timeouts

from .test_director_support import FakeClock, add_dest, add_service, ip, make_director

C = ip("10.0.0.2")
VIP = ip("10.0.0.100")


def _nat(n: int = 1) -> tuple[Director, FakeClock, list[RealServer]]:
    d, clock = make_director()
    key = add_service(d)
    servers = [add_dest(d, key, f"192.168.168.{11 + i}") for i in range(n)]
    return d, clock, servers


def _dr() -> tuple[Director, FakeClock, RealServer]:
    d, clock = make_director()
    key = add_service(d)
    return d, clock, add_dest(d, key, "192.168.168.11", fwd=ForwardingMethod.DROUTE)


def _open(d: Director, cport: int = 40000) -> Connection:
    conn = d.schedule(6, C, cport, VIP, 80)
    assert conn is not None
    return conn


def _counts(rs: RealServer) -> tuple[int, int]:
    return rs.activeconns, rs.inactconns


def test_syn_in_is_syn_recv_and_counts_active() -> None:
    # Linux 6.1 counts the handshake states (tcp_state_active_table) as active.
    d, _, (rs,) = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_SYN)
    assert conn.state == TCP_S_SYN_RECV and conn.state_name == "SYN_RECV"
    assert conn.timeout == 60
    assert _counts(rs) == (1, 0)


def test_nat_handshake_established_is_active() -> None:
    d, _, (rs,) = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_OUTPUT, TCP_SYN | TCP_ACK)
    assert conn.state == TCP_S_SYN_RECV
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state == TCP_S_ESTABLISHED and conn.timeout == 900
    assert _counts(rs) == (1, 0)


def test_client_fin_in_nat_is_close_wait_then_time_wait() -> None:
    d, _, (rs,) = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    d.tcp_packet(conn, DIR_INPUT, TCP_FIN | TCP_ACK)
    assert conn.state == TCP_S_CLOSE_WAIT and conn.timeout == 60
    assert _counts(rs) == (0, 1)
    d.tcp_packet(conn, DIR_OUTPUT, TCP_FIN | TCP_ACK)
    assert conn.state == TCP_S_TIME_WAIT and conn.timeout == 120
    assert _counts(rs) == (0, 1)


def test_server_fin_first_is_fin_wait_inactive() -> None:
    d, _, (rs,) = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    d.tcp_packet(conn, DIR_OUTPUT, TCP_FIN | TCP_ACK)
    assert conn.state == TCP_S_FIN_WAIT and conn.timeout == 120
    assert _counts(rs) == (0, 1)
    d.tcp_packet(conn, DIR_INPUT, TCP_FIN | TCP_ACK)
    assert conn.state == TCP_S_TIME_WAIT


def test_rst_closes_with_ten_second_timeout() -> None:
    d, clock, (rs,) = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert _counts(rs) == (1, 0)
    d.tcp_packet(conn, DIR_OUTPUT, TCP_RST)
    assert conn.state == TCP_S_CLOSE and conn.state_name == "CLOSE" and conn.timeout == 10
    assert _counts(rs) == (0, 1)
    # The entry was filed for 900 s; the RST shortens that to 10 s.
    clock.advance(9.5)
    d.tick()
    assert d.lookup(6, C, 40000, VIP, 80) is conn
    clock.advance(1)
    d.tick()
    assert d.lookup(6, C, 40000, VIP, 80) is None
    assert _counts(rs) == (0, 0)


def test_segment_without_syn_fin_ack_rst_closes() -> None:
    d, _, _ = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    d.tcp_packet(conn, DIR_INPUT, 0x08)  # PSH alone
    assert conn.state == TCP_S_CLOSE


def test_dr_sees_input_only_sequence() -> None:
    d, clock, rs = _dr()
    conn = _open(d)
    assert conn.flags & CONN_F_NOOUTPUT
    d.tcp_packet(conn, DIR_INPUT, TCP_SYN)
    assert conn.state == TCP_S_SYN_RECV
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state == TCP_S_ESTABLISHED and _counts(rs) == (1, 0)
    # Input-only table: the client's FIN means FIN_WAIT (the NAT table would say CLOSE_WAIT).
    d.tcp_packet(conn, DIR_INPUT, TCP_FIN | TCP_ACK)
    assert conn.state == TCP_S_FIN_WAIT and conn.timeout == 120
    assert _counts(rs) == (0, 1)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state == TCP_S_FIN_WAIT
    clock.advance(121)
    d.tick()
    assert d.lookup(6, C, 40000, VIP, 80) is None and _counts(rs) == (0, 0)


def test_output_packet_clears_no_output_and_leaves_input_only() -> None:
    d, _, _ = _dr()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    d.tcp_packet(conn, DIR_OUTPUT, TCP_ACK)
    assert not conn.flags & CONN_F_NOOUTPUT
    d.tcp_packet(conn, DIR_INPUT, TCP_FIN)
    assert conn.state == TCP_S_CLOSE_WAIT


@pytest.mark.parametrize(
    ("state", "direction", "flags", "expected"),
    [
        (TCP_S_SYN_RECV, DIR_INPUT, TCP_RST, TCP_S_SYN_RECV),
        (TCP_S_ESTABLISHED, DIR_INPUT_ONLY, TCP_RST, TCP_S_CLOSE),
        (TCP_S_TIME_WAIT, DIR_INPUT, TCP_SYN, TCP_S_SYN_RECV),
        (TCP_S_SYN_SENT, DIR_INPUT, TCP_SYN, TCP_S_ESTABLISHED),
        (TCP_S_LAST_ACK, DIR_INPUT, TCP_ACK, TCP_S_CLOSE),
        (TCP_S_TIME_WAIT, DIR_OUTPUT, TCP_RST, TCP_S_TIME_WAIT),
        (TCP_S_CLOSE_WAIT, DIR_OUTPUT, TCP_FIN, TCP_S_TIME_WAIT),
        (TCP_S_ESTABLISHED, DIR_INPUT, TCP_SYN | TCP_RST, TCP_S_CLOSE),  # RST wins
        (TCP_S_ESTABLISHED, DIR_INPUT, TCP_SYN | TCP_FIN, TCP_S_ESTABLISHED),  # SYN beats FIN
    ],
)
def test_state_table_matches_kernel_rows(
    state: int, direction: int, flags: int, expected: int,
) -> None:
    assert tcp_next_state(state, direction, flags) == expected


def test_established_expires_after_900s_of_silence_and_packets_refresh_it() -> None:
    d, clock, (rs,) = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    clock.advance(800)
    d.tick()
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)  # same state: only the timer restarts
    clock.advance(800)
    d.tick()
    assert d.lookup(6, C, 40000, VIP, 80) is conn
    rows = d.connection_entries()
    assert rows[0].state == "ESTABLISHED" and rows[0].expires == pytest.approx(100)
    clock.advance(101)
    d.tick()
    assert d.lookup(6, C, 40000, VIP, 80) is None
    assert _counts(rs) == (0, 0) and d.connection_count == 0


def test_account_restarts_the_timer() -> None:
    d, clock, _ = _nat()
    conn = _open(d)
    d.proxy_established(conn)
    clock.advance(899)
    d.account(conn, DIR_INPUT, 1, 100)
    clock.advance(899)
    d.tick()
    assert conn.alive


def test_set_timeouts_change_established_fin_wait_and_udp() -> None:
    d, clock = make_director()
    tkey = add_service(d)
    ukey = add_service(d, proto=Protocol.UDP, port=53)
    add_dest(d, tkey, "192.168.168.11")
    add_dest(d, ukey, "192.168.168.11", 53)
    d.table.set_timeouts(Timeouts(60, 30, 20))
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.timeout == 60
    d.tcp_packet(conn, DIR_OUTPUT, TCP_FIN)
    assert conn.state == TCP_S_FIN_WAIT and conn.timeout == 30
    udp = d.schedule(17, C, 5353, VIP, 53)
    assert udp is not None and udp.timeout == 20 and udp.state_name == "UDP"
    clock.advance(21)
    d.tick()
    assert d.lookup(17, C, 5353, VIP, 53) is None


def test_udp_is_one_inactive_state_until_expiry() -> None:
    d, clock = make_director()
    key = add_service(d, proto=Protocol.UDP, port=53)
    rs = add_dest(d, key, "192.168.168.11", 53)
    conn = d.schedule(17, C, 5353, VIP, 53)
    assert conn is not None
    d.udp_packet(conn, DIR_INPUT)
    d.udp_packet(conn, DIR_OUTPUT)
    assert _counts(rs) == (0, 1)
    clock.advance(299)
    d.tick()
    assert conn.alive
    clock.advance(2)
    d.tick()
    assert not conn.alive and _counts(rs) == (0, 0)


def test_one_packet_udp_keeps_no_entry() -> None:
    d, _ = make_director()
    key = add_service(d, proto=Protocol.UDP, port=53, one_packet=True)
    rs = add_dest(d, key, "192.168.168.11", 53)
    conn = d.schedule(17, C, 5353, VIP, 53)
    assert conn is not None and conn.dest is rs and not conn.alive
    assert d.lookup(17, C, 5353, VIP, 53) is None
    assert d.connection_count == 0 and _counts(rs) == (0, 0)
    assert rs.stats.conns == 1


def test_counts_after_many_connections_match_entries() -> None:
    d, clock, servers = _nat(3)
    conns = [_open(d, 10000 + i) for i in range(900)]
    for i, c in enumerate(conns):
        if (i // 3) % 3 == 0:
            d.tcp_packet(c, DIR_INPUT, TCP_ACK)
        elif (i // 3) % 3 == 1:
            d.tcp_packet(c, DIR_INPUT, TCP_ACK)
            d.tcp_packet(c, DIR_INPUT, TCP_RST)
    # ESTABLISHED and SYN_RECV are active, CLOSE inactive.
    assert sum(rs.activeconns for rs in servers) == 600
    assert sum(rs.inactconns for rs in servers) == 300
    for rs in servers:
        assert rs.activeconns == 200 and rs.inactconns == 100 and rs.stats.conns == 300
    clock.advance(11)
    d.tick()  # the CLOSE ones
    assert sum(rs.inactconns for rs in servers) == 0
    clock.advance(60)
    d.tick()  # the SYN_RECV ones
    assert sum(rs.activeconns for rs in servers) == 300
    clock.advance(900)
    d.tick()
    assert d.connection_count == 0 and d.connection_entries() == []
    assert all(_counts(rs) == (0, 0) for rs in servers)


def test_upper_threshold_sets_overload_and_three_quarters_clears_it() -> None:
    d, clock = make_director()
    key = add_service(d)
    rs = add_dest(d, key, "192.168.168.11", u=4)
    conns = [_open(d, 1000 + i) for i in range(4)]
    assert rs.flags & DestFlags.OVERLOAD
    assert d.schedule(6, C, 2000, VIP, 80) is None  # rr skips an overloaded server
    for c in conns[:2]:
        d.tcp_packet(c, DIR_INPUT, TCP_ACK)
        d.tcp_packet(c, DIR_INPUT, TCP_RST)  # CLOSE, 10 s
    d.tcp_packet(conns[2], DIR_INPUT, TCP_ACK)
    clock.advance(11)
    d.tick()
    # 2 left: 2*4 < 4*3, cleared.
    assert rs.total_conns == 2 and not rs.flags & DestFlags.OVERLOAD
    assert d.schedule(6, C, 2001, VIP, 80) is not None


def test_lower_threshold_clears_overload_below_it() -> None:
    d, clock = make_director()
    key = add_service(d)
    rs = add_dest(d, key, "192.168.168.11", u=3, lo=2)
    conns = [_open(d, 1000 + i) for i in range(3)]
    assert rs.overloaded
    for c in conns:
        d.tcp_packet(c, DIR_INPUT, TCP_ACK)
    d.tcp_packet(conns[0], DIR_INPUT, TCP_RST)
    clock.advance(11)
    d.tick()
    assert rs.total_conns == 2 and rs.overloaded  # not below l_threshold yet
    d.tcp_packet(conns[1], DIR_INPUT, TCP_RST)
    clock.advance(11)
    d.tick()
    assert rs.total_conns == 1 and not rs.overloaded


def test_syn_flood_stops_at_max_connections_and_recovers() -> None:
    """With the flood defences off (drop_entry 0) a full table refuses new connections."""
    d, clock = make_director(max_connections=100)
    d.defense.set_sysctl({"drop_entry": 0, "secure_tcp": 0})
    key = add_service(d)
    add_dest(d, key, "192.168.168.11")
    made = [d.schedule(6, ip(f"198.51.100.{i % 250 + 1}"), 1024 + i, VIP, 80) for i in range(150)]
    assert sum(c is not None for c in made) == 100
    assert d.refused_full == 50 and d.connection_count == 100
    clock.advance(61)  # SYN_RECV entries time out
    d.tick()
    assert d.connection_count == 0
    assert d.schedule(6, C, 1, VIP, 80) is not None


def test_new_syn_on_time_wait_entry_starts_a_new_connection() -> None:
    d, _, (rs,) = _nat()
    old = _open(d)
    d.proxy_established(old)
    d.proxy_closed(old)
    assert _counts(rs) == (0, 1)
    new = _open(d)
    assert new is not old and not old.alive and new.state_name == "SYN_RECV"
    assert _counts(rs) == (1, 0) and d.connection_count == 1
    assert rs.stats.conns == 2


def test_schedule_of_a_live_entry_returns_it() -> None:
    d, _, (rs,) = _nat()
    a = _open(d)
    assert _open(d) is a
    assert rs.stats.conns == 1 and d.connection_count == 1


def test_tick_runs_the_estimator_every_two_seconds() -> None:
    d, clock, _ = _nat()
    for i in range(20):
        _open(d, 1000 + i)
    clock.advance(1)
    d.tick()
    assert d.table.total.cps == 0
    clock.advance(1)
    d.tick()
    # ip_vs_est: (20 << 9) / 4 = 2560 in fixed point, read back as (2560 + 0x1FF) >> 10 = 2.
    assert d.table.total.cps == 2


def test_deleted_real_server_keeps_its_connections_until_they_expire() -> None:
    d, clock, (rs1, rs2) = _nat(2)
    conns = [_open(d, 1000 + i) for i in range(4)]
    for c in conns:
        d.tcp_packet(c, DIR_INPUT, TCP_ACK)
    svc = d.table.lookup(rs1.service.key) if rs1.service else None
    assert svc is not None
    d.table.del_dest(svc.key, rs2.addr, rs2.port)
    assert rs2.activeconns == 2
    mine = [c for c in conns if c.dest is rs2]
    assert all(d.lookup(6, C, c.cport, VIP, 80) is c for c in mine)
    d.account(mine[0], DIR_INPUT, 1, 10)  # no service any more: dest and total only
    assert rs2.stats.inpkts == 1 and d.table.total.inpkts == 1 and svc.stats.inpkts == 0
    clock.advance(901)
    d.tick()
    assert _counts(rs2) == (0, 0) and _counts(rs1) == (0, 0)


def test_ipv6_connections_are_tracked_apart_from_ipv4() -> None:
    d, _ = make_director()
    key = add_service(d, "2001:db8::100")
    rs = add_dest(d, key, "2001:db8:1::11")
    c6 = ip("::a00:2")  # same numeric value as 10.0.0.2
    conn = d.schedule(6, c6, 40000, ip("2001:db8::100"), 80)
    assert conn is not None and conn.caddr == c6 and conn.daddr == rs.addr_packed
    assert d.lookup(6, C, 40000, ip("2001:db8::100"), 80) is None
    assert d.lookup(6, c6, 40000, ip("2001:db8::100"), 80) is conn
    assert d.lookup_reply(6, rs.addr_packed, 80, c6, 40000) is conn
    row = d.connection_entries()[0]
    assert str(row.caddr) == "::a00:2" and str(row.daddr) == "2001:db8:1::11"


def test_clock_jump_far_ahead_expires_everything_once() -> None:
    d, clock, (rs,) = _nat()
    for i in range(50):
        d.tcp_packet(_open(d, 1000 + i), DIR_INPUT, TCP_ACK)
    clock.advance(10**7)
    d.tick()
    assert d.connection_count == 0 and _counts(rs) == (0, 0)


def test_refreshing_a_timer_does_not_grow_the_wheel() -> None:
    d, clock, _ = _nat()
    conn = _open(d)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    for _ in range(5000):
        clock.advance(0.5)
        d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
        d.tick()
    assert sum(len(b.conns) for b in d.conns.wheel.values()) <= 2
    assert conn.alive and conn.deadline == clock.now + 900


def test_least_connection_scheduler_follows_state_changes() -> None:
    d, _ = make_director()
    key = add_service(d, scheduler="wlc")
    add_dest(d, key, "192.168.168.11")
    add_dest(d, key, "192.168.168.12")
    a = _open(d, 1)
    b = _open(d, 2)
    assert a.dest is not b.dest  # wlc: one active connection weighs 256 inactive ones
    d.tcp_packet(b, DIR_INPUT, TCP_ACK)
    d.tcp_packet(b, DIR_INPUT, TCP_RST)  # b's server is down to one inactive entry
    c = _open(d, 3)
    assert c.dest is b.dest
    assert (a.dest.activeconns, a.dest.inactconns) == (1, 0)
    assert (b.dest.activeconns, b.dest.inactconns) == (1, 1)


def test_new_syn_on_closed_entry_is_rescheduled_but_not_on_established() -> None:
    d, _, (rs1, rs2) = _nat(2)
    first = _open(d)
    d.tcp_packet(first, DIR_INPUT, TCP_ACK)
    assert _open(d) is first  # ESTABLISHED: the SYN belongs to it
    d.tcp_packet(first, DIR_OUTPUT, TCP_RST)  # CLOSE
    second = _open(d)
    assert second is not first and not first.alive
    assert second.dest is not first.dest  # rr moved on
    assert rs1.total_conns + rs2.total_conns == 1


def test_expire_nodest_conn_drops_entries_of_a_deleted_server_at_their_next_packet() -> None:
    d, _, _ = _nat(2)
    a = _open(d, 1)
    b = _open(d, 2)
    gone = a.dest
    assert gone.service is not None
    key = gone.service.key
    d.table.del_dest(key, gone.addr, gone.port)
    # Off (the default): the entry stays and is found.
    assert d.lookup(6, C, 1, VIP, 80) is a
    d.expire_nodest_conn = True
    assert d.lookup(6, C, 1, VIP, 80) is None and not a.alive
    assert gone.total_conns == 0
    assert d.lookup(6, C, 2, VIP, 80) is b  # the other server's entry is untouched
    again = _open(d, 1)
    assert again.dest is b.dest


def test_expire_nodest_conn_reschedules_a_syn_for_a_quiescent_server() -> None:
    d, _, _ = _nat(2)
    d.expire_nodest_conn = True
    a = _open(d, 1)
    d.tcp_packet(a, DIR_INPUT, TCP_ACK)
    old_dest = a.dest
    assert old_dest.service is not None
    d.table.edit_dest(old_dest.service.key, DestSpec(old_dest.addr, 80, ForwardingMethod.MASQ, 0))
    moved = _open(d, 1)
    assert moved is not a and moved.dest is not old_dest


def test_secure_tcp_keeps_dr_entries_in_synack_until_the_client_acks() -> None:
    d, _, rs = _dr()
    d.secure_tcp = True
    conn = _open(d)
    # secure_tcp's timeouts are Linux 2.4's vs_timeout_table_dos: SYNACK 100 s, not 120 s
    assert conn.state_name == "SYNACK" and conn.timeout == 100
    assert _counts(rs) == (1, 0)
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state == TCP_S_ESTABLISHED


def test_secure_tcp_nat_needs_the_real_servers_answer_to_establish() -> None:
    d, _, _ = _nat()
    d.secure_tcp = True
    assert d.secure_tcp
    conn = _open(d)
    assert conn.state_name == "SYN_RECV"
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)  # a client ACK alone proves nothing
    assert conn.state_name == "SYN_RECV"
    d.tcp_packet(conn, DIR_OUTPUT, TCP_SYN | TCP_ACK)
    assert conn.state_name == "SYNACK"
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state_name == "SYNACK"
    d.tcp_packet(conn, DIR_OUTPUT, TCP_ACK)
    assert conn.state == TCP_S_ESTABLISHED
    d.secure_tcp = False
    assert not d.secure_tcp and _open(d, 2).state_name == "SYN_RECV"
