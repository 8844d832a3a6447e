"""The collector's full passes on a timer (heap.py), and what that schedule relies on: a
connection table entry is freed by reference counting when it leaves, never by the collector."""

from __future__ import annotations

import gc
import ipaddress
from collections.abc import Iterator

import pytest

from pylvs.core.conntrack import Connection
from pylvs.core.director import Director
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
)
from pylvs.core.table import IPVSTable
from pylvs.dataplane.packet import codec
from pylvs.dataplane.packet.heap import FullCollections, collector_paused
from tests.dataplane.packet import test_forward as v4


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Only reference counting frees anything while a test runs."""
    gc.collect()
    with collector_paused():
        yield


def live_entries() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Connection)


def test_entries_that_leave_the_table_are_freed_without_the_collector(collector_off: None) -> None:
    clock = v4.Clock()
    table = IPVSTable()
    vip = ipaddress.ip_address(v4.VIP)
    plain = ServiceKey.inet(Protocol.TCP, vip, 80)
    sticky = ServiceKey.inet(Protocol.TCP, vip, 443)
    udp = ServiceKey.inet(Protocol.UDP, vip, 53)
    table.add_service(ServiceSpec(plain, "rr"))
    table.add_service(ServiceSpec(sticky, "wlc", ServiceFlags.PERSISTENT, timeout=300))
    table.add_service(ServiceSpec(udp, "rr"))
    for key in (plain, sticky, udp):
        for rip in (v4.RS1, v4.RS2):
            table.add_dest(key, DestSpec(ipaddress.ip_address(rip), 0, ForwardingMethod.DROUTE))
    d = Director(table, clock=clock, max_connections=100_000)
    before = live_entries()
    for i in range(3000):
        caddr = bytes([10, 1, i >> 8, i & 0xFF])
        for proto, port in ((6, 80), (6, 443), (17, 53)):
            conn = d.schedule(proto, caddr, 40000, v4.VIP, port)
            assert conn is not None
            if proto == 6 and i % 2:  # half of them established, some of those closed
                d.tcp_packet(conn, 0, codec.TCP_ACK)
                if i % 3 == 0:
                    d.tcp_packet(conn, 0, codec.TCP_FIN | codec.TCP_ACK)
        if i % 5 == 0:  # a new SYN replacing a closed entry (conn_reuse_mode)
            d.schedule(6, caddr, 40000, v4.VIP, 80)
    del conn
    assert live_entries() - before >= 9000
    # a deleted server's entries go at their next packet (expire_nodest_conn)
    d.expire_nodest_conn = True
    table.del_dest(plain, ipaddress.ip_address(v4.RS1), 0)
    for i in range(3000):
        d.lookup(6, bytes([10, 1, i >> 8, i & 0xFF]), 40000, v4.VIP, 80)
    for _ in range(20):  # past every timeout (15 min established, 5 min templates)
        clock.t += 120
        d.tick()
    assert d.connection_count == 0
    assert live_entries() == before


def test_the_full_pass_waits_for_its_time_and_frees_an_old_cycle() -> None:
    clock = v4.Clock()
    saved = gc.get_threshold()
    fc = FullCollections(every=60, clock=clock)
    fc.start()
    try:
        assert gc.get_threshold()[:2] == saved[:2] and gc.get_threshold()[2] > 10**9

        class Node:
            pass

        a, b = Node(), Node()
        a.peer, b.peer = b, a  # type: ignore[attr-defined]
        gc.collect(1)  # both survive into the oldest generation, where only a full pass looks
        import weakref
        gone = weakref.ref(a)
        del a, b
        for _ in range(10):
            gc.collect(1)  # the younger generations' passes never free it
        assert gone() is not None
        clock.t += 59
        fc.tick()
        assert gone() is not None and fc.passes == 0
        clock.t += 1
        fc.tick()
        assert gone() is None and fc.passes == 1
        clock.t += 30
        fc.tick()
        assert fc.passes == 1  # the next one a whole period later
    finally:
        fc.stop()
    assert gc.get_threshold() == saved


def test_planes_share_the_schedule_and_the_last_one_puts_cpython_s_back() -> None:
    saved = gc.get_threshold()
    one, two = FullCollections(), FullCollections()
    one.start()
    two.start()
    one.start()  # twice: counted once
    one.stop()
    assert gc.get_threshold()[2] > 10**9
    two.stop()
    two.stop()
    assert gc.get_threshold() == saved


def test_a_caller_holding_the_collector_off_is_not_overruled() -> None:
    clock = v4.Clock()
    fc = FullCollections(every=1, clock=clock)
    fc.start()
    try:
        with collector_paused():
            clock.t += 2
            fc.tick()
            assert fc.passes == 0 and not gc.isenabled()
    finally:
        fc.stop()
