"""Reloads that cannot overlap or stall (issue 14 item 5), with real processes in the lab.

Back-to-back SIGHUPs while a reload of a large configuration (includes fanning out to hundreds of
files) is under way: the reloads are serialised (exactly one more after the running one), the
checker of the one real server is never duplicated or orphaned (counted as TCP connections at a
real server), VRRP adverts continue during the parse (the backup never takes the VIP), and after
stop no probe arrives."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.keepalived.conftest import VIP, Lab, instance_conf, wait_for

COUNTER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(64)
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        c, _ = s.accept(); out.write("x\\n"); c.close()
"""


def _fan_out(d: Path, files: int = 400, per_file: int = 40) -> None:
    d.mkdir()
    for i in range(files):
        (d / f"f{i}.conf").write_text("".join(
            f'vrrp_script s{i}_{j} {{\n  script "/bin/true"\n  interval 5\n}}\n' for j in range(per_file)))


def test_back_to_back_sighups_serialise_and_never_duplicate_a_checker(lab: Lab) -> None:
    conns = lab.tmp / "conns.txt"
    conns.touch()
    server = subprocess.Popen(["ip", "netns", "exec", lab.ns("c"), sys.executable, "-c", COUNTER,
                               lab.addr("c"), str(conns)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _fan_out(lab.tmp / "inc")
        vs = f"""virtual_server {VIP} 80 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server {lab.addr("c")} 8080 {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
include {lab.tmp}/inc/*.conf
"""
        ctl = str(lab.tmp / "ctl.sock")
        # advert 0.5 s: the backup takes over after 1.6 s without adverts
        a = lab.pylvs("a", instance_conf(state="MASTER", prio=150, version=3, advert=0.5) + vs,
                      "--control-socket", ctl)
        b = lab.pylvs("b", instance_conf(prio=100, version=3, advert=0.5), "-P")
        assert wait_for(lambda: lab.vip_holders() == ["a"], 30), a.logtext()[-2000:]

        def count() -> int:
            return len(conns.read_text().splitlines())

        assert wait_for(lambda: count() >= 2, 15), a.logtext()[-2000:]
        t0, n0 = time.monotonic(), count()
        time.sleep(4)
        base_rate = (count() - n0) / (time.monotonic() - t0)

        for _ in range(3):  # three HUPs in quick succession: one reload runs, one more follows
            a.popen.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        took_over = False
        end = time.monotonic() + 60
        while time.monotonic() < end and a.logtext().count("Reload complete") < 2:
            took_over |= lab.has_vip("b")
            time.sleep(0.05)
        log = a.logtext()
        assert log.count("Reload complete") == 2, log[-3000:]
        assert "A reload is under way: one more follows it" in log
        assert not took_over and lab.vip_holders() == ["a"], "VRRP adverts stalled during the reload"
        assert b.instance().get("state") == "BACKUP"
        time.sleep(1.5)
        assert a.logtext().count("Reload complete") == 2  # three HUPs, exactly two reloads

        t1, n1 = time.monotonic(), count()
        time.sleep(4)
        rate = (count() - n1) / (time.monotonic() - t1)
        assert rate <= base_rate * 1.5 + 0.5, (base_rate, rate)  # a duplicated checker doubles it
        from pylvs.control.client import ControlClient

        with ControlClient(ctl) as c:
            checkers = c.call("checkers")
        assert len(checkers) == 1 and len(checkers[0]["real_servers"]) == 1

        a.popen.send_signal(signal.SIGTERM)
        assert a.popen.wait(15) == 0
        n2 = count()
        time.sleep(2)
        assert count() == n2  # no checker outlives the daemon
    finally:
        server.kill()
        server.wait()


def test_include_file_limit_is_a_file_line_error(tmp_path: Path) -> None:
    from pylvs.config.grammar import MAX_INCLUDED_FILES
    from pylvs.keepalived.daemon import load

    d = tmp_path / "many"
    d.mkdir()
    for i in range(MAX_INCLUDED_FILES + 1):
        (d / f"{i}.conf").write_text("")
    conf = tmp_path / "k.conf"
    conf.write_text(f"global_defs {{\n  router_id x\n}}\ninclude {d}/*.conf\n")
    from pylvs.config.grammar import ConfigError

    try:
        load(str(conf), None)
    except ConfigError as exc:
        assert [str(x) for x in exc.diagnostics] == [
            f"{conf}:4: error: include would read more than {MAX_INCLUDED_FILES} files"]
    else:
        raise AssertionError("a fan-out past the limit was read")


def test_vrrp_only_and_check_only(lab: Lab) -> None:
    """-P runs VRRP alone (the real server is never probed), -C the checkers alone (no VIP)."""
    conns = lab.tmp / "conns.txt"
    conns.touch()
    server = subprocess.Popen(["ip", "netns", "exec", lab.ns("c"), sys.executable, "-c", COUNTER,
                               lab.addr("c"), str(conns)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        vs = f"""virtual_server {VIP} 80 {{
    delay_loop 0.3
    protocol TCP
    real_server {lab.addr("c")} 8080 {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
"""
        conf = instance_conf(state="MASTER", prio=150, version=3, advert=0.2) + vs
        p = lab.pylvs("a", conf, "-P", "--control-socket", str(lab.tmp / "p.sock"))
        assert wait_for(lambda: lab.has_vip("a"), 15), p.logtext()[-2000:]
        time.sleep(2)
        assert conns.read_text() == ""
        p.stop()
        c = lab.pylvs("b", conf, "-C", "--control-socket", str(lab.tmp / "c.sock"))
        assert wait_for(lambda: len(conns.read_text().splitlines()) >= 2, 15), c.logtext()[-2000:]
        assert not lab.has_vip("b") and c.alive()
    finally:
        server.kill()
        server.wait()
