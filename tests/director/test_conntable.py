"""The connection table a clean stop saves and the next start takes back (sans-IO part):
entries bound to the same real servers with the same counts, expiry less the downtime,
templates linked again, the file read once, a bad or stale one refused whole."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from pylvs.core.conntrack import DIR_INPUT, DIR_OUTPUT, TCP_ACK, TCP_FIN, TCP_SYN
from pylvs.core.director import Director
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    RealServer,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
)
from pylvs.core.table import IPVSTable
from pylvs.director import conntable

VIP = "10.0.0.100"
RIPS = ("10.0.1.1", "10.0.1.2")


class Clock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def director(fwd: ForwardingMethod = ForwardingMethod.DROUTE, persistence: int = 0,
             proto: Protocol = Protocol.TCP, rips: tuple[str, ...] = RIPS,
             ) -> tuple[Director, Clock, ServiceKey]:
    clock = Clock()
    d = Director(IPVSTable(), clock=clock)
    key = ServiceKey.inet(proto, VIP, 80)
    flags = ServiceFlags.PERSISTENT if persistence else ServiceFlags.NONE
    d.table.add_service(ServiceSpec(key, "rr", flags, persistence))
    for rip in rips:
        d.table.add_dest(key, DestSpec(ipaddress.ip_address(rip), 80, fwd, 1))
    return d, clock, key


def dests(d: Director, key: ServiceKey) -> dict[str, RealServer]:
    svc = d.table.lookup(key)
    assert svc is not None
    return {str(r.addr): r for r in svc.destinations}


def counts(d: Director, key: ServiceKey) -> dict[str, tuple[int, int, int]]:
    return {a: (r.activeconns, r.inactconns, r.persistconns) for a, r in dests(d, key).items()}


def established(d: Director, client: str, cport: int, nat: bool = False) -> str:
    """A TCP connection through ``d`` up to ESTABLISHED; the real server it was given."""
    c = d.schedule(6, ip(client), cport, ip(VIP), 80)
    assert c is not None
    if nat:
        d.tcp_packet(c, DIR_OUTPUT, TCP_SYN | TCP_ACK)
    d.tcp_packet(c, DIR_INPUT, TCP_ACK)
    assert c.state_name == "ESTABLISHED"
    return str(c.dest.addr)


def where(d: Director, client: str, cport: int) -> tuple[str, str, float] | None:
    c = d.lookup(6, ip(client), cport, ip(VIP), 80)
    return None if c is None else (str(c.dest.addr), c.state_name, c.deadline - d.clock())


def roundtrip(old: Director, new: Director, tmp_path: Path, down: float = 0.0,
              ) -> conntable.Restored:
    path = str(tmp_path / "ipvsadm.rules.connections")
    assert conntable.save(old, path, 10_000.0) == old.connection_count
    restored = conntable.restore(new, path, 10_000.0 + down)
    assert restored is not None
    assert not Path(path).exists(), "the file is read once and deleted"
    return restored


@pytest.mark.parametrize("fwd", [ForwardingMethod.DROUTE, ForwardingMethod.MASQ])
def test_entries_come_back_on_their_real_servers_with_their_counts(
        tmp_path: Path, fwd: ForwardingMethod) -> None:
    old, clock, key = director(fwd)
    nat = fwd == ForwardingMethod.MASQ
    given = {p: established(old, "10.9.0.1", p, nat) for p in (40001, 40002, 40003)}
    half = old.schedule(6, ip("10.9.0.2"), 41000, ip(VIP), 80)  # SYN_RECV, counted active
    assert half is not None
    closing = old.schedule(6, ip("10.9.0.3"), 42000, ip(VIP), 80)
    assert closing is not None
    old.tcp_packet(closing, DIR_INPUT, TCP_ACK)
    old.tcp_packet(closing, DIR_INPUT, TCP_FIN)  # FIN_WAIT (DR) / CLOSE_WAIT (NAT): inactive
    clock.now += 30
    before = counts(old, key)

    new, _, _ = director(fwd)
    r = roundtrip(old, new, tmp_path)
    assert (r.saved, r.restored, r.expired, r.no_dest) == (5, 5, 0, 0)
    assert counts(new, key) == before
    for p, rip in given.items():
        found = where(new, "10.9.0.1", p)
        assert found is not None and found[:2] == (rip, "ESTABLISHED")
        assert 900 - 30 - 1 < found[2] <= 900 - 30
    assert new.connection_count == old.connection_count
    # the restored entries go on as any entry: a FIN moves one and its counts follow
    c = new.lookup(6, ip("10.9.0.1"), 40001, ip(VIP), 80)
    assert c is not None
    new.tcp_packet(c, DIR_INPUT, TCP_FIN)
    after = counts(new, key)
    assert sum(a for a, _, _ in after.values()) == sum(a for a, _, _ in before.values()) - 1
    # and its timer restarts with its state's whole timeout, not what was left
    new.tcp_packet(c, DIR_INPUT, TCP_ACK)
    assert c.deadline - new.clock() == c.timeout


def test_expiry_is_reduced_by_the_downtime_and_spent_entries_stay_out(tmp_path: Path) -> None:
    old, _clock, key = director()
    established(old, "10.9.0.1", 40001)
    half = old.schedule(6, ip("10.9.0.2"), 41000, ip(VIP), 80)  # SYN_RECV: 60 s
    assert half is not None
    new, nclock, _ = director()
    r = roundtrip(old, new, tmp_path, down=100.0)
    assert (r.restored, r.expired) == (1, 1)
    found = where(new, "10.9.0.1", 40001)
    assert found is not None and 799 < found[2] <= 800
    assert where(new, "10.9.0.2", 41000) is None
    nclock.now += 801
    new.tick()
    assert new.connection_count == 0
    assert counts(new, key) == {a: (0, 0, 0) for a in RIPS}


def test_persistence_templates_come_back_linked(tmp_path: Path) -> None:
    old, _clock, key = director(persistence=300)
    rip = established(old, "10.9.0.1", 40001)
    assert established(old, "10.9.0.1", 40002) == rip  # same template, same server
    new, nclock, _ = director(persistence=300)
    r = roundtrip(old, new, tmp_path)
    assert r.restored == 3
    assert counts(new, key) == counts(old, key)
    assert counts(new, key)[rip] == (2, 0, 1)
    # a new connection from the same client goes where the template says
    c = new.schedule(6, ip("10.9.0.1"), 40003, ip(VIP), 80)
    assert c is not None and str(c.dest.addr) == rip
    # the template lives while the connections under it do: past its own 300 s it is kept
    nclock.now += 400
    new.tick()
    assert counts(new, key)[rip][2] == 1


def test_a_template_past_its_time_is_kept_for_its_live_connections(tmp_path: Path) -> None:
    old, clock, key = director(persistence=60)
    rip = established(old, "10.9.0.1", 40001)
    clock.now += 50  # the template has 10 s left, the connection 850 s
    new, _, _ = director(persistence=60)
    r = roundtrip(old, new, tmp_path, down=20.0)
    assert (r.restored, r.expired) == (2, 0)
    assert counts(new, key)[rip] == (1, 0, 1)


def test_udp_entries(tmp_path: Path) -> None:
    old, _, key = director(ForwardingMethod.MASQ, proto=Protocol.UDP)
    c = old.schedule(17, ip("10.9.0.1"), 5353, ip(VIP), 80)
    assert c is not None
    new, _, _ = director(ForwardingMethod.MASQ, proto=Protocol.UDP)
    assert roundtrip(old, new, tmp_path).restored == 1
    got = new.lookup(17, ip("10.9.0.1"), 5353, ip(VIP), 80)
    assert got is not None and got.dest.addr == c.dest.addr and got.state_name == "UDP"
    assert counts(new, key) == counts(old, key)


def test_entries_without_their_real_server_or_method_are_left_out(tmp_path: Path) -> None:
    old, _, _key = director()
    given = [established(old, "10.9.0.1", p) for p in (40001, 40002)]
    assert sorted(given) == sorted(RIPS)
    # the new table lacks one real server, and forwards to the other with another method
    new, _, _ = director(rips=(RIPS[0],))
    r = roundtrip(old, new, tmp_path)
    assert (r.restored, r.no_dest) == (1, 1)
    other, _, _ = director(ForwardingMethod.MASQ)
    path = str(tmp_path / "again")
    conntable.save(old, path, 0.0)
    r2 = conntable.restore(other, path, 0.0)
    assert r2 is not None and (r2.restored, r2.no_dest) == (0, 2)
    assert other.connection_count == 0


def test_entries_of_a_deleted_real_server_are_not_saved(tmp_path: Path) -> None:
    old, _, key = director()
    rips = [established(old, "10.9.0.1", p) for p in (40001, 40002)]
    old.table.del_dest(key, ipaddress.ip_address(rips[0]), 80)
    text, n = conntable.dump(old, 0.0)
    assert n == 1 and rips[1] in text and rips[0] not in text


def test_an_entry_already_there_is_not_doubled(tmp_path: Path) -> None:
    old, _, key = director()
    established(old, "10.9.0.1", 40001)
    path = str(tmp_path / "c")
    conntable.save(old, path, 0.0)
    r = conntable.restore(old, path, 0.0)
    assert r is not None and (r.restored, r.duplicate) == (0, 1)
    assert sum(a for a, _, _ in counts(old, key).values()) == 1


def test_max_connections_is_respected(tmp_path: Path) -> None:
    old, _, _ = director()
    for p in range(40001, 40006):
        established(old, "10.9.0.1", p)
    new, _, _ = director()
    new.max_connections = 3
    r = roundtrip(old, new, tmp_path)
    assert (r.restored, r.full) == (3, 2)


@pytest.mark.parametrize("mangle, message", [
    (lambda lines: ["{}", *lines[1:]], ":1: not a pylvs connection table"),
    (lambda lines: [*lines[:1], "{not json", *lines[2:]], ":2: "),
    (lambda lines: lines[:-1], "says 2 entries, holds 1"),
    (lambda lines: [lines[0], lines[1].replace('"state":1', '"state":99'), lines[2]], ":2: state"),
    (lambda lines: [lines[0], lines[1].replace('"cport":40001', '"cport":-1'), lines[2]],
     ":2: cport"),
    (lambda lines: [lines[0], lines[1], lines[2].replace('"caddr":"10.9.0.1"', '"caddr":"::1"')],
     ":3: caddr and vaddr"),
])
def test_a_bad_file_is_refused_whole_and_removed(tmp_path: Path, mangle: object,
                                                 message: str) -> None:
    old, _, _ = director()
    established(old, "10.9.0.1", 40001)
    established(old, "10.9.0.1", 40002)
    text, _ = conntable.dump(old, 0.0)
    path = tmp_path / "c"
    path.write_text("\n".join(mangle(text.splitlines())) + "\n")  # type: ignore[operator]
    new, _, _ = director()
    with pytest.raises(conntable.ConnTableError, match=message):
        conntable.restore(new, str(path), 0.0)
    assert new.connection_count == 0
    assert not path.exists()


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    d, _, _ = director()
    assert conntable.restore(d, str(tmp_path / "none"), 0.0) is None
    bad = tmp_path / "bin"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(conntable.ConnTableError, match="not UTF-8"):
        conntable.restore(d, str(bad), 0.0)
    assert not bad.exists()


def test_the_file_format(tmp_path: Path) -> None:
    old, _clock, _ = director(persistence=300)
    established(old, "10.9.0.1", 40001)
    text, _n = conntable.dump(old, 1234.5)
    lines = [json.loads(x) for x in text.splitlines()]
    assert lines[0] == {"pylvs_connections": 1, "saved_at": 1234.5, "entries": 2}
    template, conn = lines[1], lines[2]
    assert template["flags"] & 0x40 and template["state_name"] in ("NONE", "ASSURED")
    assert conn["control"] == template["id"] and conn["state_name"] == "ESTABLISHED"
    assert conn["caddr"] == "10.9.0.1" and conn["vaddr"] == VIP and conn["vport"] == 80
    assert conn["daddr"] in RIPS and conn["timeout"] == 900 and conn["expires"] == 900


def test_restored_half_open_entries_are_drop_entrys_again(tmp_path: Path) -> None:
    """SYN_RECV entries saved at a planned restart come back in drop_entry's queue: on a full
    table a new connection takes the oldest one's place, as before the restart."""
    old, _, _ = director()
    for p in range(40001, 40004):
        assert old.schedule(6, ip("10.9.0.5"), p, ip(VIP), 80) is not None  # SYN_RECV
    new, _, _ = director()
    new.max_connections = 3
    r = roundtrip(old, new, tmp_path)
    assert r.restored == 3 and len(new.defense.half_open) == 3
    assert new.schedule(6, ip("10.9.0.6"), 41000, ip(VIP), 80) is not None
    assert new.defense.evicted_entries == 1 and new.connection_count == 3
    assert where(new, "10.9.0.5", 40001) is None  # the oldest gave way
