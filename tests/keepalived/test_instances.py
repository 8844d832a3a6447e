"""The running instances' helpers that depend on the process, not on VRRP."""

from __future__ import annotations


def test_process_age_is_measured_from_the_process_start() -> None:
    import subprocess
    import sys

    code = "import time; time.sleep(0.3); from pylvs.keepalived.instances import process_age; print(process_age())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    age = float(out.stdout)
    assert 0.3 <= age < 30  # clock ticks are 10 ms; a loaded machine may start slowly
