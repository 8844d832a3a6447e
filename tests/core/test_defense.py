"""IPVS's flood defences in the core: drop_entry, drop_packet, secure_tcp and amemthresh with the
kernel's modes (0 off, 1 automatic and idle, 2 automatic and on, 3 always on), the half-open
eviction that keeps a full table open to new clients, and the settings' checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.api import IPVSError
from pylvs.core.conntrack import (
    DIR_INPUT,
    DIR_OUTPUT,
    TCP_ACK,
    TCP_S_ESTABLISHED,
    TCP_S_SYN_RECV,
    TCP_SYN,
)
from pylvs.core.defense import Defense
from pylvs.core.director import Director

from .test_director_support import FakeClock, add_dest, add_service, ip, make_director

VIP = ip("10.0.0.100")


def _director(max_connections: int = 100) -> tuple[Director, FakeClock]:
    d, clock = make_director(max_connections=max_connections)
    key = add_service(d)
    add_dest(d, key, "192.168.168.11")
    return d, clock


def _spoofed(d: Director, n: int, start: int = 0) -> int:
    """``n`` SYNs from addresses that never answer; how many got an entry."""
    made = 0
    for i in range(start, start + n):
        if d.schedule(6, ip(f"198.51.{100 + i // 60000 % 50}.{i % 250 + 1}"),
                      1024 + i % 60000, VIP, 80) is not None:
            made += 1
    return made


def _legit(d: Director, port: int) -> bool:
    """A client that completes its handshake through the NAT director: SYN, the real
    server's SYN-ACK, the client's ACK, the server's first reply (under secure_tcp the
    client's ACK alone does not establish: tcp_states_dos waits for the server)."""
    c = d.schedule(6, ip("203.0.113.7"), port, VIP, 80)
    if c is None:
        return False
    d.tcp_packet(c, DIR_OUTPUT, TCP_SYN | TCP_ACK)
    d.tcp_packet(c, DIR_INPUT, TCP_ACK)
    d.tcp_packet(c, DIR_OUTPUT, TCP_ACK)
    return c.state == TCP_S_ESTABLISHED


# ---- the levels, as update_defense_level moves them ------------------------------------------

def test_automatic_modes_arm_below_amemthresh_free_entries_and_disarm_above() -> None:
    df = Defense(1000)
    assert df.amemthresh == 125  # an eighth of the table, in entries
    assert df.update(available=500) is None
    assert (df.drop_entry, df.secure_tcp, df.dropentry, df.secure) == (1, 1, False, False)
    assert df.update(available=100) is True  # the secure tables come in
    assert (df.drop_entry, df.secure_tcp, df.dropentry, df.secure) == (2, 2, True, True)
    assert df.update(available=50) is None  # no change to report
    assert df.update(available=200) is False
    assert (df.drop_entry, df.secure_tcp, df.dropentry, df.secure) == (1, 1, False, False)


def test_mode_0_never_arms_and_mode_3_always_is() -> None:
    df = Defense(1000)
    df.set_sysctl({"drop_entry": 0, "secure_tcp": 3, "drop_packet": 3, "am_droprate": 4})
    df.update(available=0)
    assert (df.drop_entry, df.dropentry) == (0, False)
    df.update(available=1000)
    assert (df.secure_tcp, df.secure, df.drop_rate) == (3, True, 4)
    # as ip_vs_todrop: mode 3 leaves the counter at 0, so the first packet goes, then 1 in 4
    assert [df.todrop() for _ in range(8)] == [True, False, False, False] * 2
    assert df.dropped_packets == 2


def test_drop_packet_rate_is_amemthresh_over_the_shortfall() -> None:
    df = Defense(1000)
    df.set_sysctl({"drop_packet": 1, "amemthresh": 100})
    df.update(available=50)  # 100 / (100 - 50): one packet in two
    assert (df.drop_packet, df.drop_rate) == (2, 2)
    df.update(available=0)  # nothing free: every packet
    assert df.drop_rate == 1 and all(df.todrop() for _ in range(5))
    df.update(available=100)
    assert (df.drop_packet, df.drop_rate) == (1, 0) and not df.todrop()


@given(
    modes=st.tuples(st.sampled_from((0, 1, 2, 3)), st.sampled_from((0, 1, 2, 3)),
                    st.sampled_from((0, 1, 2, 3))),
    thresh=st.integers(0, 2000),
    avail=st.lists(st.integers(-10, 3000), min_size=1, max_size=20),
)
def test_levels_follow_the_kernels_rules(modes: tuple[int, int, int], thresh: int,
                                         avail: list[int]) -> None:
    """For any settings and any sequence of free-entry counts: 0 and 3 never move, 1 and 2
    are 2 exactly while fewer than amemthresh entries are free, drop_rate is 0 unless the
    packet defence is on, and the secure switch reports every change once."""
    df = Defense(1000)
    df.set_sysctl({"drop_entry": modes[0], "drop_packet": modes[1], "secure_tcp": modes[2],
                   "amemthresh": thresh})
    secure = df.secure
    for a in avail:
        change = df.update(a)
        nomem = a < thresh
        for got, was in zip((df.drop_entry, df.drop_packet, df.secure_tcp), modes, strict=True):
            assert got == (was if was in (0, 3) else (2 if nomem else 1))
        assert df.dropentry == (modes[0] == 3 or (modes[0] in (1, 2) and nomem))
        packet_on = modes[1] == 3 or (modes[1] in (1, 2) and nomem)
        assert (df.drop_rate > 0) == (packet_on and (modes[1] == 3 or thresh > 0))
        if change is not None:
            assert change != secure
            secure = change
        assert df.secure == secure == (df.secure_tcp >= 2)


# ---- in the Director -------------------------------------------------------------------------

def test_a_full_table_lets_new_clients_in_by_evicting_the_oldest_half_open_entries() -> None:
    d, _ = _director(100)
    assert _spoofed(d, 100) == 100
    established = [_legit(d, 5000 + i) for i in range(20)]
    assert all(established)
    assert d.connection_count == 100 and d.refused_full == 0
    assert d.defense.evicted_entries == 20
    # the flood goes on: established entries are never evicted, only half-open ones
    assert _spoofed(d, 500, start=100) == 500
    assert d.connection_count == 100
    states = [c.state for c in d.conns.entries()]
    assert states.count(TCP_S_ESTABLISHED) == 20 and states.count(TCP_S_SYN_RECV) == 80


def test_with_nothing_half_open_a_full_table_still_refuses() -> None:
    d, _ = _director(10)
    assert all(_legit(d, 100 + i) for i in range(10))
    assert not _legit(d, 200)
    assert d.refused_full == 1 and d.defense.evicted_entries == 0


def test_drop_entry_drops_a_share_of_half_open_entries_each_second_under_pressure() -> None:
    d, clock = _director(1000)
    _spoofed(d, 990)
    clock.advance(1)
    d.tick()  # 10 free < 125: armed; 990 // 32 of the oldest dropped
    assert d.defense.drop_entry == 2 and d.defense.dropped_entries == 990 // 32
    assert d.secure_tcp  # the secure tables came in with it
    before = d.connection_count
    for _ in range(5):
        clock.advance(1)
        d.tick()
    assert d.connection_count < before


def test_secure_tcp_shortens_syn_recv_to_10_s_while_armed() -> None:
    d, clock = _director(100)
    d.defense.set_sysctl({"amemthresh": 50})
    _spoofed(d, 60)
    clock.advance(1)
    d.tick()
    assert d.secure_tcp
    c = d.schedule(6, ip("203.0.113.9"), 7, VIP, 80)
    assert c is not None and c.state == TCP_S_SYN_RECV and c.timeout == 10  # not 60
    clock.advance(200)
    d.tick()  # every spoofed entry expired: the level goes back down
    clock.advance(1)
    d.tick()
    assert not d.secure_tcp and d.defense.secure_tcp == 1


def test_drop_packet_drops_new_connections_only() -> None:
    d, _ = _director(100)
    c = d.schedule(6, ip("203.0.113.7"), 1, VIP, 80)
    assert c is not None
    d.defense.set_sysctl({"drop_packet": 3, "am_droprate": 2})
    made = [d.schedule(6, ip("203.0.113.8"), 10 + i, VIP, 80) for i in range(10)]
    assert sum(m is not None for m in made) == 5 and d.defense.dropped_packets == 5
    assert d.schedule(6, ip("203.0.113.7"), 1, VIP, 80) is c  # an existing entry is found


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(("spoof", "legit", "tick")), st.integers(1, 60)),
                    max_size=40),
       size=st.integers(5, 80))
def test_the_table_never_passes_max_connections_and_handshakes_get_in(
        ops: list[tuple[str, int]], size: int) -> None:
    """Any mix of floods, legitimate handshakes and time: the table stays within its size,
    its counts stay consistent, and a legitimate client is refused only when every entry is
    established (nothing half-open left to evict)."""
    d, clock = _director(size)
    port = 0
    for op, n in ops:
        if op == "spoof":
            _spoofed(d, n, start=port)
            port += n
        elif op == "legit":
            for _ in range(n):
                port += 1
                ok = _legit(d, port % 60000 + 1)
                if not ok:
                    assert all(c.state == TCP_S_ESTABLISHED for c in d.conns.entries())
        else:
            clock.advance(n)
            d.tick()
        assert d.connection_count <= size
        assert d.connection_count == sum(1 for _ in d.conns.entries())
        rs = next(iter(d.table.services())).destinations[0]
        assert rs.activeconns + rs.inactconns == d.connection_count


@pytest.mark.parametrize(("values", "message"), [
    ({"drop_entry": 4}, "drop_entry: must be 0, 1, 2 or 3"),
    ({"secure_tcp": -1}, "secure_tcp: must be 0, 1, 2 or 3"),
    ({"amemthresh": -5}, "amemthresh: must be 0 or more"),
    ({"drop_packet": "1"}, "drop_packet: an integer is required"),
    ({"drop_packet": True}, "drop_packet: an integer is required"),
    ({"max_connections": 0}, "max_connections: must be 1 or more"),
    ({"conn_reuse_mode": 1}, "unknown setting 'conn_reuse_mode'"),
])
def test_bad_settings_are_refused_and_change_nothing(values: dict[str, object],
                                                     message: str) -> None:
    d, _ = _director(100)
    before = d.table.get_sysctl()
    with pytest.raises(IPVSError) as exc:
        d.table.set_sysctl({"drop_entry": 3, **values})  # a good one first: not applied either
    assert message in str(exc.value)
    assert d.table.get_sysctl() == before


def test_settings_read_and_write_through_the_table() -> None:
    d, _ = _director(100)
    assert d.table.get_sysctl() == {"am_droprate": 10, "amemthresh": 12, "drop_entry": 1,
                                    "drop_packet": 0, "max_connections": 100, "secure_tcp": 1,
                                    "sloppy_sctp": 0, "sloppy_tcp": 0}
    d.table.set_sysctl({"max_connections": 4000, "secure_tcp": 3})
    assert d.max_connections == 4000 and d.table.get_sysctl()["amemthresh"] == 500
    assert d.secure_tcp  # applied at once, as the kernel's sysctl handler does


def test_memory_follows_the_table_not_the_flood() -> None:
    """Entries evicted for new ones go at once, as the kernel frees them: the timer wheel does
    not keep a flood's evicted entries until their (100 s) deadline."""
    d, clock = _director(max_connections=1000)
    assert _spoofed(d, 30_000) == 30_000  # each one took the place of an older one
    assert d.connection_count == 1000 and d.defense.evicted_entries == 29_000
    held = sum(len(b.conns) for b in d.conns.wheel.values())
    assert held <= 2 * 1000 + 1024 + 1, held
    # what is stored is still found and still expires
    assert d.lookup(6, ip("198.51.100.250"), 1024 + 29_999, VIP, 80) is not None
    clock.now += 200
    d.tick()
    assert d.connection_count == 0 and not d.conns.wheel
