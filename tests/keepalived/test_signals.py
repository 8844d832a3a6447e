"""keepalived 2.2's signals sent to a running ``pylvs keepalived`` in the namespace lab: the dumps
are written in keepalived's layouts, the daemon keeps running, the VIP stays and adverts go on;
TERM resigns and removes the VIP."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.keepalived.conftest import VIP, Lab, instance_conf, wait_for


def _sent(p: object) -> int:
    inst = p.instance()  # type: ignore[attr-defined]
    stats = inst.get("stats", {})
    return int(stats.get("advert_sent", 0)) if isinstance(stats, dict) else 0


def test_signals_dump_and_keep_running_while_vrrp_holds_the_vip(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    dumps = lab.tmp / "dumps"
    dumps.mkdir()
    monkeypatch.setenv("TMPDIR", str(dumps))
    script = lab.tmp / "chk.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    extra = "    track_script {\n        chk\n    }\n"
    conf = instance_conf(state="MASTER", prio=150, version=3, advert=0.2, extra=extra)
    conf = f'vrrp_script chk {{\n    script "{script}"\n    interval 1\n    weight 10\n}}\n' + conf
    a = lab.pylvs("a", conf)
    b = lab.pylvs("b", instance_conf(prio=100, version=3, advert=0.2))
    assert wait_for(lambda: lab.vip_holders() == ["a"] and a.instance().get("state") == "MASTER", 15), a.logtext()[-2000:]
    pid = a.popen.pid
    took_over: list[str] = []

    def send(sig: int) -> None:
        before = _sent(a)
        os.kill(pid, sig)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # through the signal: the VIP never moves
            if lab.vip_holders() != ["a"]:
                took_over.append(f"{sig}: {lab.vip_holders()}")
            time.sleep(0.05)
        assert a.alive(), a.logtext()[-2000:]
        assert wait_for(lambda: _sent(a) > before + 2, 5), f"adverts stopped after signal {sig}"

    send(signal.SIGUSR1)
    data = (dumps / "keepalived.data").read_text()
    assert data.startswith("------< Global definitions >------\n")
    assert " Router ID = test\n" in data and "------< VRRP Topology >------\n" in data
    assert " VRRP Instance = VI_T\n   VRRP Version = 3\n   State = MASTER\n" in data
    assert f"     {VIP}/24 dev eth0 scope global label eth0:vip set\n" in data
    assert "------< VRRP Scripts >------\n VRRP Script = chk\n" in data
    assert oct((dumps / "keepalived.data").stat().st_mode & 0o777) == "0o600"

    send(signal.SIGUSR2)
    stats = (dumps / "keepalived.stats").read_text().splitlines()
    assert stats[:4] == ["VRRP Instance: VI_T", "  Advertisements:", "    Received: 0", stats[3]]
    assert stats[3].startswith("    Sent: ") and int(stats[3].split(": ")[1]) > 0
    assert stats[-3:] == ["  Priority Zero:", "    Received: 0", "    Sent: 0"]

    send(signal.SIGRTMIN + 2)  # keepalived --signum=JSON
    doc = json.loads((dumps / "keepalived.json").read_text())
    assert (dumps / "keepalived.json").read_text().count("\\/") >= 1  # keepalived escapes '/'
    assert doc[0]["data"]["iname"] == "VI_T" and doc[0]["data"]["state"] == 2
    assert doc[0]["data"]["base_priority"] == 150 and doc[0]["data"]["effective_priority"] == 160
    assert doc[0]["data"]["vips"] == [f"{VIP}/24 dev eth0 scope global label eth0:vip set"]
    assert doc[0]["stats"]["advert_sent"] > 0

    # STATS_CLEAR: the dump shows the counters, which then restart from zero
    os.kill(pid, signal.SIGRTMAX - 1)
    assert wait_for(lambda: "Printing and clearing VRRP stats" in a.logtext(), 5)

    def sent_in_stats() -> int:
        lines = (dumps / "keepalived.stats").read_text().splitlines()
        return int(lines[3].split(": ")[1]) if len(lines) > 3 else -1

    # the log line comes as the dump starts: the new file replaces USR2's a moment later
    assert wait_for(lambda: sent_in_stats() >= doc[0]["stats"]["advert_sent"], 5), sent_in_stats()
    at_clear = sent_in_stats()
    (dumps / "keepalived.json").unlink()
    os.kill(pid, signal.SIGRTMIN + 2)
    assert wait_for(lambda: (dumps / "keepalived.json").exists(), 5)
    after = json.loads((dumps / "keepalived.json").read_text())[0]["stats"]["advert_sent"]
    assert after < at_clear, (after, at_clear)
    assert a.alive() and lab.vip_holders() == ["a"]

    send(signal.SIGPIPE)
    send(signal.SIGHUP)
    assert wait_for(lambda: "Reload complete" in a.logtext(), 10), a.logtext()[-2000:]
    assert not took_over, took_over
    log = a.logtext()
    for name in ("DATA", "STATS", "JSON", "STATS_CLEAR", "RELOAD"):
        assert f"Received signal {name} (" in log, name
    assert "Printing VRRP data for process(" in log and "Printing and clearing VRRP stats" in log
    assert b.instance().get("state") == "BACKUP"

    a.popen.send_signal(signal.SIGTERM)
    assert a.popen.wait(10) == 0
    assert "Received signal STOP (15)" in a.logtext()
    assert wait_for(lambda: lab.vip_holders() == ["b"], 10)  # resigned with priority 0, VIP removed


def test_dont_release_vrrp_keeps_the_vip_on_stop(lab: Lab) -> None:
    a = lab.pylvs("a", instance_conf(state="MASTER", prio=150, version=3, advert=0.2), "-V")
    assert wait_for(lambda: lab.has_vip("a"), 15), a.logtext()[-2000:]
    a.popen.send_signal(signal.SIGTERM)
    assert a.popen.wait(10) == 0
    assert lab.has_vip("a")  # keepalived -V: VIPs stay when the daemon stops


def test_a_sigterm_as_soon_as_the_pid_file_exists_is_a_clean_stop(lab: Lab) -> None:
    """From its pid file on, a SIGTERM stops pylvs keepalived cleanly (exit 0, pid file gone),
    also before its event loop runs or its first VIP is up (CI once killed it in that
    window: the signal's default action, exit -15)."""
    pid = lab.tmp / "early.pid"
    a = lab.pylvs("a", instance_conf(state="MASTER", prio=150, version=3, advert=0.2), "-P",
                  "-p", str(pid))
    assert wait_for(pid.exists, 15), a.logtext()[-2000:]
    a.popen.send_signal(signal.SIGTERM)
    assert a.popen.wait(10) == 0, a.logtext()[-2000:]
    assert not pid.exists()


def test_pid_files_name_this_process_and_go_on_exit(lab: Lab) -> None:
    pids = [lab.tmp / n for n in ("main.pid", "vrrp.pid", "check.pid")]
    a = lab.pylvs("a", instance_conf(state="MASTER", prio=150, version=3, advert=0.2), "-P",
                  "-p", str(pids[0]), "-r", str(pids[1]), "-c", str(pids[2]))
    assert wait_for(lambda: lab.has_vip("a"), 15), a.logtext()[-2000:]
    assert pids[0].read_text() == f"{a.popen.pid}\n" and pids[1].read_text() == f"{a.popen.pid}\n"
    assert not pids[2].exists()  # -P: no checkers run, so no checkers pid file
    a.popen.send_signal(signal.SIGTERM)
    assert a.popen.wait(10) == 0
    assert not any(Path(p).exists() for p in pids)
