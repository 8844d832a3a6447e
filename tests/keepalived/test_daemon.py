"""``pylvs keepalived`` as an operator runs it: split-brain detection and the arbitrator,
SIGHUP reload, notify scripts with keepalived's arguments, unicast peers, and a client that keeps
reaching the VIP across a failover."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.keepalived.conftest import VIP, Lab, instance_conf, sh, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_split_brain_from_another_masters_adverts_and_resolution(lab: Lab) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft (nftables) to drop protocol 112")
    hook_out = lab.tmp / "split.txt"
    hook = lab.tmp / "split.sh"
    hook.write_text(f"#!/bin/sh\necho \"$@\" >> {hook_out}\n")
    hook.chmod(0o755)
    rx_lower = lab.tmp / "rx-lower.txt"
    rx_hook = lab.tmp / "rx-lower.sh"
    rx_hook.write_text(f"#!/bin/sh\necho lower >> {rx_lower}\n")
    rx_hook.chmod(0o755)
    extra = f"    notify_master_rx_lower_pri {rx_hook}\n"
    py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2, extra=extra),
                   "--notify-split-brain", str(hook))
    lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: lab.vip_holders() == ["a"], 10)
    # b stops hearing VRRP (one-way loss): it becomes a second master whose adverts reach us
    lab.exec("b", "nft", "add table inet vrrptest")
    lab.exec("b", "nft", "add chain inet vrrptest in { type filter hook input priority 0 ; }")
    lab.exec("b", "nft", "add rule inet vrrptest in meta l4proto 112 drop")
    assert wait_for(lambda: py.instance().get("split_brain") == lab.addr("b"), 5), py.logtext()[-2000:]
    assert "SPLIT BRAIN: another master advertises our VRID" in py.logtext()
    assert wait_for(lambda: hook_out.exists() and "VI_T SPLIT_BRAIN " in hook_out.read_text(), 5)
    # keepalived's notify_master_rx_lower_pri ran too: the master heard a lower priority advert
    assert wait_for(lambda: rx_lower.exists() and "lower" in rx_lower.read_text(), 5)
    # VRRP flows again: keepalived (lower priority) yields and the split brain clears
    lab.exec("b", "nft", "delete table inet vrrptest")
    assert wait_for(lambda: lab.vip_holders() == ["a"], 5)
    assert wait_for(lambda: py.instance().get("split_brain") is None, 5)
    assert wait_for(lambda: "SPLIT_BRAIN_RESOLVED" in hook_out.read_text(), 5)


def test_duplicate_arp_answer_for_vip_reports_split_brain(lab: Lab) -> None:
    # different passwords: neither accepts the other's adverts, both hold the VIP
    py = lab.pylvs("a", instance_conf(prio=150, password="one", advert=1.0))
    lab.keepalived("b", instance_conf(prio=100, password="two", advert=1.0))
    assert wait_for(lambda: lab.vip_holders() == ["a", "b"], 10)
    assert wait_for(lambda: py.instance().get("split_brain") == VIP, 5), py.logtext()[-2000:]
    assert "answers ARP for VIP" in py.logtext()


def test_arbitrator_unreachable_demotes_to_fault_and_recovers(lab: Lab) -> None:
    gw = "10.77.0.254"
    py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2), "--arbitrator", gw,
                   "--arbitrator-interval", "0.2")
    lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: py.instance().get("state") == "FAULT", 10), py.logtext()[-2000:]
    assert wait_for(lambda: lab.vip_holders() == ["b"], 5)
    sh("ip", "-n", lab.ns("c"), "addr", "add", f"{gw}/24", "dev", "eth0")
    assert wait_for(lambda: py.instance().get("state") == "MASTER", 10), py.logtext()[-2000:]
    assert wait_for(lambda: lab.vip_holders() == ["a"], 5)


def test_sighup_keeps_running_config_on_bad_file_and_applies_good_one(lab: Lab) -> None:
    py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2))
    lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: lab.vip_holders() == ["a"], 10)
    conf: Path = py.conf  # type: ignore[attr-defined]
    conf.write_text(instance_conf(prio=150, version=3, advert=0.2).replace("priority 150", "priority 150 }}"))
    py.popen.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload rejected" in py.logtext(), 5)
    assert py.alive() and py.instance().get("state") == "MASTER" and lab.vip_holders() == ["a"]
    assert wait_for(lambda: py.state().get("reload_failures") == 1, 5), py.state()
    # a good file with one more VIP: applied in place, still MASTER, no failover
    two_vips = instance_conf(prio=150, version=3, advert=0.2).replace(
        "dev eth0 label eth0:vip\n", "dev eth0 label eth0:vip\n        10.77.0.101/24 dev eth0\n")
    conf.write_text(two_vips)
    py.popen.send_signal(signal.SIGHUP)
    assert wait_for(lambda: lab.has_vip("a", "10.77.0.101"), 5), py.logtext()[-2000:]
    assert py.instance()["state"] == "MASTER" and py.instance()["stats"]["become_master"] == 1  # type: ignore[index]
    assert lab.has_vip("a")
    conf.write_text(instance_conf(prio=50, version=3, advert=0.2))
    py.popen.send_signal(signal.SIGHUP)
    assert wait_for(lambda: not lab.has_vip("a", "10.77.0.101"), 5)
    assert wait_for(lambda: lab.vip_holders() == ["b"], 5), py.logtext()[-2000:]
    assert wait_for(lambda: py.instance().get("state") == "BACKUP", 5)
    assert py.instance()["priority"] == 50


def test_notify_scripts_get_keepalived_arguments(lab: Lab) -> None:
    out = lab.tmp / "notify.txt"
    script = lab.tmp / "notify.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {out}\n")
    script.chmod(0o755)
    extra = f"    notify_master \"{script} became-master\"\n    notify_stop {script}\n"
    ctl = str(lab.tmp / "ctl.sock")
    py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2, notify=str(script), extra=extra),
                   "--metrics-port", "9477", "--control-socket", ctl)
    assert wait_for(lambda: out.exists() and "INSTANCE VI_T MASTER 150" in out.read_text(), 10)
    assert "became-master" in out.read_text()
    assert wait_for(lambda: Path(ctl).exists(), 10)
    metrics = lab.exec("a", sys.executable, "-c",
                       "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9477/').read().decode())").stdout
    assert 'pylvs_vrrp_state{instance="VI_T"} 2.0' in metrics
    from pylvs.control.client import ControlClient

    with ControlClient(ctl) as c:
        status = c.call("vrrp_status")
    assert status["instances"]["VI_T"]["state"] == "MASTER" and status["instances"]["VI_T"]["vrid"] == 42
    py.stop(signal.SIGTERM)
    assert wait_for(lambda: "INSTANCE VI_T STOP" in out.read_text(), 15), (out.read_text(), py.logtext()[-2000:])


def test_unicast_peers_interoperate_with_keepalived(lab: Lab) -> None:
    a, b = lab.addr("a"), lab.addr("b")
    py = lab.pylvs("a", instance_conf(prio=150, advert=1.0, unicast=(a, b)))
    ka = lab.keepalived("b", instance_conf(prio=100, advert=1.0, unicast=(b, a)))
    assert wait_for(lambda: lab.vip_holders() == ["a"], 10), ka.logtext()[-1500:]
    py.stop(signal.SIGTERM)
    assert wait_for(lambda: lab.vip_holders() == ["b"], 4)


CLIENT = r"""
import socket, sys, time, json
vip, port, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ok = fail = 0; seen = []
end = time.monotonic() + dur
while time.monotonic() < end:
    try:
        s = socket.create_connection((vip, port), timeout=0.3)
        s.sendall(b"GET /node HTTP/1.0\r\n\r\n"); data = b""
        while True:
            c = s.recv(4096)
            if not c: break
            data += c
        s.close()
        node = data.split(b"\r\n\r\n", 1)[-1].strip().decode()
        ok += 1
        if not seen or seen[-1] != node: seen.append(node)
    except OSError:
        fail += 1
    time.sleep(0.05)
print(json.dumps({"ok": ok, "fail": fail, "seen": seen}))
"""


def test_client_keeps_reaching_vip_across_failover(lab: Lab) -> None:
    servers = []
    try:
        for role in ("a", "b"):
            d = lab.tmp / f"www{role}"
            d.mkdir()
            (d / "node").write_text(role)
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", lab.ns(role), sys.executable, "-m", "http.server", "8080", "-d", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2))
        lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2))
        assert wait_for(lambda: lab.vip_holders() == ["a"], 10)
        time.sleep(0.5)
        client = subprocess.Popen(["ip", "netns", "exec", lab.ns("c"), sys.executable, "-c", CLIENT, VIP, "8080", "6"],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        py.stop(signal.SIGKILL)
        out, _ = client.communicate(timeout=30)
        res = json.loads(out)
        assert res["seen"] == ["a", "b"], res
        assert res["ok"] > res["fail"], res
    finally:
        for s in servers:
            s.kill()
            s.wait()


def test_vrrp_blocked_peer_alive_is_reported_and_split_brain_detected(lab: Lab) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft (nftables) to drop protocol 112")
    lab.keepalived("a", instance_conf(prio=150, version=3, advert=0.2))
    py = lab.pylvs("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: lab.vip_holders() == ["a"] and py.instance().get("master") == lab.addr("a"), 10)
    # a firewall on b starts dropping VRRP: the classic split brain of the seed
    lab.exec("b", "nft", "add table inet vrrptest")
    lab.exec("b", "nft", "add chain inet vrrptest in { type filter hook input priority 0 ; }")
    lab.exec("b", "nft", "add rule inet vrrptest in meta l4proto 112 drop")
    assert wait_for(lambda: lab.vip_holders() == ["a", "b"], 5)
    assert wait_for(lambda: py.instance().get("silent_peer_alive") == lab.addr("a"), 5), py.logtext()[-2000:]
    assert wait_for(lambda: py.instance().get("split_brain") == VIP, 5), py.logtext()[-2000:]


def test_track_script_weight_hands_the_vip_to_keepalived(lab: Lab) -> None:
    flag = lab.tmp / "healthy"
    flag.write_text("ok")
    script = f"""vrrp_script chk_flag {{
    script "/usr/bin/test -e {flag}"
    interval 0.2
    fall 2
    rise 2
    weight -100
}}
"""
    extra = "    track_script {\n        chk_flag\n    }\n"
    py = lab.pylvs("a", script + instance_conf(prio=150, version=3, advert=0.2, extra=extra))
    lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: lab.vip_holders() == ["a"], 10)
    flag.unlink()  # the tracked service fails: 150 - 100 = 50 < 100
    assert wait_for(lambda: lab.vip_holders() == ["b"], 5), py.logtext()[-2000:]
    assert py.instance()["effective_priority"] == 50
    flag.write_text("ok")  # healthy again: priority 150 preempts back
    assert wait_for(lambda: lab.vip_holders() == ["a"], 5), py.logtext()[-2000:]


def test_track_file_maintenance_switch_and_weight_move_the_vip(lab: Lab) -> None:
    maint = lab.tmp / "maint"
    load = lab.tmp / "load"
    files = f"""track_file maint {{
    file {maint}
    weight 0
    init_file 0
}}
track_file load {{
    file {load}
    weight -10
}}
"""
    extra = "    track_file {\n        maint\n        load\n    }\n"
    py = lab.pylvs("a", files + instance_conf(prio=150, version=3, advert=0.2, extra=extra))
    lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: lab.vip_holders() == ["a"], 10)
    assert maint.read_text() == "0\n"  # init_file wrote it
    maint.write_text("1\n")  # the operator's maintenance switch: FAULT, the backup takes over
    assert wait_for(lambda: py.instance().get("state") == "FAULT", 5), py.logtext()[-2000:]
    assert wait_for(lambda: lab.vip_holders() == ["b"], 5)
    maint.write_text("0\n")
    assert wait_for(lambda: lab.vip_holders() == ["a"], 5), py.logtext()[-2000:]
    load.write_text("6\n")  # 150 - 6 * 10 = 90 < 100
    assert wait_for(lambda: lab.vip_holders() == ["b"], 5), py.logtext()[-2000:]
    assert py.instance()["effective_priority"] == 90
    load.unlink()  # a missing file counts as 0: back to 150, which preempts
    assert wait_for(lambda: lab.vip_holders() == ["a"], 5), py.logtext()[-2000:]


def test_track_interface_down_puts_instance_in_fault(lab: Lab) -> None:
    lab.exec("a", "ip", "link", "add", "trk7", "type", "veth", "peer", "name", "trk7p")
    lab.exec("a", "ip", "link", "set", "trk7", "up")
    lab.exec("a", "ip", "link", "set", "trk7p", "up")
    extra = "    track_interface {\n        trk7\n    }\n"
    py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2, extra=extra))
    lab.keepalived("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: lab.vip_holders() == ["a"], 10)
    lab.exec("a", "ip", "link", "set", "trk7p", "down")  # carrier lost on trk7
    assert wait_for(lambda: py.instance().get("state") == "FAULT", 5)
    assert wait_for(lambda: lab.vip_holders() == ["b"], 5)
    lab.exec("a", "ip", "link", "set", "trk7p", "up")
    assert wait_for(lambda: lab.vip_holders() == ["a"], 5)


def _two_instances(prio: int, vips: tuple[str, str], group: bool, script: str = "", group_extra: str = "") -> str:
    out = script
    if group:
        out += f"vrrp_sync_group G {{\n    group {{\n        VI_A\n        VI_B\n    }}\n{group_extra}}}\n"
    for name, vrid, vip in (("VI_A", 42, vips[0]), ("VI_B", 43, vips[1])):
        track = "    track_script {\n        chk_flag\n    }\n" if script and name == "VI_A" and not group_extra else ""
        out += (f"vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n"
                f"    priority {prio}\n    advert_int 0.2\n    version 3\n{track}"
                f"    virtual_ipaddress {{\n        {vip}/24 dev eth0\n    }}\n}}\n")
    return out


def test_sync_group_moves_both_vips_together(lab: Lab) -> None:
    vips = (VIP, "10.77.0.101")
    flag = lab.tmp / "healthy"
    flag.write_text("ok")
    script = (f'vrrp_script chk_flag {{\n    script "/usr/bin/test -e {flag}"\n    interval 0.2\n'
              "    weight -100\n}\n")
    py = lab.pylvs("a", _two_instances(150, vips, True, script))
    lab.keepalived("b", _two_instances(100, vips, False))
    both_on = lambda role: all(lab.has_vip(role, v) for v in vips) and not any(  # noqa: E731
        lab.has_vip("b" if role == "a" else "a", v) for v in vips)
    assert wait_for(lambda: both_on("a"), 10)
    flag.unlink()  # only VI_A's script fails; the group takes VI_B along
    assert wait_for(lambda: both_on("b"), 6), py.logtext()[-2500:]
    assert not wait_for(lambda: not both_on("b"), 2.0), py.logtext()[-2500:]  # B held, no flapping
    flag.write_text("ok")
    assert wait_for(lambda: both_on("a"), 6), py.logtext()[-2500:]


def test_one_keepalived_conf_runs_vrrp_and_virtual_servers(lab: Lab) -> None:
    """VRRP holds the VIP; the virtual_server half (proxy data plane) forwards it to a checked
    real server; pylvsadm and vrrp_status answer on the same control socket."""
    rs = subprocess.Popen(["ip", "netns", "exec", lab.ns("c"), sys.executable, "-m", "http.server", "8080",
                           "-b", lab.addr("c"), "-d", str(lab.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (lab.tmp / "hello.txt").write_text("from the real server\n")
    try:
        vs = f"""virtual_server {VIP} 80 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server {lab.addr("c")} 8080 {{
        weight 1
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
"""
        ctl = str(lab.tmp / "director.sock")
        py = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2) + vs, "--control-socket", ctl)
        assert wait_for(lambda: lab.has_vip("a"), 10), py.logtext()[-2000:]
        assert wait_for(lambda: Path(ctl).exists(), 10), py.logtext()[-2000:]
        from pylvs.control.client import ControlClient

        def rs_alive() -> bool:
            with ControlClient(ctl) as c:
                status = c.call("checkers")
            return bool(status) and all(r["alive"] for r in status[0]["real_servers"])

        assert wait_for(rs_alive, 10), py.logtext()[-2000:]
        with ControlClient(ctl) as c:
            assert c.call("vrrp_status")["instances"]["VI_T"]["state"] == "MASTER"
            services = c.get_services()
        assert len(services) == 1
        listing = sh("ip", "netns", "exec", lab.ns("c"), "curl", "-s", "--max-time", "5",
                     f"http://{VIP}/hello.txt", check=False).stdout
        assert listing == "from the real server\n", py.logtext()[-2000:]
    finally:
        rs.kill()
        rs.wait()


def test_sync_group_track_script_and_group_notify_once_per_transition(lab: Lab) -> None:
    vips = (VIP, "10.77.0.101")
    flag = lab.tmp / "healthy"
    flag.write_text("ok")
    out = lab.tmp / "group.txt"
    notify = lab.tmp / "gnotify.sh"
    notify.write_text(f"#!/bin/sh\necho \"$@\" >> {out}\n")
    notify.chmod(0o755)
    script = (f'vrrp_script chk_flag {{\n    script "/usr/bin/test -e {flag}"\n    interval 0.2\n'
              "    weight -100\n}\n")
    group_extra = f"    track_script {{\n        chk_flag\n    }}\n    notify {notify}\n"
    py = lab.pylvs("a", _two_instances(150, vips, True, script, group_extra))
    lab.keepalived("b", _two_instances(100, vips, False))
    assert wait_for(lambda: all(lab.has_vip("a", v) for v in vips), 10), py.logtext()[-2000:]
    assert wait_for(lambda: out.exists() and "GROUP G MASTER" in out.read_text(), 5)
    flag.unlink()  # the group's script fails: both members drop to 50
    assert wait_for(lambda: all(lab.has_vip("b", v) for v in vips) and not any(lab.has_vip("a", v) for v in vips), 6)
    assert wait_for(lambda: "GROUP G BACKUP" in out.read_text().split("GROUP G MASTER", 1)[1], 5), out.read_text()
    lines = out.read_text().splitlines()
    assert lines.count("GROUP G MASTER") == 1 and lines.count("GROUP G BACKUP") == 2, lines  # start, then once


def test_virtual_routes_and_rules_follow_the_master(lab: Lab) -> None:
    routes = ("    virtual_routes {\n"
              "        10.99.0.0/24 via 10.77.0.254 dev eth0 metric 7\n"
              "        blackhole 10.98.0.0/24\n"
              "        10.97.0.0/24 via 10.77.0.253 or 10.77.0.252 dev eth0\n"
              "    }\n"
              "    virtual_rules {\n"
              "        from 10.96.0.0/24 table 100 preference 123\n"
              "    }\n")

    def has_routes(role: str) -> bool:
        lines = lab.exec(role, "ip", "route", "show").stdout.splitlines()
        return any(ln.startswith("10.99.0.0/24 via 10.77.0.254 dev eth0") and "metric 7" in ln
                   for ln in lines) and any(ln.startswith("blackhole 10.98.0.0/24") for ln in lines) \
            and any("nexthop via 10.77.0.252 dev eth0" in ln for ln in lines) \
            and "123:\tfrom 10.96.0.0/24 lookup 100" in lab.exec(role, "ip", "rule", "show").stdout

    a = lab.pylvs("a", instance_conf(prio=150, version=3, advert=0.2, extra=routes))
    b = lab.pylvs("b", instance_conf(prio=100, version=3, advert=0.2, extra=routes))
    assert wait_for(lambda: lab.vip_holders() == ["a"] and has_routes("a"), 10), a.logtext()[-2000:]
    assert not has_routes("b")
    a.stop()  # the master resigns: the backup takes the VIP and the routes
    assert wait_for(lambda: lab.vip_holders() == ["b"] and has_routes("b"), 10), b.logtext()[-2000:]
    assert not has_routes("a")


SNIFF_ARP = r"""
import socket, struct, sys, time
vip = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0))
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        f = s.recv(100)
    except socket.timeout:
        continue
    # gratuitous: sender and target protocol addresses are both the VIP
    if len(f) >= 42 and f[28:32] == vip and f[38:42] == vip:
        print(f"{time.monotonic():.3f}", flush=True)
"""


def test_gratuitous_arps_are_spaced_by_vrrp_garp_interval(lab: Lab) -> None:
    import subprocess

    sniff = subprocess.Popen(["ip", "netns", "exec", lab.ns("c"), sys.executable, "-c", SNIFF_ARP,
                              VIP, "8"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    conf = instance_conf(prio=150, version=3, advert=0.2).replace(
        "    vrrp_garp_master_delay 1\n",
        "    vrrp_garp_master_delay 0\n    vrrp_garp_master_repeat 3\n    vrrp_garp_interval 0.4\n")
    py = lab.pylvs("a", conf)
    out, _ = sniff.communicate(timeout=30)
    times = [float(t) for t in out.split()]
    assert len(times) >= 3, (times, py.logtext()[-1500:])
    gaps = [b - a for a, b in itertools.pairwise(times[:3])]
    assert all(g >= 0.3 for g in gaps), gaps  # back to back would be well under a millisecond


def test_use_vmac_keeps_the_vips_mac_across_a_failover(lab: Lab) -> None:
    vmac_mac = "00:00:5e:00:01:2a"  # VRID 42

    def vmac_holds_vip(role: str) -> bool:
        out = lab.exec(role, "ip", "-o", "addr", "show", "dev", "vrrp.42", check=False).stdout
        return f" {VIP}/" in out

    def client_pings() -> bool:
        code = ("import asyncio, ipaddress, sys; from pylvs.config.keepalived import CheckerConfig; "
                "from pylvs.health.checkers.ping import ping_check; "
                "c = CheckerConfig(kind='PING_CHECK', file='t', line=1, "
                f"connect_ip=ipaddress.ip_address('{VIP}'), connect_port=0, connect_timeout=1.0); "
                "sys.exit(0 if asyncio.run(ping_check(c, raw=True)).ok else 1)")
        return lab.exec("c", sys.executable, "-c", code, check=False).returncode == 0

    def client_sees() -> str:
        client_pings()
        out = lab.exec("c", "ip", "neigh", "show", VIP).stdout.split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else ""

    def conf(prio: int) -> str:  # the VIP without "dev": it goes on the VMAC
        return instance_conf(prio=prio, version=3, advert=0.2, extra="    use_vmac\n").replace(
            f"{VIP}/24 dev eth0 label eth0:vip", f"{VIP}/24")

    a = lab.pylvs("a", conf(150))
    b = lab.pylvs("b", conf(100))
    assert wait_for(lambda: vmac_holds_vip("a"), 10), a.logtext()[-2000:]
    link = lab.exec("a", "ip", "-o", "link", "show", "vrrp.42").stdout
    assert f"link/ether {vmac_mac}" in link and "macvlan" in lab.exec(
        "a", "ip", "-d", "-o", "link", "show", "vrrp.42").stdout
    time.sleep(1.5)  # well past b's Master_Down_Interval: b must be hearing a's adverts
    assert not vmac_holds_vip("b") and b.instance().get("state") == "BACKUP"
    assert client_sees() == vmac_mac
    a.stop()  # resigns: b takes over with the same MAC, so the client has nothing to relearn
    assert wait_for(lambda: vmac_holds_vip("b"), 10), b.logtext()[-2000:]
    assert client_sees() == vmac_mac
    assert client_pings()
    assert "vrrp.42" not in lab.exec("a", "ip", "-o", "link", "show").stdout  # a removed its VMAC
