"""Persistence templates (``-p``/``-M``): one real server per client network for as long as the
template lives, as ip_vs_sched_persist does; and the golden ``e_conns`` case replayed."""

from __future__ import annotations

import io
import ipaddress
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from pylvs.core.director import (
    DIR_INPUT,
    DIR_OUTPUT,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Director,
)
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey

from .test_director_support import (
    FakeClock,
    add_dest,
    add_fwmark_service,
    add_service,
    ip,
    make_director,
)

VIP = ip("10.0.0.101")
GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "golden" / "ipvsadm" / "e_conns.json"


def _templates(d: object) -> list[object]:
    return [r for r in d.connection_entries() if r.flags & 0x1000]  # type: ignore[attr-defined]


def test_same_client_sticks_to_one_server_and_template_lists_with_port_zero() -> None:
    d, _ = make_director()
    key = add_service(d, "10.0.0.101", persistence=120)
    rs1 = add_dest(d, key, "192.168.168.11")
    add_dest(d, key, "192.168.168.12")
    c = ip("10.0.0.2")
    conns = [d.schedule(6, c, 40000 + i, VIP, 80) for i in range(5)]
    assert all(x is not None and x.dest is conns[0].dest for x in conns)  # type: ignore[union-attr]
    first = conns[0]
    assert first is not None
    dest = first.dest
    assert dest.persistconns == 1 and dest.activeconns == 5
    other = rs1 if dest is not rs1 else None
    assert other is None or other.persistconns == 0
    (tpl,) = [r for r in d.connection_entries() if r.cport == 0]
    assert (tpl.protocol, str(tpl.caddr), tpl.vport, tpl.state, tpl.expires) == (
        6, "10.0.0.2", 80, "NONE", 120)
    assert str(tpl.daddr) == str(dest.addr) and tpl.dport == 80
    d.tcp_packet(first, DIR_INPUT, TCP_ACK)
    (tpl,) = [r for r in d.connection_entries() if r.cport == 0]
    assert tpl.state == "ASSURED"
    # Another client is scheduled on its own.
    other_conn = d.schedule(6, ip("10.0.0.3"), 40000, VIP, 80)
    assert other_conn is not None and other_conn.dest is not dest


def test_netmask_groups_clients_of_one_network() -> None:
    d, _ = make_director()
    key = add_service(d, "10.0.0.101", persistence=300, netmask=0xFFFFFF00)
    add_dest(d, key, "192.168.168.11")
    add_dest(d, key, "192.168.168.12")
    a = d.schedule(6, ip("172.16.5.2"), 1000, VIP, 80)
    b = d.schedule(6, ip("172.16.5.77"), 1000, VIP, 80)
    c = d.schedule(6, ip("172.16.6.2"), 1000, VIP, 80)
    assert a is not None and b is not None and c is not None
    assert a.dest is b.dest
    assert c.dest is not a.dest  # rr moved on for the other /24
    rows = [r for r in d.connection_entries() if r.cport == 0]
    assert sorted(str(r.caddr) for r in rows) == ["172.16.5.0", "172.16.6.0"]


def test_ipv6_prefix_length_groups_clients() -> None:
    d, _ = make_director()
    key = add_service(d, "2001:db8::101", persistence=300, netmask=64)
    add_dest(d, key, "2001:db8:1::11")
    add_dest(d, key, "2001:db8:1::12")
    v = ip("2001:db8::101")
    a = d.schedule(6, ip("2001:db8:5:5::1"), 1000, v, 80)
    b = d.schedule(6, ip("2001:db8:5:5:ffff::9"), 1000, v, 80)
    c = d.schedule(6, ip("2001:db8:5:6::1"), 1000, v, 80)
    assert a is not None and b is not None and c is not None
    assert a.dest is b.dest and c.dest is not a.dest


def test_template_outlives_its_connections_and_expires_after_them() -> None:
    d, clock = make_director()
    key = add_service(d, "10.0.0.101", persistence=60)
    add_dest(d, key, "192.168.168.11")
    rs2 = add_dest(d, key, "192.168.168.12")
    c = ip("10.0.0.2")
    conn = d.schedule(6, c, 40000, VIP, 80)
    assert conn is not None
    d.proxy_established(conn)
    dest = conn.dest
    # The connection stays ESTABLISHED (900 s) far beyond the 60 s template timeout: the
    # template is kept while it controls a connection.
    clock.advance(300)
    d.tick()
    assert conn.alive and len(_templates(d)) == 1 and dest.persistconns == 1
    # A new connection of that client still goes to the same server.
    again = d.schedule(6, c, 40001, VIP, 80)
    assert again is not None and again.dest is dest
    for x in (conn, again):
        d.tcp_packet(x, DIR_INPUT, TCP_ACK)
        d.tcp_packet(x, DIR_INPUT, TCP_RST)  # CLOSE: 10 s
    clock.advance(11)
    d.tick()
    assert not conn.alive and not again.alive
    assert len(_templates(d)) == 1  # outlives them ...
    clock.advance(60)
    d.tick()
    assert _templates(d) == [] and dest.persistconns == 0  # ... by at most one timeout
    assert rs2.persistconns == 0 and d.connection_count == 0


def test_client_returning_within_the_timeout_gets_the_same_server() -> None:
    d, clock = make_director()
    key = add_service(d, "10.0.0.101", persistence=120)
    for i in range(3):
        add_dest(d, key, f"192.168.168.{11 + i}")
    c = ip("10.0.0.2")
    first = d.schedule(6, c, 40000, VIP, 80)
    assert first is not None
    d.tcp_packet(first, DIR_INPUT, TCP_ACK)
    d.tcp_packet(first, DIR_INPUT, TCP_RST)
    for i in range(5):  # other clients move rr on
        d.schedule(6, ip(f"10.0.1.{i + 1}"), 1, VIP, 80)
    clock.advance(100)
    d.tick()
    back = d.schedule(6, c, 40001, VIP, 80)
    assert back is not None and back.dest is first.dest


def test_quiescent_server_keeps_its_persistent_clients() -> None:
    d, _ = make_director()
    key = add_service(d, "10.0.0.101", persistence=300)
    add_dest(d, key, "192.168.168.11")
    add_dest(d, key, "192.168.168.12")
    c = ip("10.0.0.2")
    conn = d.schedule(6, c, 1, VIP, 80)
    assert conn is not None
    dest = conn.dest
    d.table.edit_dest(key, DestSpec(dest.addr, 80, ForwardingMethod.MASQ, weight=0))
    assert all(
        (x := d.schedule(6, c, 2 + i, VIP, 80)) is not None and x.dest is dest for i in range(3)
    )
    newcomer = d.schedule(6, ip("10.0.0.9"), 1, VIP, 80)
    assert newcomer is not None and newcomer.dest is not dest


def test_expire_quiescent_template_reschedules_the_client() -> None:
    d, _ = make_director()
    d.expire_quiescent_template = True
    key = add_service(d, "10.0.0.101", persistence=300)
    add_dest(d, key, "192.168.168.11")
    add_dest(d, key, "192.168.168.12")
    c = ip("10.0.0.2")
    conn = d.schedule(6, c, 1, VIP, 80)
    assert conn is not None
    dest = conn.dest
    d.table.edit_dest(key, DestSpec(dest.addr, 80, ForwardingMethod.MASQ, weight=0))
    moved = d.schedule(6, c, 2, VIP, 80)
    assert moved is not None and moved.dest is not dest
    assert moved.dest.persistconns == 1


def test_deleted_server_template_no_longer_binds() -> None:
    d, clock = make_director()
    key = add_service(d, "10.0.0.101", persistence=300)
    add_dest(d, key, "192.168.168.11")
    add_dest(d, key, "192.168.168.12")
    c = ip("10.0.0.2")
    conn = d.schedule(6, c, 1, VIP, 80)
    assert conn is not None
    gone = conn.dest
    d.table.del_dest(key, gone.addr, gone.port)
    moved = d.schedule(6, c, 2, VIP, 80)
    assert moved is not None and moved.dest is not gone
    # The old template lingers (unhashed) until its connection is gone, then both expire.
    clock.advance(400)
    d.tick()
    clock.advance(400)
    d.tick()
    assert gone.persistconns == 0 and gone.inactconns == 0


def test_port_zero_persistent_service_keeps_all_ports_of_a_client_together() -> None:
    d, _ = make_director()
    key = add_service(d, "10.0.0.101", 0, persistence=300)
    add_dest(d, key, "192.168.168.11", 0)
    add_dest(d, key, "192.168.168.12", 0)
    c = ip("10.0.0.2")
    web = d.schedule(6, c, 1000, VIP, 80)
    tls = d.schedule(6, c, 1001, VIP, 443)
    assert web is not None and tls is not None and web.dest is tls.dest
    assert (web.vport, web.dport, tls.vport, tls.dport) == (80, 80, 443, 443)
    (tpl,) = _templates(d)
    assert tpl.vport == 0 and tpl.dport == 0  # type: ignore[attr-defined]
    assert d.lookup(6, c, 1001, VIP, 443) is tls


def test_port_zero_without_persistence_is_refused() -> None:
    d, _ = make_director()
    key = add_service(d, "10.0.0.101", 0)
    add_dest(d, key, "192.168.168.11", 0)
    assert d.schedule(6, ip("10.0.0.2"), 1000, VIP, 80) is None


def test_fwmark_persistence_spans_protocols_and_lists_as_ip() -> None:
    d, _ = make_director()
    key = add_fwmark_service(d, 7, persistence=300)
    add_dest(d, key, "192.168.168.11", 0)
    add_dest(d, key, "192.168.168.12", 0)
    c = ip("10.0.0.2")
    t = d.schedule(6, c, 1000, VIP, 80, fwmark=7)
    u = d.schedule(17, c, 1000, VIP, 53, fwmark=7)
    assert t is not None and u is not None and t.dest is u.dest
    (tpl,) = _templates(d)
    assert tpl.protocol == 0 and str(tpl.vaddr) == "0.0.0.7"  # type: ignore[attr-defined]
    # No mark: no service.
    assert d.schedule(6, c, 1001, VIP, 80) is None


def test_fwmark_service_wins_over_an_address_service() -> None:
    d, _ = make_director()
    akey = add_service(d, "10.0.0.101")
    a_rs = add_dest(d, akey, "192.168.168.11")
    fkey = add_fwmark_service(d, 9)
    f_rs = add_dest(d, fkey, "192.168.168.12")
    marked = d.schedule(6, ip("10.0.0.2"), 1, VIP, 80, fwmark=9)
    plain = d.schedule(6, ip("10.0.0.2"), 2, VIP, 80)
    assert marked is not None and marked.dest is f_rs
    assert plain is not None and plain.dest is a_rs


def test_one_packet_udp_with_persistence_keeps_only_the_template() -> None:
    d, _ = make_director()
    key = add_service(d, "10.0.0.101", 53, proto=Protocol.UDP, persistence=60, one_packet=True)
    add_dest(d, key, "192.168.168.11", 53)
    add_dest(d, key, "192.168.168.12", 53)
    c = ip("10.0.0.2")
    a = d.schedule(17, c, 5000, VIP, 53)
    b = d.schedule(17, c, 5001, VIP, 53)
    assert a is not None and b is not None and a.dest is b.dest
    assert d.connection_count == 1 and len(_templates(d)) == 1
    assert a.dest.inactconns == 0 and a.dest.persistconns == 1


# ---- the golden e_conns case ---------------------------------------------------------------


def _golden_steps() -> list[dict[str, object]]:
    if not GOLDEN.exists():
        pytest.skip(f"golden data not found at {GOLDEN}")
    steps: list[dict[str, object]] = json.loads(GOLDEN.read_text())["steps"]
    return steps


def _dest_counts(listing: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(service, real server) -> (ActiveConn, InActConn) from an ``ipvsadm -Ln`` listing."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    svc = ""
    for line in listing.splitlines():
        m = re.match(r"^(TCP|UDP)\s+(\S+)", line)
        if m:
            svc = f"{m[1]} {m[2]}"
            continue
        m = re.match(r"^\s+-> (\d\S+)\s+\w+\s+\d+\s+(\d+)\s+(\d+)", line)
        if m:
            out[(svc, m[1])] = (int(m[2]), int(m[3]))
    return out


def _replay_e_conns() -> Director:
    """The traffic of golden ``e_conns`` as a data plane reports it: 3 short connections and 2
    held open to .100 (rr over .11 and .12), 2 short ones to the persistent .101, one DNS query,
    one refused connection (RST) to .102 and one unanswered SYN to .103."""
    d, clock = make_director()
    k100 = add_service(d, "10.0.0.100", 80)
    add_dest(d, k100, "192.168.168.11")
    add_dest(d, k100, "192.168.168.12", weight=2)
    k101 = add_service(d, "10.0.0.101", 80, persistence=120)
    add_dest(d, k101, "192.168.168.13")
    k53 = add_service(d, "10.0.0.100", 53, proto=Protocol.UDP)
    add_dest(d, k53, "192.168.168.11", 53)
    k102 = add_service(d, "10.0.0.102", 81)
    add_dest(d, k102, "192.168.168.14", 81)
    client = ip("10.0.0.2")
    port = iter(range(37900, 60000))

    def short(vip: str) -> None:  # handshake, request, server closes first
        conn = d.schedule(6, client, next(port), ip(vip), 80)
        assert conn is not None
        d.tcp_packet(conn, DIR_OUTPUT, TCP_SYN | TCP_ACK)
        d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
        d.tcp_packet(conn, DIR_OUTPUT, TCP_FIN | TCP_ACK)
        d.tcp_packet(conn, DIR_INPUT, TCP_FIN | TCP_ACK)
        d.tcp_packet(conn, DIR_OUTPUT, TCP_ACK)

    for _ in range(3):
        short("10.0.0.100")
    for _ in range(2):
        held = d.schedule(6, client, next(port), ip("10.0.0.100"), 80)
        assert held is not None
        d.tcp_packet(held, DIR_OUTPUT, TCP_SYN | TCP_ACK)
        d.tcp_packet(held, DIR_INPUT, TCP_ACK)
    for _ in range(2):
        short("10.0.0.101")
    dns = d.schedule(17, client, 58622, ip("10.0.0.100"), 53)
    assert dns is not None
    refused = d.schedule(6, client, 51090, ip("10.0.0.102"), 81)
    assert refused is not None
    d.tcp_packet(refused, DIR_OUTPUT, TCP_RST | TCP_ACK)
    k103 = add_service(d, "10.0.0.103", 80)
    add_dest(d, k103, "192.168.168.99")
    assert d.schedule(6, client, 42776, ip("10.0.0.103"), 80) is not None
    clock.advance(2)
    d.tick()
    return d



def test_golden_e_conns_counts_states_and_template_rows() -> None:
    """Replays the traffic of golden ``e_conns`` through the Director and compares what
    ``ipvsadm -Ln`` and ``-Lnc`` printed on the kernel, the unanswered SYN in SYN_RECV counted
    active as 6.1 does."""
    steps = _golden_steps()
    cmds = [s for s in steps if "cmd" in s]
    listing = next(s for s in cmds[cmds.index(next(c for c in cmds if c["cmd"] == "ipvsadm -Lnc")):]
                   if s["cmd"] == "ipvsadm -Ln")
    conn_rows = next(s for s in cmds if s["cmd"] == "ipvsadm -Lnc")
    expected_counts = _dest_counts(str(listing["stdout"]))
    d = _replay_e_conns()

    got = {}
    for svc in d.table.services():
        for rs in svc.destinations:
            got[(str(svc.key), f"{rs.addr}:{rs.port}")] = (
                rs.activeconns, rs.inactconns)
    assert len(expected_counts) == 6 and got == expected_counts

    # -Lnc: the same states to the same places, templates with client port 0.
    def row_key(proto: str, state: str, src: str, vip: str, dst: str) -> tuple[str, ...]:
        kind = "tpl" if src.split(":")[1] == "0" else "conn"
        return (proto, state, kind, vip, dst)

    golden_rows: Counter[tuple[str, ...]] = Counter()
    golden_expiry: dict[tuple[str, ...], list[int]] = {}
    for line in str(conn_rows["stdout"]).splitlines()[2:]:
        proto, expire, state, src, vip, dst = line.split()
        k = row_key(proto, state, src, vip, dst)
        golden_rows[k] += 1
        mm, ss = expire.split(":")
        golden_expiry.setdefault(k, []).append(int(mm) * 60 + int(ss))
    ours: Counter[tuple[str, ...]] = Counter()
    for r in d.connection_entries():
        proto = {6: "TCP", 17: "UDP"}[r.protocol]
        k = row_key(proto, r.state, f"{r.caddr}:{r.cport}", f"{r.vaddr}:{r.vport}",
                    f"{r.daddr}:{r.dport}")
        ours[k] += 1
        assert any(abs(g - r.expires) <= 3 for g in golden_expiry.get(k, [])), (k, r.expires)
    assert sum(golden_rows.values()) == 11 and ours == golden_rows


def _golden_stdout(steps: list[dict[str, object]], cmd: str, after: str = "") -> str:
    cmds = [s for s in steps if "cmd" in s]
    start = 0
    if after:
        start = next(i for i, s in enumerate(cmds) if s["cmd"] == after)
    return str(next(s for s in cmds[start:] if s["cmd"] == cmd)["stdout"])


def _pylvsadm(d: Director, *args: str) -> str:
    from pylvs.cli.ipvsadm import main

    out, err = io.StringIO(), io.StringIO()
    assert main(list(args), backend=d.table, stdout=out, stderr=err) == 0, err.getvalue()
    return out.getvalue()


def test_golden_e_conns_listings_through_pylvsadm() -> None:
    """pylvsadm over this Director prints what ipvsadm printed over the kernel, byte for byte,
    apart from what varies between runs (expiry seconds, client ports, row order)."""
    steps = _golden_steps()
    d = _replay_e_conns()
    for args in (("-Ln",), ("-Ln", "--persistent-conn"), ("-Ln", "--thresholds")):
        want = _golden_stdout(steps, "ipvsadm " + " ".join(args), after="ipvsadm -Lnc")
        got = _pylvsadm(d, *args)
        assert got == want

    def shape(text: str) -> Counter[str]:
        rows: Counter[str] = Counter()
        lines = text.splitlines()
        for line in lines[2:]:
            # pro expire state source virtual destination: drop expire and the client port
            proto, _expire, state, src, vip, dst = line.split()
            rows[f"{proto} {state} {src.rsplit(':', 1)[1] == '0'} {vip} {dst}"] += 1
        return rows

    want_c = _golden_stdout(steps, "ipvsadm -Lnc")
    got_c = _pylvsadm(d, "-Lnc")
    assert got_c.splitlines()[:2] == want_c.splitlines()[:2]
    assert shape(got_c) == shape(want_c)
    # Columns line up as ipvsadm's: the same widths, whatever the values.
    for line in got_c.splitlines()[2:]:
        assert re.match(r"^(TCP|UDP) \d\d:\d\d  [A-Z_]{1,11} +\S+ +\S+ +\S+$", line), line


def test_golden_e_conns_bulk_counts_and_deleted_server_entries() -> None:
    """The second half of ``e_conns``: 1100 more short connections, the counters, then a real
    server with entries deleted: the table forgets it, its entries stay listed."""
    steps = _golden_steps()
    d = _replay_e_conns()
    client = ip("10.0.0.2")
    vip = ip("10.0.0.100")
    for i in range(1100):
        conn = d.schedule(6, client, 10000 + i, vip, 80)
        assert conn is not None
        d.tcp_packet(conn, DIR_OUTPUT, TCP_SYN | TCP_ACK)
        d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
        d.tcp_packet(conn, DIR_INPUT, TCP_FIN | TCP_ACK)
        d.tcp_packet(conn, DIR_OUTPUT, TCP_FIN | TCP_ACK)
        d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    want = _golden_stdout(steps, "ipvsadm -Ln -t 10.0.0.100:80")
    assert _pylvsadm(d, "-Ln", "-t", "10.0.0.100:80") == want
    # Conns column of --stats (packets and bytes depend on the real exchange, not replayed).
    stats = _golden_stdout(steps, "ipvsadm -Ln --stats", after="ipvsadm -Ln --stats -t 10.0.0.100:80")
    want_conns = [line.split()[:2] for line in stats.splitlines()[3:]]
    got_conns = [line.split()[:2] for line in _pylvsadm(d, "-Ln", "--stats").splitlines()[3:]]
    assert got_conns == want_conns

    # ipvsadm ran these some seconds later: the CLOSE entry (10 s) was gone by then.
    clock = d.clock
    assert isinstance(clock, FakeClock)
    clock.advance(10)
    d.tick()
    key = ServiceKey.inet(Protocol.TCP, "10.0.0.100", 80)
    d.table.del_dest(key, ipaddress.ip_address("192.168.168.12"), 80)
    cmd = next(str(s["cmd"]) for s in steps if str(s.get("cmd", "")).startswith("ipvsadm -d "))
    golden = _golden_stdout(steps, cmd)
    listing, summary = golden.split("      1 ASSURED", 1)
    assert _pylvsadm(d, "-Ln", "-t", "10.0.0.100:80") == listing
    want_rows: Counter[tuple[str, str]] = Counter()
    for line in ("      1 ASSURED" + summary).splitlines():
        n, state, dst = line.split()
        want_rows[(state, dst)] = int(n)
    got_rows = Counter((r.state, f"{r.daddr}:{r.dport}") for r in d.connection_entries())
    assert got_rows == want_rows


def test_dropping_the_only_connection_of_an_unassured_template_drops_the_template() -> None:
    d, _ = make_director()
    d.expire_nodest_conn = True
    key = add_service(d, "10.0.0.101", persistence=300)
    add_dest(d, key, "192.168.168.11")
    add_dest(d, key, "192.168.168.12")
    c = ip("10.0.0.2")
    hello = d.schedule(6, c, 1, VIP, 80)  # SYN only: the template is not assured
    kept = d.schedule(6, ip("10.0.0.3"), 1, VIP, 80)
    assert hello is not None and kept is not None and kept.dest is not hello.dest
    d.tcp_packet(kept, DIR_INPUT, TCP_ACK)  # assured
    for conn in (hello, kept):
        d.table.del_dest(key, conn.dest.addr, conn.dest.port)
    assert d.lookup(6, c, 1, VIP, 80) is None
    assert d.lookup(6, ip("10.0.0.3"), 1, VIP, 80) is None
    rows = d.connection_entries()
    # The assured template stays (it lives out its timeout); the other went with its entry.
    assert [(str(r.caddr), r.state) for r in rows] == [("10.0.0.3", "ASSURED")]
    assert hello.dest.persistconns == 0 and kept.dest.persistconns == 1
