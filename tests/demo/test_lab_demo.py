"""``make demo`` as root: the lab demo's DR failover, NAT and TUN acts all end as expected, and
while it runs, the places it prints for watching it live answer: the status page and metrics of
the directors' ``pylvs keepalived`` (inside their namespaces), ``pylvs top`` over the VRRP
router's control socket and ``pylvsadm -Ln --rate`` over the packet director's."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]


def test_lab_demo_runs_dr_with_failover_then_nat_and_tun() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None:
        pytest.skip("the lab demo needs root, iproute2 and curl")
    demo = subprocess.Popen(
        [sys.executable, "-m", "pylvs.demo"],
        # the scale-out act is tested on its own (test_scaleout_demo.py)
        env=dict(os.environ, PYLVS_DEMO="lab", PYLVS_DEMO_SKIP="scaleout", COLUMNS="120"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out: list[str] = []
    seen: dict[str, subprocess.CompletedProcess[str]] = {}

    def follow() -> None:
        """Read the demo's output as it comes; try each place it names as soon as it names it
        (the directors it points at live only during act 1)."""
        assert demo.stdout is not None
        for line in demo.stdout:
            out.append(line)
            if "director status: ip netns exec" in line:
                argv = shlex.split(line.split("director status:", 1)[1])
                seen["status.json"] = subprocess.run(argv, capture_output=True, text=True, timeout=20)
                page = [*argv[:-1], argv[-1].replace("/status.json", "/status")]
                seen["status"] = subprocess.run(page, capture_output=True, text=True, timeout=20)
                metrics = [*argv[:-1], argv[-1].replace("/status.json", "/metrics")]
                seen["metrics"] = subprocess.run(metrics, capture_output=True, text=True, timeout=20)
            elif "live view:" in line:
                env_word, *cmd = shlex.split(line.split("live view:", 1)[1])
                sock = env_word.split("=", 1)[1]
                seen["top"] = subprocess.run(
                    [sys.executable, "-m", "pylvs.cli.main", "top", "--once", "--control-socket", sock],
                    capture_output=True, text=True, timeout=30, env=dict(os.environ, COLUMNS="160"))
                seen["top"].args = cmd
            elif "the table:" in line:
                env_word, *cmd = shlex.split(line.split("the table:", 1)[1])
                seen["table"] = subprocess.run(
                    [sys.executable, "-m", "pylvs.cli.ipvsadm", "-Ln", "--rate"], capture_output=True,
                    text=True, timeout=30, env=dict(os.environ, PYLVS_CONTROL_SOCKET=env_word.split("=", 1)[1]))
                seen["table"].args = cmd

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        rc = demo.wait(540)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(30)
    err = demo.stderr.read() if demo.stderr is not None else ""
    text = "".join(out)
    assert rc == 0, text[-4000:] + err[-2000:]
    assert "backup is MASTER" in text and "director preempted" in text
    assert "it survived the failover" in text
    assert text.count("as expected") == 3

    # where to look, while it ran
    status = seen["status.json"]
    assert status.returncode == 0, status
    doc = json.loads(status.stdout)
    assert "VI_1" in json.dumps(doc["vrrp"]), doc
    assert seen["status"].returncode == 0 and "<html" in seen["status"].stdout.lower()
    assert seen["metrics"].returncode == 0 and "keepalived_vrrp_state" in seen["metrics"].stdout
    top = seen["top"]
    assert top.args == ["pylvs", "top"]
    assert top.returncode == 0, top
    assert "VI_1" in top.stdout and "MASTER" in top.stdout, top.stdout
    table = seen["table"]
    assert table.args == ["watch", "-n1", "pylvsadm", "-Ln", "--rate"]
    assert table.returncode == 0, table
    assert "192.168.168.10:80" in table.stdout and "192.168.168.20:80" in table.stdout, table.stdout
