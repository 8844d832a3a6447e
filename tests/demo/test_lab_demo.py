"""``make demo`` as root: the lab demo's DR failover, NAT and TUN acts all end as expected."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]


def test_lab_demo_runs_dr_with_failover_then_nat_and_tun() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None:
        pytest.skip("the lab demo needs root, iproute2 and curl")
    res = subprocess.run(
        [sys.executable, "-m", "pylvs.demo"],
        env=dict(os.environ, PYLVS_DEMO="lab", COLUMNS="120"),
        capture_output=True, text=True, timeout=540,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    out = res.stdout
    assert "backup is MASTER" in out and "director preempted" in out
    assert "it survived the failover" in out
    assert out.count("as expected") == 3
