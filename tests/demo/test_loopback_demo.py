"""``make demo`` without privileges: the loopback demo runs the seed's commands and traffic."""

from __future__ import annotations

import os
import subprocess
import sys


def test_loopback_demo_shows_rr_then_wrr_distribution() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pylvs.demo"],
        env=dict(os.environ, PYLVS_DEMO="loopback", COLUMNS="100"),
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "pylvsadm -A -t 127.0.0.100:" in out
    assert "TCP  127.0.0.100:" in out and " wrr" in out
    assert "demo complete" in out
