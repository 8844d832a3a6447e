"""The VRRP state machine, rule by rule (RFC 3768 / RFC 5798 as keepalived applies them)."""

from __future__ import annotations

import dataclasses

import pytest

from pylvs.vrrp import packet as pkt
from pylvs.vrrp.router import (
    PRIO_OWNER,
    AddVIPs,
    Dispatcher,
    Log,
    Notify,
    Received,
    RemoveVIPs,
    RouterConfig,
    SendAdvert,
    SendGARP,
    SplitBrain,
    State,
    VRRPRouter,
)

ME = bytes((10, 0, 0, 2))
PEER_LOW = bytes((10, 0, 0, 1))
PEER_HIGH = bytes((10, 0, 0, 3))
VIPS = ("10.0.0.100/24",)


def cfg(**kw: object) -> RouterConfig:
    base: dict[str, object] = dict(name="VI_1", vrid=51, priority=100, primary_address=ME, vips=VIPS)
    base.update(kw)
    return RouterConfig(**base)  # type: ignore[arg-type]


def advert_from(src: bytes, prio: int, *, version: int = 2, vrid: int = 51, adv_cs: int = 100,
                password: str = "", ttl: int = 255, vips: tuple[str, ...] = VIPS) -> Received:
    auth = pkt.AUTH_PASS if password else pkt.AUTH_NONE
    adv = pkt.Advertisement(version, vrid, prio, tuple(pkt_vip(v) for v in vips), adv_cs, auth_type=auth,
                            auth_data=pkt.password_field(password))
    return Received(pkt.encode(adv, src, pkt.VRRP_MCAST_V4), src, pkt.VRRP_MCAST_V4, ttl)


def pkt_vip(v: str) -> bytes:
    from pylvs.vrrp.router import vip_packed
    return vip_packed(v)


def kinds(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]


def started(**kw: object) -> VRRPRouter:
    r = VRRPRouter(cfg(**kw))
    r.start(0.0)
    return r


def test_backup_becomes_master_after_master_down_interval_v2() -> None:
    r = started()
    assert r.state is State.BACKUP
    mdi = 3 * 1.0 + (256 - 100) / 256
    assert r.master_down_interval() == pytest.approx(mdi)
    assert r.tick(mdi - 0.001) == []
    acts = r.tick(mdi)
    assert r.state is State.MASTER
    assert SendAdvert in kinds(acts) and AddVIPs in kinds(acts) and SendGARP in kinds(acts)
    assert Notify(State.MASTER, 100) in acts
    assert r.stats.become_master == 1


def test_v3_skew_scales_with_master_advert_interval() -> None:
    r = started(version=3, adver_int=0.1, priority=90)
    # skew = ((256 - 90) * 10 cs) / 256 cs
    assert r.skew_time() == pytest.approx((256 - 90) * 10 / 256 / 100)
    assert r.master_down_interval() == pytest.approx(0.3 + (256 - 90) * 10 / 256 / 100)


def test_v3_backup_adopts_masters_advert_interval() -> None:
    r = started(version=3, adver_int=1.0, priority=90)
    r.receive(advert_from(PEER_HIGH, 100, version=3, adv_cs=50), 0.1)
    assert r.master_adver_int == pytest.approx(0.5)
    assert r.next_deadline() == pytest.approx(0.1 + 1.5 + (256 - 90) * 50 / 256 / 100)


def test_backup_stays_backup_while_higher_priority_master_advertises() -> None:
    r = started(priority=90)
    for t in range(1, 20):
        assert r.receive(advert_from(PEER_HIGH, 100), float(t)) == []
        r.tick(float(t))
    assert r.state is State.BACKUP
    assert r.master_address == PEER_HIGH and r.master_priority == 100


def test_backup_preempts_lower_priority_master() -> None:
    r = started(priority=100)
    for t in range(1, 6):
        r.receive(advert_from(PEER_LOW, 90), float(t))
        r.tick(float(t))
    assert r.state is State.MASTER  # lower priority adverts did not reset the down timer


def test_nopreempt_backup_leaves_lower_priority_master_alone() -> None:
    r = started(priority=100, preempt=False)
    for t in range(1, 10):
        r.receive(advert_from(PEER_LOW, 90), float(t))
        r.tick(float(t))
    assert r.state is State.BACKUP


def test_preempt_delay_holds_preemption_for_the_delay() -> None:
    r = started(priority=100, preempt_delay=10.0)
    t = 0.5
    while t < 9.0:
        r.receive(advert_from(PEER_LOW, 90), t)
        r.tick(t)
        assert r.state is State.BACKUP, t
        t += 1.0
    while t < 12.0:
        r.receive(advert_from(PEER_LOW, 90), t)
        r.tick(t)
        t += 0.5
    assert r.state is State.MASTER


def test_priority_zero_advert_makes_backup_take_over_after_skew_only() -> None:
    r = started(priority=90)
    r.receive(advert_from(PEER_HIGH, 100), 1.0)
    r.receive(advert_from(PEER_HIGH, 0), 1.5)
    assert r.stats.pri_zero_rcvd == 1
    skew = (256 - 90) / 256
    assert r.tick(1.5 + skew - 0.01) == [] and r.state is State.BACKUP
    r.tick(1.5 + skew)
    assert r.state is State.MASTER


def test_master_steps_down_for_higher_priority_and_removes_vips() -> None:
    r = started(initial_state=State.MASTER)
    assert r.state is State.MASTER
    acts = r.receive(advert_from(PEER_HIGH, 110), 0.5)
    assert r.state is State.BACKUP
    assert RemoveVIPs(VIPS) in acts and Notify(State.BACKUP, 100) in acts
    assert r.stats.release_master == 1


def test_equal_priority_tie_break_on_primary_address() -> None:
    r = started(initial_state=State.MASTER)
    r.receive(advert_from(PEER_LOW, 100), 0.5)
    assert r.state is State.MASTER  # 10.0.0.1 < 10.0.0.2: we keep it
    r.receive(advert_from(PEER_HIGH, 100), 0.6)
    assert r.state is State.BACKUP  # 10.0.0.3 > 10.0.0.2: it wins


def test_master_answers_priority_zero_with_an_immediate_advert() -> None:
    r = started(initial_state=State.MASTER)
    acts = r.receive(advert_from(PEER_LOW, 0), 0.2)
    assert kinds(acts) == [SendAdvert] and r.state is State.MASTER


def test_address_owner_starts_master_at_once_and_never_waits() -> None:
    r = VRRPRouter(cfg(priority=PRIO_OWNER))
    acts = r.start(0.0)
    assert r.state is State.MASTER and AddVIPs in kinds(acts)


def test_two_address_owners_lower_the_local_priority() -> None:
    r = VRRPRouter(cfg(priority=PRIO_OWNER))
    r.start(0.0)
    r.receive(advert_from(PEER_HIGH, 255), 0.5)
    assert r.base_priority == 254 and r.state is State.BACKUP


def test_master_sends_adverts_every_advert_int() -> None:
    r = started(initial_state=State.MASTER, adver_int=1.0)
    sent = 0
    for i in range(1, 51):
        sent += sum(isinstance(a, SendAdvert) for a in r.tick(i * 0.1))
    assert sent == 5
    assert r.stats.advert_sent == 6  # one on becoming master


def test_garp_repeated_after_garp_master_delay_and_refresh() -> None:
    r = started(initial_state=State.MASTER, garp_master_delay=5.0, garp_master_repeat=3, garp_master_refresh=60.0)
    acts = r.tick(5.0)
    assert SendGARP(VIPS, 3) in acts
    acts = r.tick(60.0)
    assert SendGARP(VIPS, 1) in acts


def test_stop_resigns_with_priority_zero_and_removes_vips() -> None:
    r = started(initial_state=State.MASTER)
    acts = r.stop(1.0)
    adv = next(a for a in acts if isinstance(a, SendAdvert))
    assert adv.priority == 0
    decoded = pkt.decode(adv.frames[0][1], ME, pkt.VRRP_MCAST_V4)
    assert decoded.priority == 0
    assert RemoveVIPs(VIPS) in acts and r.stats.pri_zero_sent == 1


@pytest.mark.parametrize(
    ("rx", "counter", "kw"),
    [
        (advert_from(PEER_HIGH, 200, ttl=64), "ip_ttl_err", {}),
        (advert_from(PEER_HIGH, 200, password="wrong"), "auth_failure", {"auth_type": pkt.AUTH_PASS, "auth_pass": b"right"}),
        (advert_from(PEER_HIGH, 200), "authtype_mismatch", {"auth_type": pkt.AUTH_PASS, "auth_pass": b"right"}),
        (advert_from(PEER_HIGH, 200, adv_cs=200), "advert_interval_err", {}),
        (advert_from(PEER_HIGH, 200, version=3), "vers_err", {}),
        (advert_from(PEER_HIGH, 200, vips=("10.0.0.101/24",)), "addr_list_err", {}),
        (Received(b"\x21\x33\x01", PEER_HIGH, pkt.VRRP_MCAST_V4, 255), "packet_len_err", {}),
    ],
)
def test_bad_adverts_are_dropped_and_counted(rx: Received, counter: str, kw: dict[str, object]) -> None:
    r = started(initial_state=State.MASTER, **kw)
    assert r.receive(rx, 0.5) == [] or r.state is State.MASTER
    assert r.state is State.MASTER
    assert getattr(r.stats, counter) == 1
    assert r.stats.advert_rcvd == 0


def test_correct_password_accepted() -> None:
    r = started(auth_type=pkt.AUTH_PASS, auth_pass=b"secret12")
    r.receive(advert_from(PEER_HIGH, 200, password="secret12xyz"), 0.5)
    assert r.stats.advert_rcvd == 1 and r.master_address == PEER_HIGH


def test_unicast_peers_skip_ttl_check_and_get_one_frame_each() -> None:
    r = started(unicast_peers=(PEER_LOW, PEER_HIGH), version=3)
    r.receive(advert_from(PEER_HIGH, 200, version=3, ttl=64), 0.5)
    assert r.stats.ip_ttl_err == 0 and r.stats.advert_rcvd == 1  # unicast: no TTL 255 rule
    r2 = started(unicast_peers=(PEER_LOW, PEER_HIGH), initial_state=State.MASTER)
    adv = r2.advert(100)
    assert [d for d, _ in adv.frames] == [PEER_LOW, PEER_HIGH]


def test_split_brain_detected_on_first_foreign_master_advert_and_cleared() -> None:
    r = started(initial_state=State.MASTER, adver_int=1.0)
    acts = r.receive(advert_from(PEER_LOW, 90), 0.5)
    sb = [a for a in acts if isinstance(a, SplitBrain)]
    assert sb and sb[0].active and sb[0].peer == PEER_LOW
    assert SendAdvert in kinds(acts)  # keepalived forces a new election
    assert r.split_brain_peer == PEER_LOW and r.stats.split_brain == 1
    acts = r.tick(0.5 + 3.1)
    assert any(isinstance(a, SplitBrain) and not a.active for a in acts)
    assert r.split_brain_peer is None


def test_fault_resigns_and_recovery_returns_to_backup() -> None:
    r = started(initial_state=State.MASTER)
    acts = r.set_fault("arbitrator 10.0.0.254 unreachable", 1.0)
    assert r.state is State.FAULT and RemoveVIPs(VIPS) in acts
    assert any(isinstance(a, SendAdvert) and a.priority == 0 for a in acts)
    assert r.receive(advert_from(PEER_HIGH, 50), 1.5) == []
    r.clear_fault("arbitrator 10.0.0.254 unreachable", 2.0)
    assert r.state is State.MASTER  # initial state MASTER goes straight back


def test_dispatcher_counts_unknown_vrid() -> None:
    r = started()
    d = Dispatcher({51: r})
    assert d.receive(advert_from(PEER_HIGH, 100, vrid=52), 0.1) == []
    assert d.unknown_vrid == 1
    assert d.receive(advert_from(PEER_HIGH, 100), 0.1)[0][0] is r


def test_config_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg().priority = 1  # type: ignore[misc]


def test_arp_evidence_must_persist_one_interval_before_split_brain() -> None:
    r = started(initial_state=State.MASTER, adver_int=1.0)
    vip = pkt_vip(VIPS[0])
    assert r.report_split_brain(vip, "dup ARP", 0.1) == []  # a preempted backup may answer once
    assert r.report_split_brain(vip, "dup ARP", 0.5) == []
    acts = r.report_split_brain(vip, "dup ARP", 1.1)
    assert any(isinstance(a, SplitBrain) and a.active for a in acts)
    backup = started()
    assert backup.report_split_brain(vip, "dup ARP", 0.1) == [] and backup.report_split_brain(vip, "dup ARP", 2.0) == []


def test_sync_group_members_follow_each_other() -> None:
    a = started(initial_state=State.MASTER)
    b = started(vrid=52)
    acts = b.follow(State.MASTER, 0.1)
    assert b.state is State.MASTER and AddVIPs in kinds(acts)
    acts = b.follow(State.BACKUP, 0.2)
    assert b.state is State.BACKUP and RemoveVIPs(VIPS) in acts
    a.follow(State.FAULT, 0.3)
    assert a.state is State.FAULT
    a.follow(State.BACKUP, 0.4)
    assert a.state is State.MASTER  # initial state MASTER: back to master once the group recovers


def test_sync_group_gate_holds_a_backup_whose_partner_still_hears_a_master() -> None:
    r = started(priority=150)
    r.sync_gate = lambda _r: False
    acts = r.tick(r.master_down_interval() + 0.01)
    assert r.state is State.BACKUP and r.wants_master
    assert any(isinstance(a, Log) and "held in BACKUP" in a.message for a in acts)
    r.receive(advert_from(PEER_HIGH, 200), 5.0)  # a master is heard again: no longer wants master
    assert not r.wants_master


def test_reload_keeps_mastership_and_applies_new_vips_and_priority() -> None:
    r = started(initial_state=State.MASTER)
    new = dataclasses.replace(r.config, priority=120, vips=(*VIPS, "10.0.0.101/24"))
    assert r.same_group(new)
    acts = r.reconfigure(new, 1.0)
    assert r.state is State.MASTER and r.stats.become_master == 1
    assert AddVIPs(("10.0.0.101/24",)) in acts
    adv = next(a for a in acts if isinstance(a, SendAdvert))
    assert adv.priority == 120
    assert not r.same_group(dataclasses.replace(new, vrid=99))


def test_master_hearing_a_lower_priority_advert_reports_it() -> None:
    from pylvs.vrrp.router import RxLowerPriority

    r = started(priority=100)
    r.tick(10.0)
    assert r.state is State.MASTER
    acts = r.receive(advert_from(PEER_LOW, 90), 10.1)
    events = [a for a in acts if isinstance(a, RxLowerPriority)]
    assert events == [RxLowerPriority(PEER_LOW, 90, 100)]
    backup = started(priority=100)  # a backup hearing one: nothing to report
    assert not [a for a in backup.receive(advert_from(PEER_LOW, 90), 0.5)
                if isinstance(a, RxLowerPriority)]
