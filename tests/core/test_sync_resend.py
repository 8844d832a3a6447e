"""Connection sync, sans-IO: when a master sends an entry *again* (``ip_vs_sync_conn_needed``),
by packet count (``sync_threshold``/``sync_period``) or by time (``sync_refresh_period``,
``sync_retries``), with packets that come one by one or in batches (the packet plane's C flows
and the XDP plane hand their counters back once a second); and the sync_* settings, checked as
the kernel's sysctl handlers check them."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylvs.core import sync
from pylvs.core.api import IPVSError
from pylvs.core.conntrack import Connection
from pylvs.core.director import DIR_INPUT, DIR_OUTPUT, TCP_ACK, Director
from pylvs.core.model import ForwardingMethod, Protocol

from .test_director_support import FakeClock, add_dest, add_service, ip, make_director

C = ip("10.0.0.2")
VIP = ip("10.0.0.100")


def _master(settings: sync.SyncSettings | None = None, persistence: int = 0,
            proto: Protocol = Protocol.TCP) -> tuple[Director, sync.SyncMaster, FakeClock]:
    d, clock = make_director()
    port = 80 if proto == Protocol.TCP else 53
    key = add_service(d, port=port, proto=proto, persistence=persistence)
    add_dest(d, key, "192.168.168.11", port, fwd=ForwardingMethod.DROUTE)
    sm = sync.SyncMaster(syncid=1, maxlen=1472, clock=clock,
                         settings=settings or sync.SyncSettings())
    d.sync_hook = sm.want
    d.sync_packets = sm.packets
    return d, sm, clock


def _established(d: Director, cport: int = 40000) -> Connection:
    conn = d.schedule(6, C, cport, VIP, 80)
    assert conn is not None
    d.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert conn.state_name == "ESTABLISHED"
    return conn


def _resends(d: Director, sm: sync.SyncMaster, conn: Connection, packets: int,
             replies: bool = False) -> list[int]:
    """Feed ``packets`` incoming packets one by one: the packet numbers after which the entry
    was queued (each sent at once)."""
    sm.due(flush=True)
    got = []
    for p in range(1, packets + 1):
        d.account(conn, DIR_INPUT, 1, 60)
        if replies:
            d.account(conn, DIR_OUTPUT, 1, 60)
        if sm.pending:
            got.append(p)
            sm.due(flush=True)
    return got


def _kernel_sends(pkts: range, threshold: int, period: int) -> list[int]:
    """The packet numbers at which the kernel's test, made on every incoming packet, is true
    (ip_vs_sync_conn_needed without sync_refresh_period)."""
    if period > 0:
        return [p for p in pkts if p % period == threshold]
    return [p for p in pkts if p == threshold]


# ---- the packet rule -----------------------------------------------------------------------

@given(threshold=st.integers(0, 60), period=st.integers(0, 60),
       batches=st.lists(st.integers(1, 130), min_size=1, max_size=30))
def test_a_batch_is_due_when_some_packet_of_it_would_have_been(
    threshold: int, period: int, batches: list[int],
) -> None:
    """``crossed`` on a batch is the kernel's per-packet test on any packet of the batch."""
    if period and threshold >= period:
        threshold %= period
    before = 0
    for n in batches:
        after = before + n
        want = bool(_kernel_sends(range(before + 1, after + 1), threshold, period))
        assert sync.crossed(before, after, threshold, period) is want
        before = after


def test_one_packet_at_a_time_sends_at_3_53_103_by_default() -> None:
    d, sm, _ = _master()
    conn = _established(d)
    # replies are not counted: in_pkts is client->server
    sent_at = _resends(d, sm, conn, 160, replies=True)
    assert sent_at == _kernel_sends(range(1, 161), 3, 50) == [3, 53, 103, 153]
    assert conn.in_pkts == 160 and sm.resent_entries == 4


def test_the_one_call_packet_path_counts_too() -> None:
    d, sm, _ = _master()
    conn = _established(d)
    sm.due(flush=True)
    for _ in range(3):
        d.packet(conn, DIR_INPUT, TCP_ACK, 60)
        d.packet(conn, DIR_OUTPUT, TCP_ACK, 60)
    assert conn.in_pkts == 3 and len(sm.pending) == 1


def test_counters_handed_back_once_a_second_resend_once_per_boundary_crossed() -> None:
    """The packet plane's C path: 40 packets a second come back as one batch."""
    d, sm, clock = _master()
    conn = _established(d)
    sm.due(flush=True)
    sends = []
    for _ in range(7):  # a second each
        clock.advance(1.0)
        d.account(conn, DIR_INPUT, 40, 40 * 60)
        sends.append(len(sm.pending))
        sm.due(flush=True)
    # counts 40, 80 (53), 120 (103), 160 (153), 200, 240 (203), 280 (253)
    assert sends == [1, 1, 1, 1, 0, 1, 1]
    # one batch crossing several boundaries sends the entry once
    d.account(conn, DIR_INPUT, 500, 500 * 60)
    assert len(sm.pending) == 1


def test_sync_period_0_sends_once_at_the_threshold() -> None:
    d, sm, _ = _master(sync.SyncSettings(sync_threshold=3, sync_period=0))
    conn = _established(d)
    assert _resends(d, sm, conn, 120) == [3]


def test_only_synced_states_are_sent_again() -> None:
    d, sm, _ = _master(sync.SyncSettings(sync_threshold=1, sync_period=2))
    conn = d.schedule(6, C, 40001, VIP, 80)
    assert conn is not None and conn.state_name == "SYN_RECV"
    for _ in range(10):
        d.account(conn, DIR_INPUT, 1, 60)
    assert sm.pending == [] and conn.in_pkts == 10


def test_udp_entries_are_sent_again_by_count() -> None:
    d, sm, _ = _master(proto=Protocol.UDP)
    conn = d.schedule(17, C, 5000, VIP, 53)
    assert conn is not None
    assert len(sm.pending) == 1  # created
    assert _resends(d, sm, conn, 60) == [3, 53]


def test_a_template_goes_with_every_packet_of_its_connections() -> None:
    """The kernel's version 1 checks the controller after each entry, and a template is not
    held to the packet threshold: with the defaults it goes whenever its entries have packets."""
    d, sm, _ = _master(persistence=300)
    conn = _established(d)
    sm.due(flush=True)
    d.account(conn, DIR_INPUT, 1, 60)
    (tpl,) = sm.pending
    assert tpl.template and tpl.cport == 0
    sm.due(flush=True)
    d.account(conn, DIR_INPUT, 2, 120)  # packet 3: the entry, then its template
    assert [e.template for e in sm.pending] == [False, True]
    assert conn.control is not None and conn.control.in_pkts == 3


# ---- the time rule -------------------------------------------------------------------------

def _sends_by_time(settings: sync.SyncSettings, seconds: int, proto: int = 6) -> list[int]:
    """Seconds (of one packet per second) at which the entry is sent again."""
    if proto == 6:
        d, sm, clock = _master(settings)
        conn = _established(d)
    else:
        d, sm, clock = _master(settings, proto=Protocol.UDP)
        c = d.schedule(17, C, 5000, VIP, 53)
        assert c is not None
        conn = c
    sm.due(flush=True)
    start = clock.now
    got = []
    for t in range(1, seconds + 1):
        clock.now = start + t
        d.account(conn, DIR_INPUT, 1, 60)
        if sm.pending:
            got.append(t)
            sm.due(flush=True)
    return got


def test_refresh_period_resends_by_time_not_by_count() -> None:
    # sync_threshold "0 0": time alone decides; the entry's timer (900 s) has moved by the
    # period since the last send
    s = sync.SyncSettings(sync_threshold=0, sync_period=0, sync_refresh_period=10)
    assert _sends_by_time(s, 35) == [10, 20, 30]


def test_retries_go_every_eighth_of_the_period() -> None:
    """sync_retries 2: after each send two more, each at least period/8 (1.25 s) after the one
    before, then the next a full period after the last. The retry count lives in the low two
    bits of sync_endtime (ms here, jiffies in the kernel), so the full period after a retry
    is short by 2 ms of coming due: with a packet a second, it goes a second later."""
    s = sync.SyncSettings(sync_threshold=0, sync_period=0, sync_refresh_period=10,
                          sync_retries=2)
    assert _sends_by_time(s, 31) == [2, 4, 15, 17, 19, 30]


def test_refresh_is_bounded_by_half_the_timeout_and_10_s() -> None:
    # UDP's timeout is 300 s: a 200 s refresh period becomes 150 s
    s = sync.SyncSettings(sync_threshold=0, sync_period=0, sync_refresh_period=200)
    assert _sends_by_time(s, 400, proto=17) == [150, 300]


def test_refresh_and_count_together_need_both() -> None:
    """With sync_period > 0 too, the kernel tests both: the period has passed and the count
    is at a sync point."""
    s = sync.SyncSettings(sync_threshold=3, sync_period=5, sync_refresh_period=10)
    # counts 3, 8, 13, ... reached at second 3, 8, 13, ...; time allows from 10 s after a send
    assert _sends_by_time(s, 40) == [13, 23, 33]


def test_a_state_change_restarts_the_refresh_period() -> None:
    s = sync.SyncSettings(sync_threshold=0, sync_period=0, sync_refresh_period=10)
    d, sm, clock = _master(s)
    conn = _established(d)
    sm.due(flush=True)
    clock.advance(9)
    d.account(conn, DIR_INPUT, 1, 60)
    assert sm.pending == []
    sync.mark_sent(conn, clock())  # as want() does on a state change
    clock.advance(9)
    d.account(conn, DIR_INPUT, 1, 60)
    assert sm.pending == []
    clock.advance(1)
    d.account(conn, DIR_INPUT, 1, 60)
    assert len(sm.pending) == 1


# ---- the settings --------------------------------------------------------------------------

def test_settings_have_the_kernels_defaults_beside_the_others() -> None:
    d, _ = make_director()
    s = sync.SyncSettings(d.table.sysctl_provider)
    d.table.sysctl_provider = s
    got = d.table.get_sysctl()
    assert {k: got[k] for k in sync.SYNC_SYSCTL_NAMES} == {
        "sync_threshold": [3, 50], "sync_refresh_period": 0, "sync_retries": 0,
        "sync_qlen_max": sync.DEFAULT_QLEN_MAX, "sync_sock_size": 0, "sync_ports": 1}
    assert "sync_period" not in got  # no kernel file of that name: the pair is one setting
    assert "drop_entry" in got and got["sloppy_tcp"] == 0
    d.table.set_sysctl({"sync_threshold": "0 0", "sync_refresh_period": 5,
                        "drop_entry": 3, "sync_ports": 4})
    got = d.table.get_sysctl()
    assert (got["sync_threshold"], got["sync_refresh_period"], got["drop_entry"],
            got["sync_ports"]) == ([0, 0], 5, 3, 4)
    assert (s.sync_threshold, s.sync_period) == (0, 0)


@pytest.mark.parametrize(("written", "pair"), [
    ("3 50", [3, 50]), ("7\t90", [7, 90]), ("  1   2 ", [1, 2]), ([4, 8], [4, 8]),
    ([9], [9, 50]), (9, [9, 50]), ("9", [9, 50]), ("5 0", [5, 0]), ("0 0", [0, 0]),
])
def test_sync_threshold_is_written_as_the_kernels_file_is(written: object,
                                                          pair: list[int]) -> None:
    """Two integers set both; one sets the threshold and keeps the period (the kernel copies
    the old pair before proc_dointvec reads what was written)."""
    s = sync.SyncSettings()
    s.set_sysctl({"sync_threshold": written})
    assert s.get_sysctl()["sync_threshold"] == pair


@pytest.mark.parametrize(("values", "words"), [
    ({"sync_threshold": 50}, 'sync_threshold "50 50": needs 0 <= threshold < period'),
    ({"sync_threshold": "50 50"}, 'sync_threshold "50 50"'),
    ({"sync_threshold": [60, 50]}, 'sync_threshold "60 50"'),
    ({"sync_threshold": "-1 50"}, 'sync_threshold "-1 50"'),
    ({"sync_threshold": "3 -1"}, 'sync_threshold "3 -1"'),
    ({"sync_threshold": "3 50 7"}, "one or two integers are required"),
    ({"sync_threshold": ""}, "one or two integers are required"),
    ({"sync_threshold": [3, "50"]}, "one or two integers are required"),
    ({"sync_threshold": [True, 50]}, "one or two integers are required"),
    ({"sync_threshold": "3,50"}, "sync_threshold '3,50': integers are required"),
    ({"sync_threshold": "3 50", "sync_period": 9}, "holds the period already"),
    ({"sync_period": 3}, 'sync_threshold "3 3"'),
    ({"sync_retries": 4}, "sync_retries: must be 0 to 3"),
    ({"sync_ports": 3}, "sync_ports: must be a power of 2"),
    ({"sync_ports": 0}, "sync_ports: must be a power of 2"),
    ({"sync_refresh_period": -1}, "sync_refresh_period"),
    ({"sync_sock_size": -5}, "sync_sock_size"),
    ({"sync_retries": "2"}, "sync_retries: an integer is required"),
    ({"sync_retries": True}, "sync_retries: an integer is required"),
    ({"sync_retries": 1, "drop_entry": 9}, "drop_entry"),
    ({"sync_threshold": "0 0", "drop_entry": 9}, "drop_entry"),
])
def test_a_bad_value_changes_nothing(values: dict[str, object], words: str) -> None:
    d, _ = make_director()
    s = sync.SyncSettings(d.table.sysctl_provider)
    d.table.sysctl_provider = s
    before = d.table.get_sysctl()
    with pytest.raises(IPVSError) as exc:
        d.table.set_sysctl(values)
    assert exc.value.errno == errno.EINVAL and words in str(exc.value)
    assert "\n" not in str(exc.value)
    assert d.table.get_sysctl() == before


def test_old_clients_may_still_send_sync_period() -> None:
    """Before sync_threshold held both, pylvs named the period ``sync_period``: a client
    sending it alone or beside a one-value threshold still sets it, checked as a pair."""
    s = sync.SyncSettings()
    s.set_sysctl({"sync_threshold": 60, "sync_period": 100})  # fine together, not one by one
    assert s.get_sysctl()["sync_threshold"] == [60, 100]
    s.set_sysctl({"sync_threshold": 0, "sync_period": 0})  # the scale-out bench's re-send by time
    assert (s.sync_threshold, s.sync_period) == (0, 0)
    s.set_sysctl({"sync_period": 8})
    assert s.get_sysctl()["sync_threshold"] == [0, 8]
    with pytest.raises(IPVSError) as exc:
        s.set_sysctl({"no_such": 1})
    assert exc.value.errno == errno.ENOENT


def test_sync_qlen_max_drops_what_does_not_fit() -> None:
    d, sm, _ = _master(sync.SyncSettings(sync_qlen_max=0))
    _established(d)
    assert sm.due(flush=True) == [] and sm.dropped_messages == 1 and sm.sent_entries == 0
