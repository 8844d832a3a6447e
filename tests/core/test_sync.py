"""Connection synchronisation, sans-IO: the IPVS sync wire format, what a master sends when, and
what a backup makes of it, so that connections and persistence survive a failover."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylvs.core import sync
from pylvs.core.director import DIR_INPUT, TCP_ACK, TCP_FIN, TCP_SYN, Director
from pylvs.core.model import ForwardingMethod, Protocol

from .test_director_support import FakeClock, add_dest, add_service, ip, make_director

C = ip("10.0.0.2")
VIP = ip("10.0.0.100")


def _pair(persistence: int = 0) -> tuple[Director, Director, sync.SyncMaster, FakeClock]:
    """A master and a backup director with the same table, the master's entries queued."""
    master, clock = make_director()
    backup, _ = make_director()
    for d in (master, backup):
        key = add_service(d, persistence=persistence)
        add_dest(d, key, "192.168.168.11", fwd=ForwardingMethod.DROUTE)
        add_dest(d, key, "192.168.168.12", fwd=ForwardingMethod.DROUTE)
    sm = sync.SyncMaster(syncid=7, maxlen=sync.sync_maxlen("master"), clock=clock)
    master.sync_hook = sm.want
    return master, backup, sm, clock


def _deliver(sm: sync.SyncMaster, backup: Director, syncid: int = 0) -> sync.BackupStats:
    stats = sync.BackupStats()
    for msg in sm.due(flush=True):
        for e in sync.decode(msg, syncid):
            sync.apply(backup, e, stats)
    return stats


def test_v4_entry_has_the_kernel_layout() -> None:
    e = sync.SyncConn(6, C, 40000, VIP, 80, ip("192.168.168.11"), 80, 0x2 | 0x8, 1, 900, 0)
    (msg,) = sync.encode([e], syncid=5, maxlen=1472)
    assert msg[:8] == bytes([0, 5]) + struct.pack("!H", 8 + 36) + bytes([1, 1, 0, 0])
    assert msg[8:12] == bytes([0, 6]) + struct.pack("!H", 36)  # type, protocol, version 0 | size
    assert msg[12:16] == struct.pack("!I", 0xA)
    assert msg[16:22] == struct.pack("!HHH", 1, 40000, 80)
    assert msg[22:32] == struct.pack("!HII", 80, 0, 900)
    assert msg[32:44] == C + VIP + ip("192.168.168.11")
    assert sync.decode(msg) == [
        sync.SyncConn(6, C, 40000, VIP, 80, ip("192.168.168.11"), 80, 0xA | sync.CONN_F_SYNC, 1,
                      900, 0)]


def test_ipv6_entries_and_templates_round_trip() -> None:
    v6 = sync.SyncConn(17, ip("2001:db8::2"), 5353, ip("2001:db8::100"), 53,
                       ip("2001:db8::11"), 53, 0, 0, 300)
    tpl = sync.SyncConn(6, ip("10.0.0.0"), 0, VIP, 80, ip("192.168.168.11"), 80, 0x40 | 2, 0, 360)
    (msg,) = sync.encode([v6, tpl], syncid=0, maxlen=1472)
    out = sync.decode(msg)
    assert [(e.caddr, e.vport, e.template, e.timeout) for e in out] == [
        (v6.caddr, 53, False, 300), (tpl.caddr, 80, True, 360)]


def test_messages_are_cut_at_the_interface_size_and_syncid_filters() -> None:
    entries = [sync.SyncConn(17, C, 1000 + i, VIP, 53, ip("192.168.168.11"), 53, 0, 0, 300)
               for i in range(100)]
    maxlen = sync.sync_maxlen("master")
    assert maxlen == 1472 and sync.sync_maxlen("backup", mtu=9000) == 8972
    assert sync.sync_maxlen("backup", requested=100) == 1024
    msgs = sync.encode(entries, syncid=3, maxlen=maxlen)
    assert all(len(m) <= maxlen for m in msgs)
    assert [m[4] for m in msgs] == [40, 40, 20]
    assert sum(len(sync.decode(m, 3)) for m in msgs) == 100
    assert sync.decode(msgs[0], 4) == []  # a backup listening for syncid 4 ignores syncid 3


def test_bad_datagrams_are_refused_whole_and_bad_entries_skipped() -> None:
    good = sync.SyncConn(6, C, 1, VIP, 80, ip("192.168.168.11"), 80, 0, 1, 900)
    (msg,) = sync.encode([good], 0, 1472)
    with pytest.raises(sync.SyncError):
        sync.decode(msg[:-1])  # size no longer matches
    with pytest.raises(sync.SyncError):
        sync.decode(b"\0")
    bad_state = sync.SyncConn(6, C, 1, VIP, 80, ip("192.168.168.11"), 80, 0, 42, 900)
    sctp = sync.SyncConn(132, C, 1, VIP, 80, ip("192.168.168.11"), 80, 0, 1, 900)
    (msg,) = sync.encode([bad_state, sctp, good], 0, 1472)
    assert [e.cport for e in sync.decode(msg)] == [1]


def test_version_0_messages_are_read() -> None:
    entry = struct.pack("!BBHHH4s4s4sHH", 0, 6, 40000, 80, 80, C, VIP, ip("192.168.168.11"),
                        0x2, 1)
    msg = struct.pack("!BBH", 1, 9, 4 + len(entry)) + entry
    (e,) = sync.decode(msg)
    assert (e.cport, e.state, e.timeout, e.flags & 0x7) == (40000, 1, 0, 2)


@given(st.binary(max_size=600))
def test_any_datagram_is_read_or_refused_cleanly(data: bytes) -> None:
    try:
        out = sync.decode(data)
    except sync.SyncError:
        return
    assert all(len(e.caddr) in (4, 16) for e in out)


def test_backup_learns_established_connections_and_their_close() -> None:
    master, backup, sm, _clock = _pair()
    conn = master.schedule(6, C, 40000, VIP, 80)
    assert conn is not None
    assert sm.due(flush=True) == []  # SYN_RECV is not synced
    master.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state_name == "ESTABLISHED"
    stats = _deliver(sm, backup, syncid=7)
    assert stats.created == 1
    twin = backup.lookup(6, C, 40000, VIP, 80)
    assert twin is not None and twin.state_name == "ESTABLISHED"
    assert twin.daddr == conn.daddr and twin.dport == 80
    assert (twin.dest.activeconns, twin.dest.inactconns) == (1, 0)
    assert twin.flags & sync.CONN_F_SYNC
    master.tcp_packet(conn, DIR_INPUT, TCP_FIN | TCP_ACK)
    _deliver(sm, backup)
    assert twin.state_name == conn.state_name == "FIN_WAIT"
    assert (twin.dest.activeconns, twin.dest.inactconns) == (0, 1)
    assert twin.timeout == conn.timeout
    # after a failover the backup forwards the entry's packets to the same real server
    assert backup.lookup(6, C, 40000, VIP, 80) is twin


def test_persistence_template_survives_the_failover() -> None:
    master, backup, sm, _ = _pair(persistence=300)
    conn = master.schedule(6, C, 40000, VIP, 80)
    assert conn is not None
    master.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    stats = _deliver(sm, backup)
    assert stats.created == 2  # the connection and its template
    # the backup, now in charge, sends the same client's next connections to the same server
    for port in range(41000, 41010):
        nxt = backup.schedule(6, C, port, VIP, 80)
        assert nxt is not None and nxt.daddr == conn.daddr
    entries = {e.state for e in backup.connection_entries()}
    assert "NONE" in entries or "ASSURED" in entries


def test_udp_entries_are_synced_when_created_and_unknown_servers_are_skipped() -> None:
    master, clock = make_director()
    backup, _ = make_director()
    key = add_service(master, port=53, proto=Protocol.UDP)
    add_dest(master, key, "192.168.168.11", 53)
    bkey = add_service(backup, port=53, proto=Protocol.UDP)
    add_dest(backup, bkey, "192.168.168.99", 53)  # not the master's server
    sm = sync.SyncMaster(syncid=0, maxlen=1472, clock=clock)
    master.sync_hook = sm.want
    assert master.schedule(17, C, 5000, VIP, 53) is not None
    stats = _deliver(sm, backup)
    assert (stats.created, stats.no_dest) == (0, 1)
    assert backup.lookup(17, C, 5000, VIP, 53) is None


def test_partly_filled_message_waits_two_seconds_as_the_kernel_does() -> None:
    master, _backup, sm, clock = _pair()
    conn = master.schedule(6, C, 40000, VIP, 80)
    assert conn is not None
    master.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert sm.due() == []
    clock.advance(1.0)
    assert sm.due() == []
    clock.advance(1.0)
    (msg,) = sm.due()
    assert msg[4] == 1 and sm.sent_entries == 1
    assert sm.due() == []


def test_syn_only_traffic_sends_nothing() -> None:
    master, _backup, sm, _clock = _pair()
    for port in range(100):
        c = master.schedule(6, C, 2000 + port, VIP, 80)
        assert c is not None
        master.tcp_packet(c, DIR_INPUT, TCP_SYN)
    assert sm.due(flush=True) == []


def test_backup_table_stays_within_max_connections() -> None:
    """A master with more established entries than the backup's table holds: the backup keeps
    max_connections of them, counts the rest in ``full`` and still updates the ones it has."""
    master, _, sm, _clock = _pair()
    backup = Director(master.table.__class__(), clock=_clock, max_connections=10)
    key = add_service(backup)
    add_dest(backup, key, "192.168.168.11", fwd=ForwardingMethod.DROUTE)
    add_dest(backup, key, "192.168.168.12", fwd=ForwardingMethod.DROUTE)
    conns = []
    for i in range(25):
        c = master.schedule(6, C, 41000 + i, VIP, 80)
        assert c is not None
        master.tcp_packet(c, DIR_INPUT, TCP_ACK)
        conns.append(c)
    stats = _deliver(sm, backup)
    assert (stats.created, stats.full) == (10, 15)
    assert backup.connection_count == 10
    master.tcp_packet(conns[0], DIR_INPUT, TCP_FIN | TCP_ACK)
    stats = _deliver(sm, backup)
    assert stats.updated == 1 and backup.connection_count == 10
    twin = backup.lookup(6, C, 41000, VIP, 80)
    assert twin is not None and twin.state_name == "FIN_WAIT"


def test_backup_gives_half_open_entries_up_for_synced_ones() -> None:
    master, _, sm, clock = _pair()
    backup = Director(master.table.__class__(), clock=clock, max_connections=5)
    key = add_service(backup)
    add_dest(backup, key, "192.168.168.11", fwd=ForwardingMethod.DROUTE)
    add_dest(backup, key, "192.168.168.12", fwd=ForwardingMethod.DROUTE)
    for i in range(5):  # the backup's own half-open entries fill its table
        assert backup.schedule(6, ip(f"198.51.100.{i + 1}"), 1000, VIP, 80) is not None
    c = master.schedule(6, C, 42000, VIP, 80)
    assert c is not None
    master.tcp_packet(c, DIR_INPUT, TCP_ACK)
    stats = _deliver(sm, backup)
    assert (stats.created, stats.full) == (1, 0) and backup.connection_count == 5
    assert backup.defense.evicted_entries == 1


def test_half_open_entries_learned_from_the_master_are_drop_entrys_too() -> None:
    """A backup's SYN_RECV entries from sync messages are half-open entries of its table like
    any other: a new connection on a full table takes the oldest one's place, as the kernel's
    drop_entry sees every half-open entry whatever made it."""
    backup, _clock = make_director(max_connections=3)
    key = add_service(backup)
    add_dest(backup, key, "192.168.168.11", fwd=ForwardingMethod.DROUTE)
    for i in range(3):
        assert sync.apply(backup, sync.SyncConn(6, ip(f"198.51.100.{i + 1}"), 1000, VIP, 80,
                                                ip("192.168.168.11"), 80, 0x2, 3, 60)) is not None
    assert backup.connection_count == 3 and len(backup.defense.half_open) == 3
    assert backup.schedule(6, C, 43000, VIP, 80) is not None  # the oldest learned one gives way
    assert backup.defense.evicted_entries == 1 and backup.connection_count == 3
    assert backup.lookup(6, ip("198.51.100.1"), 1000, VIP, 80) is None
