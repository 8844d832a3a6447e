"""Kernel-made connections reach the core through the program's ``new_flows`` ring: run in the
kernel with BPF_PROG_TEST_RUN, N SYNs to an ``mh`` service make N records and N entries in the
core's table, each on the server the program sent the SYN to; records a full ring refuses are
counted by the program and the flows entered later from the flow map, so none is lost from the
table."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from pylvs.core.conntrack import TCP_S_ESTABLISHED, TCP_S_SYN_RECV
from pylvs.core.director import Director
from pylvs.core.schedulers.mh import HASH1, hashkey
from pylvs.core.table import IPVSTable
from pylvs.dataplane.xdp import flows as flows_module
from pylvs.dataplane.xdp.flows import HASH_CHECK, XdpFlowSink
from pylvs.dataplane.xdp.loader import XDP_TX, XdpProgram, XdpUnavailable
from pylvs.dataplane.xdp.maps import NEW_FLOW, NEW_SCHEDULED
from pylvs.dataplane.xdp.mhtables import MhMaps
from tests.dataplane.xdp.frames import TCP_ACK, TCP_SYN, packet
from tests.dataplane.xdp.test_mh import SERVERS4, SERVERS6, clients, director, fill, rs_mac

SMALL_RING = 4 * 4096
HELD = SMALL_RING // (NEW_FLOW.size + 8)  # records it holds (each with the ring's 8-byte header)


def load(ring_bytes: int | None = None) -> XdpProgram:
    try:
        return XdpProgram(ring_bytes=ring_bytes) if ring_bytes else XdpProgram()
    except XdpUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def small() -> Iterator[XdpProgram]:
    p = load(SMALL_RING)
    try:
        yield p
    finally:
        p.close()


def syns(prog: XdpProgram, d: Director, vip: str, family: int, n: int, seed: int,
         ack: bool = False) -> dict[tuple[bytes, int], bytes]:
    """SYNs of ``n`` new clients run through the program: each client's server (its MAC)."""
    picked = {}
    for caddr, cport in clients(family, n, seed):
        verdict, out = prog.test_run(packet(caddr, vip, cport, 80, flags=TCP_SYN))
        assert verdict == XDP_TX
        picked[(ipaddress.ip_address(caddr).packed, cport)] = out[:6]
        if ack:
            assert prog.test_run(packet(caddr, vip, cport, 80, flags=TCP_ACK))[0] == XDP_TX
    return picked


def check_table(d: Director, vip: str, picked: dict[tuple[bytes, int], bytes], state: int) -> None:
    vaddr = ipaddress.ip_address(vip).packed
    for (caddr, cport), mac in picked.items():
        conn = d.lookup(6, caddr, cport, vaddr, 80)
        assert conn is not None and rs_mac(conn.daddr) == mac and conn.state == state
    assert d.connection_count == len(picked)


@pytest.mark.parametrize("family,vip,servers,n", [(4, "192.168.168.100", SERVERS4, 10_000),
                                                  (6, "2001:db8::100", SERVERS6, 2_000)],
                         ids=["v4", "v6"])
def test_n_syns_make_n_records_and_n_entries_on_the_programs_servers(
        family: int, vip: str, servers: list[tuple[str, int]], n: int) -> None:
    prog = load()
    try:
        maps = MhMaps(prog)
        d, _key = director(vip, servers)
        assert fill(maps, d) == 1
        picked = syns(prog, d, vip, family, n, seed=family)
        sink = XdpFlowSink(prog, director=d)
        assert sink.import_new(budget=n + 1) == n and sink.drained
        check_table(d, vip, picked, TCP_S_SYN_RECV)
        assert sink.imported == n == sink.count and prog.stats()["mh_queue_full"] == 0
        assert sum(r.activeconns for r in next(iter(d.table.services())).destinations) == n
        assert prog.read_new_flows(NEW_FLOW.size, 10) == []  # the ring is empty now
        maps.clear()
    finally:
        prog.close()


def test_records_are_whole_and_in_order(small: XdpProgram) -> None:
    maps = MhMaps(small)
    d, _key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    picked = syns(small, d, "192.168.168.100", 4, 50, seed=1, ack=True)
    recs = [NEW_FLOW.unpack(r) for r in small.read_new_flows(NEW_FLOW.size, 1000)]
    assert len(recs) == 100  # a record when scheduled, one when the handshake's ACK passed
    scheduled = [r for r in recs if r[3] == NEW_SCHEDULED]
    assert len(scheduled) == 50
    for key, addr, port, _kind, reply, first_len, hash_in, h, ts in scheduled:
        caddr, cport = key[8:12], int.from_bytes(key[4:6], "big")
        assert rs_mac(addr[:4]) == picked[(caddr, cport)] and port == (80).to_bytes(2, "big")
        assert first_len == 20 + 20 + 5 and ts > 0 and reply == 0  # IP + TCP + "hello"; DR
        # the client's value as ip_vs_mh hashes it (no mh-port: the address) and its hash
        assert hash_in == int.from_bytes(caddr, "big") and h == hashkey(caddr, 0, HASH1)
    # each ACK record comes after its flow's record
    seen = set()
    for key, *_rest in recs:
        kind = _rest[2]
        assert kind == NEW_SCHEDULED or key in seen
        seen.add(key)
    maps.clear()


def test_a_full_ring_is_counted_and_the_flows_entered_from_the_flow_map(small: XdpProgram) -> None:
    maps = MhMaps(small)
    d, _key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    n = 300
    picked = syns(small, d, "192.168.168.100", 4, n, seed=2)
    lost = small.stats()["mh_queue_full"]
    held = HELD
    assert lost == n - held
    sink = XdpFlowSink(small, director=d)
    assert sink.import_new() == held
    assert d.connection_count == held  # the lost ones are not in the table yet
    sink.sync()  # the repair walk: kernel-made flows the sink does not know
    assert sink.repaired == lost and sink.imported == n
    check_table(d, "192.168.168.100", picked, TCP_S_SYN_RECV)
    sink.sync()
    assert sink.repaired == lost  # one walk per loss: nothing more to enter
    maps.clear()


def test_a_repaired_flow_that_forwarded_its_ack_is_established(small: XdpProgram) -> None:
    maps = MhMaps(small)
    d, _key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    held = HELD
    # fill the ring with records the core has not read yet, then one more connection whose
    # SYN and ACK records are both lost
    syns(small, d, "192.168.168.100", 4, held, seed=3)
    late = syns(small, d, "192.168.168.100", 4, 1, seed=4, ack=True)
    assert small.stats()["mh_queue_full"] == 2
    sink = XdpFlowSink(small, director=d)
    (caddr, cport), mac = next(iter(late.items()))
    dest = next(r for r in next(iter(d.table.services())).destinations
                if rs_mac(r.addr_packed) == mac)
    before = dest.stats.inpkts
    sink.sync()
    conn = d.lookup(6, caddr, cport, ipaddress.ip_address("192.168.168.100").packed, 80)
    assert conn is not None and conn.dest is dest and conn.state == TCP_S_ESTABLISHED
    # the SYNs of the ring's records count one each; the repaired flow its SYN and ACK
    ring_syns = sum(1 for c in d.conns.conns.values() if c.dest is dest) - 1
    assert dest.stats.inpkts - before == ring_syns + 2
    maps.clear()


def test_a_sync_reads_every_flow_across_batches() -> None:
    prog = load()
    try:
        maps = MhMaps(prog)
        d, _key = director("192.168.168.100", SERVERS4)
        fill(maps, d)
        n = 10_000  # more than one batch lookup's worth
        picked = syns(prog, d, "192.168.168.100", 4, n, seed=5)
        sink = XdpFlowSink(prog, director=d)
        assert sink.import_new(budget=n + 1) == n
        assert sink.sync() == []  # nothing forwarded since the SYNs
        acked = list(picked)[::2]
        for caddr, cport in acked:
            frame = packet(str(ipaddress.ip_address(caddr)), "192.168.168.100", cport, 80,
                           flags=TCP_ACK, payload=b"x" * 10)
            assert prog.test_run(frame)[0] == XDP_TX
        rows = sink.sync()
        assert len(rows) == len(acked) and all(r[2] == 1 and r[3] == 50 for r in rows)
        vaddr = ipaddress.ip_address("192.168.168.100").packed
        assert {id(r[0]) for r in rows} == {id(d.lookup(6, c, p, vaddr, 80)) for c, p in acked}
        assert sink.sync() == [] and sink.repaired == 0
        maps.clear()
    finally:
        prog.close()


def test_a_wrong_hash_from_the_program_stops_their_use(small: XdpProgram) -> None:
    sink = XdpFlowSink(small, director=Director(IPVSTable()))

    def right(v: int) -> int:
        return hashkey(v.to_bytes(4, "big"), 0, HASH1)

    for v in range(1, HASH_CHECK):  # unchecked ones are taken as they come
        sink._learn_hash(v, right(v))
    assert sink.trust_hash
    sink._learn_hash(12345, right(12345) ^ 1)  # the checked one is wrong
    assert not sink.trust_hash and sink.hash_mismatch == 1


def test_lost_records_beyond_a_ticks_share_are_entered_by_the_next_ticks(
        small: XdpProgram, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows_module, "REPAIR_LIMIT", 50)
    maps = MhMaps(small)
    d, _key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    picked = syns(small, d, "192.168.168.100", 4, 300, seed=6)
    lost = small.stats()["mh_queue_full"]
    assert lost == 300 - HELD > 100
    sink = XdpFlowSink(small, director=d)
    sink.import_new()
    entered = []
    for _ in range(4):  # no packet moves meanwhile: the flows are older than every walk
        sink.sync()
        entered.append(sink.repaired)
    assert entered == [50, 100, lost, lost]
    check_table(d, "192.168.168.100", picked, TCP_S_SYN_RECV)
    maps.clear()
