"""sloppy_tcp / sloppy_sctp in the core: which packets of no known connection may open an entry
(the kernel's tcp_conn_schedule / sctp_conn_schedule gates), the state a mid-flow segment leaves
the new entry in, the settings through the table's sysctl interface, and why it matters with
several directors: with ``mh`` a director that never saw the SYN picks the same real server."""

from __future__ import annotations

import pytest

from pylvs.core.api import IPVSError
from pylvs.core.conntrack import (
    SCTP_CID_ABORT,
    SCTP_CID_INIT,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
)
from pylvs.core.director import Director

from .test_director_support import add_dest, add_service, ip, make_director

VIP = ip("10.0.0.100")
PSH = 0x08


def _director(scheduler: str = "rr", n: int = 1) -> Director:
    d, _ = make_director()
    key = add_service(d, scheduler=scheduler)
    for i in range(n):
        add_dest(d, key, f"192.168.168.{11 + i}")
    return d


def test_off_by_default_and_only_a_syn_opens() -> None:
    d = _director()
    s = d.sysctls
    assert d.table.get_sysctl()["sloppy_tcp"] == 0 and d.table.get_sysctl()["sloppy_sctp"] == 0
    assert s.tcp_opens(TCP_SYN)
    for flags in (TCP_ACK, TCP_ACK | PSH, TCP_FIN | TCP_ACK, TCP_RST, TCP_SYN | TCP_ACK, 0):
        assert not s.tcp_opens(flags), flags


def test_sloppy_tcp_opens_any_segment_but_a_reset() -> None:
    d = _director()
    d.table.set_sysctl({"sloppy_tcp": 1})
    s = d.sysctls
    for flags in (TCP_SYN, TCP_ACK, TCP_ACK | PSH, TCP_FIN | TCP_ACK, TCP_SYN | TCP_ACK, 0):
        assert s.tcp_opens(flags), flags
    assert not s.tcp_opens(TCP_RST) and not s.tcp_opens(TCP_RST | TCP_ACK)


def test_sctp_gate_follows_the_kernel() -> None:
    d = _director()
    s = d.sysctls
    assert s.sctp_opens(SCTP_CID_INIT) and not s.sctp_opens(0) and not s.sctp_opens(3)
    d.table.set_sysctl({"sloppy_sctp": 1})
    assert s.sctp_opens(0) and s.sctp_opens(3) and not s.sctp_opens(SCTP_CID_ABORT)


@pytest.mark.parametrize(("flags", "state", "active"), [
    (TCP_ACK, "ESTABLISHED", 1),
    (TCP_ACK | PSH, "ESTABLISHED", 1),
    (TCP_FIN | TCP_ACK, "CLOSE", 0),   # NONE + FIN: CLOSE, as tcp_states says (not TIME_WAIT)
    (TCP_SYN, "SYN_RECV", 1),
])
def test_a_mid_flow_segment_makes_an_entry_in_the_state_it_leads_to(
        flags: int, state: str, active: int) -> None:
    d = _director()
    d.table.set_sysctl({"sloppy_tcp": 1})
    c = d.schedule_sloppy(6, ip("203.0.113.7"), 40000, VIP, 80, flags)
    assert c is not None and c.state_name == state
    (entry,) = d.connection_entries()
    assert entry.state == state
    assert c.dest.activeconns == active and c.dest.inactconns == 1 - active
    # a later segment finds the entry; the table holds exactly one
    assert d.lookup(6, ip("203.0.113.7"), 40000, VIP, 80) is c and d.connection_count == 1


def test_schedule_sloppy_returns_an_existing_entry_unchanged() -> None:
    d = _director()
    first = d.schedule(6, ip("203.0.113.7"), 40000, VIP, 80)
    assert first is not None and first.state_name == "SYN_RECV"
    again = d.schedule_sloppy(6, ip("203.0.113.7"), 40000, VIP, 80, TCP_ACK)
    assert again is first and first.state_name == "SYN_RECV" and d.connection_count == 1


def test_settings_are_checked_before_any_is_set() -> None:
    d = _director()
    before = d.table.get_sysctl()
    for bad, message in (({"sloppy_tcp": 2}, "sloppy_tcp: must be 0 or 1"),
                         ({"sloppy_sctp": True}, "sloppy_sctp: must be 0 or 1"),
                         ({"sloppy_tcp": "1"}, "sloppy_tcp: must be 0 or 1"),
                         ({"sloppy_tcp": 1, "drop_entry": 9}, "drop_entry: must be 0, 1, 2 or 3"),
                         ({"sloppy_tcp": 1, "nonesuch": 1}, "unknown setting 'nonesuch'")):
        with pytest.raises(IPVSError) as exc:
            d.table.set_sysctl(bad)
        assert message in str(exc.value)
        assert d.table.get_sysctl() == before
    with pytest.raises(IPVSError) as exc:
        d.table.set_sysctl({"nonesuch": 1})
    assert "sloppy_tcp" in str(exc.value) and "drop_entry" in str(exc.value)
    d.table.set_sysctl({"sloppy_tcp": 1, "secure_tcp": 3, "sloppy_sctp": 1})
    now = d.table.get_sysctl()
    assert now["sloppy_tcp"] == 1 and now["sloppy_sctp"] == 1 and d.secure_tcp


def test_with_mh_another_director_picks_the_same_server_for_a_rehashed_flow() -> None:
    """Director A saw the SYN; ECMP then sends the flow's ACKs to director B (same config),
    which has no entry: with sloppy_tcp and mh it picks the same real server; without sloppy
    the segment may not open an entry."""
    a, b = _director("mh", 5), _director("mh", 5)
    b.table.set_sysctl({"sloppy_tcp": 1})
    moved = 0
    for i in range(500):
        caddr, cport = ip(f"203.0.{113 + i // 250}.{i % 250 + 1}"), 20000 + i
        ca = a.schedule(6, caddr, cport, VIP, 80)
        assert ca is not None
        assert b.sysctls.tcp_opens(TCP_ACK)
        cb = b.schedule_sloppy(6, caddr, cport, VIP, 80, TCP_ACK)
        assert cb is not None and cb.dest.addr == ca.dest.addr and cb.state_name == "ESTABLISHED"
        moved += 1
    assert moved == 500
    # with rr, the same rehash lands on whatever server is next: not the same one every time
    ra, rb = _director("rr", 5), _director("rr", 5)
    rb.table.set_sysctl({"sloppy_tcp": 1})
    rb.schedule(6, ip("198.51.100.1"), 1, VIP, 80)  # rb's rotation is one ahead of ra's
    same = 0
    for i in range(50):
        caddr = ip(f"203.0.113.{i + 1}")
        ca = ra.schedule(6, caddr, 30000, VIP, 80)
        cb = rb.schedule_sloppy(6, caddr, 30000, VIP, 80, TCP_ACK)
        assert ca is not None and cb is not None
        same += ca.dest.addr == cb.dest.addr
    assert same == 0
