"""pylvs and the real keepalived in one VRRP group, in network namespaces: election, the VIP on
exactly one node, failover on SIGKILL and SIGTERM, preemption back, nopreempt, mismatches."""

from __future__ import annotations

import signal

import pytest

from tests.keepalived.conftest import VIP, Lab, instance_conf, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def settle_one_holder(lab: Lab, role: str, timeout: float = 15.0) -> None:
    assert wait_for(lambda: lab.vip_holders() == [role], timeout), (lab.vip_holders(), [p.logtext()[-2000:] for p in lab.procs])


def stays_one_holder(lab: Lab, role: str, seconds: float, vip: str = VIP) -> None:
    """Longer than the other router's Master_Down_Interval: it really hears the master."""
    assert not wait_for(lambda: lab.vip_holders(vip) != [role], seconds), (lab.vip_holders(vip), [p.logtext()[-2000:] for p in lab.procs])


@pytest.mark.parametrize("version,advert", [(2, 1.0), (3, 0.2)])
def test_pylvs_master_keepalived_backup_failover_and_preemption(lab: Lab, version: int, advert: float) -> None:
    py = lab.pylvs("a", instance_conf(prio=150, version=version, advert=advert))
    lab.keepalived("b", instance_conf(prio=100, version=version, advert=advert))
    settle_one_holder(lab, "a")
    stays_one_holder(lab, "a", 3 * advert + 1)
    assert wait_for(lambda: py.instance().get("state") == "MASTER", 5)
    assert "Entering BACKUP STATE" in lab.procs[1].logtext()
    # SIGKILL the pylvs master: keepalived takes over after Master_Down_Interval
    py.stop(signal.SIGKILL)
    assert wait_for(lambda: lab.has_vip("b"), 3 * advert + 5), lab.procs[1].logtext()[-2000:]
    # the killed router left its VIP behind (as keepalived would); clear it as a reboot would
    lab.exec("a", "ip", "addr", "del", "10.77.0.100/24", "dev", "eth0", check=False)
    # pylvs comes back with the higher priority and preempts
    py2 = lab.pylvs("a", instance_conf(prio=150, version=version, advert=advert))
    settle_one_holder(lab, "a", timeout=3 * advert + 10)
    assert wait_for(lambda: py2.instance().get("state") == "MASTER", 5)
    assert py2.instance()["stats"]["advert_rcvd"] >= 1  # type: ignore[index]


@pytest.mark.parametrize("version,advert", [(2, 1.0), (3, 0.2)])
def test_keepalived_master_pylvs_backup_failover_on_sigterm_and_preemption(lab: Lab, version: int, advert: float) -> None:
    ka = lab.keepalived("a", instance_conf(state="MASTER", prio=150, version=version, advert=advert))
    py = lab.pylvs("b", instance_conf(prio=100, version=version, advert=advert))
    settle_one_holder(lab, "a")
    stays_one_holder(lab, "a", 3 * advert + 1)
    assert wait_for(lambda: py.instance().get("state") == "BACKUP", 5)
    assert wait_for(lambda: py.instance().get("master") == lab.addr("a"), 3 * advert + 3)
    # keepalived stops: it sends priority 0, pylvs takes over after the skew time only
    ka.stop(signal.SIGTERM)
    settle_one_holder(lab, "b", timeout=5)
    st = py.instance()["stats"]
    assert st["pri_zero_rcvd"] >= 1  # type: ignore[index]
    # keepalived back with higher priority: pylvs steps down and removes the VIP
    lab.keepalived("a", instance_conf(state="BACKUP", prio=150, version=version, advert=advert))
    settle_one_holder(lab, "a", timeout=3 * advert + 10)
    assert wait_for(lambda: py.instance().get("state") == "BACKUP", 5)


def test_pylvs_sigterm_resigns_with_priority_zero(lab: Lab) -> None:
    py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=1.0))
    ka = lab.keepalived("b", instance_conf(prio=100, version=3, advert=1.0))
    settle_one_holder(lab, "a")
    py.stop(signal.SIGTERM)
    assert not lab.has_vip("a")  # removed on the way out
    # 3 s + skew if the resignation were missed; priority 0 makes it skew time only (< 1 s)
    assert wait_for(lambda: lab.has_vip("b"), 2.5), ka.logtext()[-1500:]
    assert "priority 0" in ka.logtext() or "Entering MASTER STATE" in ka.logtext()


def test_nopreempt_backup_leaves_lower_priority_keepalived_master(lab: Lab) -> None:
    lab.keepalived("a", instance_conf(prio=100, version=3, advert=0.2))
    settle_one_holder(lab, "a")
    py = lab.pylvs("b", instance_conf(prio=200, version=3, advert=0.2, nopreempt=True))
    assert wait_for(lambda: py.instance().get("state") == "BACKUP", 5)
    assert not wait_for(lambda: lab.has_vip("b"), 3.0)
    assert lab.vip_holders() == ["a"]


def test_pylvs_preempts_lower_priority_keepalived_master(lab: Lab) -> None:
    lab.keepalived("a", instance_conf(prio=100, version=3, advert=0.2))
    settle_one_holder(lab, "a")
    py = lab.pylvs("b", instance_conf(prio=200, version=3, advert=0.2))
    settle_one_holder(lab, "b", timeout=5)
    assert py.instance().get("state") == "MASTER"


def test_mismatched_password_both_master_and_counted(lab: Lab) -> None:
    py = lab.pylvs("a", instance_conf(prio=150, password="one"))
    lab.keepalived("b", instance_conf(prio=100, password="two"))
    # each drops the other's adverts, as keepalived does: both end up MASTER
    assert wait_for(lambda: lab.vip_holders() == ["a", "b"], 10)
    assert wait_for(lambda: py.instance()["stats"]["auth_failure"] >= 1, 5)  # type: ignore[index]
    assert "invalid passwd" in lab.procs[1].logtext()


def test_mismatched_advert_int_v2_is_dropped(lab: Lab) -> None:
    py = lab.pylvs("a", instance_conf(prio=150, advert=1.0))
    lab.keepalived("b", instance_conf(prio=100, advert=2.0))
    assert wait_for(lambda: py.instance().get("stats", {}).get("advert_interval_err", 0) >= 1, 10)  # type: ignore[union-attr]
    assert "advertisement interval mismatch" in lab.procs[1].logtext() or lab.has_vip("b")


def test_different_vrid_is_another_group(lab: Lab) -> None:
    py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2, vrid=42))
    lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2, vrid=43))
    assert wait_for(lambda: lab.vip_holders() == ["a", "b"], 6)
    assert py.instance()["stats"]["advert_rcvd"] == 0  # type: ignore[index]


def test_ipv6_v3_election_and_failover_with_keepalived(lab: Lab) -> None:
    vip6 = "fd77::100"
    for role in ("a", "b"):
        lab.exec(role, "ip", "-6", "addr", "add", f"fd77::{ {'a': 1, 'b': 2}[role] }/64", "dev", "eth0", "nodad")
    conf = dict(version=3, advert=0.2, vip=f"{vip6}/64", password=None)
    py = lab.pylvs("a", instance_conf(prio=150, **conf))  # type: ignore[arg-type]
    ka = lab.keepalived("b", instance_conf(prio=100, **conf))  # type: ignore[arg-type]
    assert wait_for(lambda: lab.vip_holders(vip6) == ["a"], 10), (py.logtext()[-1500:], ka.logtext()[-1500:])
    stays_one_holder(lab, "a", 1.6, vip6)
    assert py.instance().get("state") == "MASTER"
    py.stop(signal.SIGTERM)
    assert wait_for(lambda: lab.vip_holders(vip6) == ["b"], 3), ka.logtext()[-1500:]


def test_use_vmac_with_keepalived_on_the_other_router(lab: Lab) -> None:
    def conf(prio: int) -> str:  # the VIP without "dev": it goes on the VMAC
        return instance_conf(prio=prio, version=3, advert=0.2, extra="    use_vmac\n").replace(
            f"{VIP}/24 dev eth0 label eth0:vip", f"{VIP}/24")

    def on_vmac(role: str) -> bool:
        out = lab.exec(role, "ip", "-o", "addr", "show", "dev", "vrrp.42", check=False).stdout
        return f" {VIP}/" in out

    py = lab.pylvs("a", conf(150))
    ka = lab.keepalived("b", conf(100))
    assert wait_for(lambda: on_vmac("a"), 15), py.logtext()[-2000:]
    # longer than keepalived's Master_Down_Interval: it hears our adverts from the VMAC
    assert not wait_for(lambda: on_vmac("b"), 3 * 0.2 + 1.5), ka.logtext()[-2000:]
    mac = lab.exec("b", "ip", "-o", "link", "show", "vrrp.42").stdout
    assert "link/ether 00:00:5e:00:01:2a" in mac  # keepalived made the same VMAC
    py.stop(signal.SIGKILL)
    assert wait_for(lambda: on_vmac("b"), 10), ka.logtext()[-2000:]
    # and the other way round: pylvs as the backup hears keepalived's adverts from its VMAC
    back = lab.pylvs("a", conf(50), tag="again")
    assert wait_for(lambda: back.instance().get("state") == "BACKUP", 10), back.logtext()[-2000:]
    assert not wait_for(lambda: on_vmac("a"), 3 * 0.2 + 1.5), back.logtext()[-2000:]
