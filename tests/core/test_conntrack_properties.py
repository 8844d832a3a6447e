"""Property tests: whatever the traffic, clock and weight changes, the counters on every real
server equal what the live entries say, never go negative, and return to zero."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.core.conntrack import CONN_F_INACTIVE, CONN_F_TEMPLATE
from pylvs.core.director import Connection, Director
from pylvs.core.model import DestFlags, DestSpec, ForwardingMethod, Protocol, RealServer
from pylvs.core.schedulers import create_scheduler

from .test_director_support import add_dest, add_service, ip, make_director

VIPS = (ip("10.0.0.100"), ip("10.0.0.101"))

op = st.one_of(
    st.tuples(st.just("new"), st.integers(0, 7), st.integers(0, 5), st.integers(0, 1),
              st.sampled_from((6, 17))),
    st.tuples(st.just("tcp"), st.integers(0, 63), st.integers(0, 2), st.integers(0, 63)),
    st.tuples(st.just("proxy"), st.integers(0, 63), st.sampled_from(("est", "hc", "hs", "cl"))),
    st.tuples(st.just("udp"), st.integers(0, 63), st.integers(0, 1)),
    st.tuples(st.just("advance"), st.floats(0, 400, allow_nan=False)),
    st.tuples(st.just("weight"), st.integers(0, 2), st.integers(0, 3)),
)


def _build() -> tuple[Director, object, list[RealServer]]:
    d, clock = make_director(max_connections=40)
    servers = []
    for vip, persistence in (("10.0.0.100", 0), ("10.0.0.101", 60)):
        for proto in (Protocol.TCP, Protocol.UDP):
            key = add_service(d, vip, 80, proto=proto, scheduler="wlc", persistence=persistence,
                              netmask=0xFFFFFF00)
            for i, fwd in enumerate((ForwardingMethod.MASQ, ForwardingMethod.DROUTE,
                                     ForwardingMethod.TUNNEL)):
                servers.append(add_dest(d, key, f"192.168.168.{11 + i}", fwd=fwd, u=3, lo=i % 2))
    return d, clock, servers


def _check(d: Director, servers: list[RealServer]) -> None:
    live = list(d.conns.live())
    assert d.connection_count == len(live)
    assert len(d.connection_entries()) <= len(live)
    for rs in servers:
        mine = [c for c in live if c.dest is rs]
        act = sum(1 for c in mine if not c.flags & (CONN_F_INACTIVE | CONN_F_TEMPLATE))
        inact = sum(1 for c in mine if c.flags & CONN_F_INACTIVE and not c.flags & CONN_F_TEMPLATE)
        tpl = sum(1 for c in mine if c.flags & CONN_F_TEMPLATE)
        assert (rs.activeconns, rs.inactconns, rs.persistconns) == (act, inact, tpl)
        assert min(rs.activeconns, rs.inactconns, rs.persistconns) >= 0
        if rs.u_threshold and rs.total_conns >= rs.u_threshold:
            assert rs.flags & DestFlags.OVERLOAD
    for c in live:
        if c.control is not None:
            assert c.control.n_control > 0
    # A least-connection scheduler fed by the table's notifications decides as a fresh one
    # reading the counters would.
    for svc in d.table.services():
        fresh = create_scheduler(svc.scheduler_name, svc)
        assert svc.scheduler is not None
        assert svc.scheduler.schedule(b"", 0, b"", 0, 0.0) is fresh.schedule(b"", 0, b"", 0, 0.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=80))
def test_counts_never_negative_and_match_live_entries(ops: list[tuple[object, ...]]) -> None:
    d, clock, servers = _build()
    conns: list[Connection] = []
    for o in ops:
        kind = o[0]
        if kind == "new":
            _, client, port, vip, proto = o
            c = d.schedule(int(proto), ip(f"10.9.{client}.{client + 1}"),  # type: ignore[arg-type]
                           1000 + int(port), VIPS[int(vip)], 80)  # type: ignore[call-overload]
            if c is not None:
                conns.append(c)
        elif kind == "tcp" and conns:
            _, i, direction, flags = o
            d.tcp_packet(conns[int(i) % len(conns)], int(direction), int(flags))  # type: ignore[call-overload]
        elif kind == "udp" and conns:
            _, i, direction = o
            d.udp_packet(conns[int(i) % len(conns)], int(direction))  # type: ignore[call-overload]
        elif kind == "proxy" and conns:
            _, i, what = o
            c = conns[int(i) % len(conns)]  # type: ignore[call-overload]
            if what == "est":
                d.proxy_established(c)
            elif what == "hc":
                d.proxy_half_closed(c, True)
            elif what == "hs":
                d.proxy_half_closed(c, False)
            else:
                d.proxy_closed(c)
        elif kind == "advance":
            clock.advance(float(o[1]))  # type: ignore[attr-defined, arg-type]
            d.tick()
        elif kind == "weight":
            _, i, w = o
            rs = servers[int(i)]  # type: ignore[call-overload]
            if rs.service is not None:
                d.table.edit_dest(rs.service.key, DestSpec(rs.addr, rs.port, rs.fwd, int(w),  # type: ignore[call-overload]
                                                           rs.u_threshold, rs.l_threshold))
        _check(d, servers)
    clock.advance(10_000)  # type: ignore[attr-defined]
    d.tick()
    clock.advance(10_000)  # type: ignore[attr-defined]
    d.tick()
    _check(d, servers)
    assert d.connection_count == 0
    assert all((rs.activeconns, rs.inactconns, rs.persistconns) == (0, 0, 0) for rs in servers)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from((0, 1, 6, 17, 132, 255)),
            st.binary(min_size=0, max_size=17),
            st.integers(-1, 70000),
            st.sampled_from((VIPS[0], VIPS[1], b"\x0a\x00\x00", ip("::1"))),
            st.sampled_from((0, 80, 81, 65535, 65536)),
            st.integers(0, 3),
        ),
        max_size=30,
    )
)
def test_malformed_tuples_are_refused_without_touching_state(
    calls: list[tuple[int, bytes, int, bytes, int, int]],
) -> None:
    d, _clock, servers = _build()
    for proto, caddr, cport, vaddr, vport, fwmark in calls:
        conn = d.schedule(proto, caddr, cport, vaddr, vport, fwmark)
        if conn is not None:
            assert len(conn.caddr) == len(conn.vaddr) and conn.cport == cport
            assert d.lookup(proto, caddr, cport, vaddr, vport) in (conn, None)
        d.lookup(proto, caddr, cport if 0 <= cport <= 0xFFFF else 0, vaddr, vport)
        _check(d, servers)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 63), st.integers(0, 1500),
                          st.floats(0, 50, allow_nan=False)), max_size=40),
       st.sampled_from((6, 17)), st.sampled_from((0, 1)))
def test_packet_does_what_state_call_plus_account_do(
    seq: list[tuple[int, int, int, float]], proto: int, which_dest: int,
) -> None:
    """``packet`` is ``tcp_packet``/``udp_packet`` then ``account``, in one call."""
    results = []
    for combined in (False, True):
        d, clock = make_director()
        key = add_service(d, proto=Protocol.TCP if proto == 6 else Protocol.UDP)
        add_dest(d, key, "192.168.168.11", fwd=ForwardingMethod.MASQ)
        add_dest(d, key, "192.168.168.12", fwd=ForwardingMethod.DROUTE)
        conns = [d.schedule(proto, ip("10.0.0.2"), 1000 + i, VIPS[0], 80) for i in range(2)]
        c = conns[which_dest]
        assert c is not None
        for direction, flags, nbytes, dt in seq:
            clock.advance(dt)
            d.tick()
            if combined:
                d.packet(c, direction, flags, nbytes)
            elif proto == 6:
                d.tcp_packet(c, direction, flags)
                d.account(c, direction, 1, nbytes)
            else:
                d.udp_packet(c, direction)
                d.account(c, direction, 1, nbytes)
        results.append((
            c.state, c.flags, c.deadline if c.alive else None, c.alive,
            [(r.activeconns, r.inactconns, r.stats.snapshot()) for s in d.table.services()
             for r in s.destinations],
            d.table.total.snapshot(),
        ))
    assert results[0] == results[1]
