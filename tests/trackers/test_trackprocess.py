"""vrrp_track_process: keepalived's exact process matching, quorum and delays, and an instance
that goes to FAULT while its process is not running."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

from pylvs.config import keepalived as K
from pylvs.trackers.trackprocess import ProcessTracker, matches, scan_proc
from tests.keepalived.conftest import Lab, instance_conf, wait_for


def spec(**kw: object) -> K.TrackProcess:
    kw.setdefault("process", "haproxy")
    return K.TrackProcess("t", **kw)  # type: ignore[arg-type]


def test_name_matches_exactly_not_as_a_pattern() -> None:
    assert matches(spec(), ("haproxy", ("/usr/sbin/haproxy", "-f", "x.cfg")))
    assert not matches(spec(), ("haproxy-wi", ()))
    assert not matches(spec(process="ssh"), ("sshd", ("/usr/sbin/sshd",)))
    # a name longer than the kernel keeps is compared on its first 15 characters
    assert matches(spec(process="a-very-long-process-name"), ("a-very-long-pro", ()))


def test_parameters_exact_partial_and_initial() -> None:
    argv = ("/usr/sbin/nginx", "-g", "daemon off;")
    assert matches(spec(process="/usr/sbin/nginx", params=("-g", "daemon off;")), ("nginx", argv))
    assert not matches(spec(process="/usr/sbin/nginx", params=("-g",)), ("nginx", argv))
    assert matches(spec(process="/usr/sbin/nginx", params=("-g",), param_match="partial"), ("nginx", argv))
    assert matches(spec(process="/usr/sbin/nginx", params=("-g", "daemon"), param_match="initial"),
                   ("nginx", argv))
    assert not matches(spec(process="/usr/sbin/nginx", params=(), param_match="partial"), ("nginx", argv))
    assert matches(spec(process="/usr/sbin/nginx", params=(), param_match="initial"),
                   ("nginx", ("/usr/sbin/nginx",)))
    assert matches(spec(process="/usr/sbin/nginx -g daemon off;", full_command=True), ("nginx", argv))
    assert not matches(spec(process="/usr/sbin/nginx"), ("nginx", ()))  # by name: "nginx" only


def test_quorum_bounds_and_delays() -> None:
    s = spec(quorum=2, quorum_max=3, fork_delay=1.0, terminate_delay=2.0)
    one, two = [("haproxy", ())], [("haproxy", ())] * 2
    t = ProcessTracker.start((s,), {"t"}, one, 0.0)
    assert t.up("t") is False
    assert t.update(two, 0.0) == [] and t.update(two, 0.5) == []  # not for fork_delay yet
    assert t.update(two, 1.0) == ["t"] and t.up("t")
    assert t.update(one, 2.0) == [] and t.update(two, 3.0) == []  # came back within the delay
    assert t.update([("haproxy", ())] * 4, 4.0) == [] and t.update([("haproxy", ())] * 4, 6.0) == ["t"]
    assert t.up("t") is False  # above quorum_max


def test_scan_proc_sees_this_process() -> None:
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    with open("/proc/self/cmdline", "rb") as f:
        argv = tuple(a.decode() for a in f.read().split(b"\0")[:-1])
    assert (comm, argv) in scan_proc()
    assert argv[0] == sys.executable or os.path.basename(argv[0]).startswith("python")


def test_config_reads_vrrp_track_process() -> None:
    text = """
vrrp_track_process chk_haproxy {
    process "/usr/sbin/haproxy" -f /etc/haproxy/haproxy.cfg
    param_match partial
    weight 0 reverse
    quorum 1
    quorum_max 4
    delay 0.5
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.1.1.1/24
    }
    track_process {
        chk_haproxy
        other weight 5
    }
}
"""
    cfg = K.parse_text(text, "p.conf")
    (tp,) = cfg.track_processes
    assert (tp.process, tp.params, tp.param_match, tp.weight, tp.reverse) == (
        "/usr/sbin/haproxy", ("-f", "/etc/haproxy/haproxy.cfg"), "partial", 0, True)
    assert (tp.quorum, tp.quorum_max, tp.fork_delay, tp.terminate_delay) == (1, 4, 0.5, 0.5)
    assert cfg.vrrp_instances[0].track_process == (K.TrackFileRef("chk_haproxy"),
                                                   K.TrackFileRef("other", 5, False))
    assert [d.message for d in cfg.diagnostics] == ["(VI_1) track_process other not found, ignoring"]


def test_instance_is_in_fault_while_its_process_is_not_running(lab: Lab) -> None:
    name = f"pylvsdmy{random.randint(0, 9999999)}"[:15]
    exe = lab.tmp / name
    shutil.copy("/bin/sleep", exe)
    tracked = f"""vrrp_track_process proc {{
    process {name}
    weight 0
}}
"""
    extra = "    track_process {\n        proc\n    }\n"
    py = lab.pylvs("a", tracked + instance_conf(prio=150, version=3, advert=0.2, extra=extra))
    assert wait_for(lambda: py.instance().get("state") == "FAULT", 10), py.logtext()[-2000:]
    assert lab.vip_holders() == []
    proc = subprocess.Popen([str(exe), "60"])
    try:
        assert wait_for(lambda: lab.vip_holders() == ["a"], 10), py.logtext()[-2000:]
    finally:
        proc.kill()
        proc.wait()
    assert wait_for(lambda: py.instance().get("state") == "FAULT", 10), py.logtext()[-2000:]
    assert wait_for(lambda: lab.vip_holders() == [], 5)
