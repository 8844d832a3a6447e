"""When a VIP is announced (sans-IO): quorum per service, drain, a silent director, a data plane
that forwards nothing, VIPs no service uses; and BIRD's configuration and replies."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from pylvs.core.api import DestStatus, ServiceStatus
from pylvs.core.model import DestSpec, ServiceKey, ServiceSpec
from pylvs.core.sync import FLUSH_AFTER
from pylvs.scaleout import bird as B
from pylvs.scaleout.config import BGPConfig, Neighbor
from pylvs.scaleout.policy import JOIN_MARGIN, Announcer, JoinGate, Observation, decide

A = ipaddress.ip_address
V1, V2, V6 = A("192.0.2.10"), A("192.0.2.20"), A("2001:db8::10")


def svc(vip: str, port: int, *weights: int, proto: int = 6) -> ServiceStatus:
    key = ServiceKey.inet(proto, vip, port)
    return ServiceStatus(ServiceSpec(key, "mh"), tuple(
        DestStatus(DestSpec(A(f"10.1.0.{i + 1}"), port, weight=w)) for i, w in enumerate(weights)))


def look(*services: ServiceStatus) -> Observation:
    return Observation(True, "packet", services)


def test_a_vip_is_announced_only_while_every_service_on_it_has_quorum() -> None:
    obs = look(svc("192.0.2.10", 80, 1, 0), svc("192.0.2.10", 443, 0, 0),
               svc("192.0.2.20", 80, 5), svc("2001:db8::10", 80, 1))
    v = decide((), obs, draining=False)
    assert list(v) == [V1, V2, V6]
    assert not v[V1].announce and "no quorum" in v[V1].reason and "TCP 192.0.2.10:443" in \
        v[V1].reason
    assert v[V2].announce and v[V6].announce


def test_drain_silence_and_a_plane_that_forwards_nothing_withdraw_everything() -> None:
    obs = look(svc("192.0.2.10", 80, 1))
    assert decide((), obs, draining=False)[V1].announce
    assert decide((), obs, draining=True)[V1] == decide((), obs, True)[V1]
    assert decide((), obs, draining=True)[V1].reason == "draining"
    silent = Observation(False, error="no pylvs director is running")
    assert decide((V1,), silent, False)[V1].reason == \
        "the director does not answer (no pylvs director is running)"
    none = Observation(True, "none", obs.services)
    assert not decide((), none, False)[V1].announce


def test_a_configured_vip_no_service_uses_is_never_announced() -> None:
    obs = look(svc("192.0.2.10", 80, 1), svc("192.0.2.20", 80, 1))
    v = decide((V1, A("198.51.100.1")), obs, False)
    assert v[V1].announce and list(v) == [V1, A("198.51.100.1")]  # only those configured
    assert v[A("198.51.100.1")] == decide((A("198.51.100.1"),), obs, False)[A("198.51.100.1")]
    assert not v[A("198.51.100.1")].announce
    assert v[A("198.51.100.1")].reason == "no virtual service uses it: never announced"


def test_fwmark_services_announce_nothing() -> None:
    mark = ServiceStatus(ServiceSpec(ServiceKey.mark(7), "mh"),
                         (DestStatus(DestSpec(A("10.1.0.1"), 0)),))
    assert decide((), look(mark), False) == {}


def test_the_announcer_logs_changes_only() -> None:
    a = Announcer()
    changed, lines = a.update(decide((), look(svc("192.0.2.10", 80, 1)), False))
    assert changed and lines == ["announce 192.0.2.10/32: 1 service(s) with quorum, 1 real "
                                 "server(s) in use"]
    assert a.update(decide((), look(svc("192.0.2.10", 80, 1)), False)) == (False, [])
    changed, lines = a.update(decide((), look(svc("192.0.2.10", 80, 0)), False))
    assert changed and lines[0].startswith("withdraw 192.0.2.10/32: no quorum")
    assert a.update(decide((), look(svc("192.0.2.10", 80, 0)), False)) == (False, [])
    a.update(decide((), look(svc("192.0.2.10", 80, 2)), False))
    changed, lines = a.update(decide((), look(), False))  # the service went away
    assert changed and lines == ["withdraw 192.0.2.10/32: no longer configured"]
    a.update(decide((), look(svc("2001:db8::10", 80, 1)), False))
    assert a.withdraw_all("stopping") == (True, ["withdraw 2001:db8::10/128: stopping"])
    assert a.announced == set()


CFG = BGPConfig(A("10.20.0.11"), 65001, (  # type: ignore[arg-type]
    Neighbor(A("10.20.0.1"), 65000, A("10.20.0.11"), 3, 1, 1, True),
    Neighbor(A("fd00:20::1"), 65000)))


def _joining(gate: JoinGate, obs: Observation, now: float) -> tuple[bool, list[str]]:
    verdicts, lines = gate.hold(decide((), obs, draining=False), obs, now)
    return verdicts[V1].announce, lines


def test_a_joining_director_with_a_sync_backup_waits_one_refresh_cycle() -> None:
    """auto: the first announcement waits the refresh cycle + the senders' flush + a margin,
    counted from the first look at which the director is ready; then the gate stays open."""
    ready = Observation(True, "packet", (svc("192.0.2.10", 80, 1),), sync_backup=True,
                        sync_refresh_period=1)
    gate = JoinGate(None)
    wait = 1 + FLUSH_AFTER + JOIN_MARGIN
    announce, lines = _joining(gate, ready, 100.0)
    assert not announce and lines == [
        f"joining: first announcement in {wait:g} s (the sync backup hears one refresh cycle: "
        f"1 s + the senders' flush {FLUSH_AFTER:g} s + {JOIN_MARGIN:g} s)"]
    held = gate.hold(decide((), ready, draining=False), ready, 100.5)[0][V1]
    assert not held.announce and held.reason.startswith(f"joining: held {wait:g} s")
    assert _joining(gate, ready, 100 + wait - 0.01) == (False, [])
    assert _joining(gate, ready, 100 + wait) == (True, [f"joining: waited {wait:g} s, announcing"])
    # open for good: a withdrawal and a new announcement later are the policy's alone
    drained = gate.hold(decide((), ready, draining=True), ready, 200.0)[0]
    assert not drained[V1].announce and drained[V1].reason == "draining"
    assert _joining(gate, ready, 201.0) == (True, [])


def test_the_wait_starts_again_if_the_director_stops_being_ready() -> None:
    ready = Observation(True, "packet", (svc("192.0.2.10", 80, 1),), sync_backup=True,
                        sync_refresh_period=2)
    gate = JoinGate(None)
    wait = 2 + FLUSH_AFTER + JOIN_MARGIN
    assert not _joining(gate, ready, 0.0)[0]
    gone = Observation(False, error="refused")
    assert not gate.hold(decide((V1,), gone, draining=False), gone, 1.0)[0][V1].announce
    assert not _joining(gate, ready, wait)[0]  # counted from 'wait', not from 0
    assert _joining(gate, ready, 2 * wait)[0]


@pytest.mark.parametrize(("obs", "why"), [
    (Observation(True, "packet", (svc("192.0.2.10", 80, 1),)), "no backup sync daemon"),
    (Observation(True, "packet", (svc("192.0.2.10", 80, 1),), sync_backup=True),
     "sync_refresh_period is 0: the others re-send by packet count"),
])
def test_nothing_to_wait_for_announces_at_once_and_says_why(obs: Observation, why: str) -> None:
    gate = JoinGate(None)
    announce, lines = _joining(gate, obs, 5.0)
    assert announce and len(lines) == 1 and lines[0].startswith(f"first announcement now: {why}")


def test_the_refresh_cycle_is_the_kernels_bound_and_announce_delay_overrides_it() -> None:
    """An entry is re-sent once its timer moved by min(refresh, max(timeout / 2, 10 s)): with
    a 60 s refresh period and a 30 s ESTABLISHED timeout the cycle is 15 s."""
    slow = Observation(True, "packet", (svc("192.0.2.10", 80, 1),), sync_backup=True,
                       sync_refresh_period=60, tcp_timeout=30)
    gate = JoinGate(None)
    assert not _joining(gate, slow, 0.0)[0] and gate.wait == 15 + FLUSH_AFTER + JOIN_MARGIN
    fixed = JoinGate(4.0)
    assert _joining(fixed, slow, 0.0) == (False, [
        "joining: first announcement in 4 s (announce_delay 4 s)"])
    assert _joining(fixed, slow, 4.0)[0]
    assert _joining(JoinGate(0.0), slow, 0.0)[0]  # 0: never wait


def test_bird_configuration_announces_exactly_the_set() -> None:
    text = B.render(CFG, {V1, V6}, "/tmp/x.log")
    assert "protocol static pylvs_vip4 { ipv4; route 192.0.2.10/32 blackhole; }" in text
    assert "protocol static pylvs_vip6 { ipv6; route 2001:db8::10/128 blackhole; }" in text
    assert "bfd on;" in text and "protocol bfd pylvs_bfd" in text
    assert 'ipv4 { import none; export where proto = "pylvs_vip4"; next hop self; };' in text
    assert 'ipv6 { import none; export where proto = "pylvs_vip6"; next hop self; };' in text
    assert "protocol kernel" not in text  # the blackhole routes never reach a kernel table
    empty = B.render(CFG, set(), "/tmp/x.log")
    assert "protocol static pylvs_vip4 { ipv4; }" in empty


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 (bird2) is not installed")
def test_bird_itself_accepts_the_configuration(tmp_path: Path) -> None:
    for announced in (set(), {V1, V2, V6}):
        f = tmp_path / "bird.conf"
        f.write_text(B.render(CFG, announced, str(tmp_path / "bird.log")))
        out = subprocess.run(["bird", "-p", "-c", str(f)], capture_output=True, text=True,
                             timeout=30, check=False)
        assert out.returncode == 0, out.stderr


def test_control_socket_replies_are_read_line_by_line() -> None:
    r = B.ReplyReader()
    assert r.feed("0001 BIRD 2.0.12 ready.\n") == B.Reply(1, ("BIRD 2.0.12 ready.",))
    lines = ["2002-Name       Proto      Table      State  Since         Info\n",
             "1002-peer1      BGP        ---        start  03:03:15.118  Active        Socket: "
             "Connection refused\n",
             "1006-  BGP state:          Active\n",
             "      Neighbor address: 10.20.0.1\n",
             "      Last error:       Socket: Connection refused\n",
             "0000 \n"]
    got = [r.feed(x) for x in lines]
    assert got[:-1] == [None] * 5
    reply = got[-1]
    assert reply is not None and reply.ok and reply.code == 0
    assert B.session_state(reply) == B.SessionState("Active", "Socket: Connection refused")
    assert B.session_state(B.Reply(0, ("Name Proto Table State Since Info",
                                       "peer1 BGP --- down 03:03 ", " BGP state: Down"))).state \
        == "Down"
    bad = B.ReplyReader().feed("8001 Parse error\n")
    assert bad is not None and not bad.ok and bad.text == "Parse error"
