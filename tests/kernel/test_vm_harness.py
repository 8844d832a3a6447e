"""The VM harness itself: one boot runs a whole script as root on Debian's kernel, with the
host's root visible read-only (writes land in the guest's RAM overlay, never on the host) and
the script's stdout, stderr and exit status handed back separately."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.kernel.conftest import REPO, vmrun

# A boot under TCG on a loaded machine can take minutes: more than the default per-test limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def boot() -> tuple[vmrun.VMResult, str]:
    try:
        vmrun.check_available()
        vmrun.guest_kernel()
    except vmrun.VMUnavailable as e:
        pytest.skip(f"no test VM: {e}")
    marker = REPO / f".vm-harness-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    script = (
        "uname -r\n"
        "id -u\n"
        f"test -f {REPO}/pyproject.toml && echo repo-visible\n"
        f"echo guest > {marker} && cat {marker}\n"
        "grep -q '^ip_vs ' /proc/modules && echo ip_vs-loaded\n"
        "ls /sys/class/net | tr '\\n' ' '; echo\n"
        "echo to-stderr >&2\n"
        "exit 7\n"
    )
    try:
        return vmrun.run_in_vm_full(script, timeout=240), str(marker)
    finally:
        assert not os.path.exists(marker), "a guest write reached the host"


def test_script_runs_as_root_on_debians_kernel(boot: tuple[vmrun.VMResult, str]) -> None:
    r, _ = boot
    lines = r.stdout.splitlines()
    assert lines[0] == vmrun.guest_kernel().version
    assert lines[1] == "0"
    assert "repo-visible" in lines and "ip_vs-loaded" in lines


def test_guest_writes_stay_in_the_guest(boot: tuple[vmrun.VMResult, str]) -> None:
    r, marker = boot
    assert "guest" in r.stdout.splitlines()
    assert not os.path.exists(marker)


def test_vm_has_no_network_device_but_loopback(boot: tuple[vmrun.VMResult, str]) -> None:
    r, _ = boot
    devices = r.stdout.splitlines()[-1].split()
    assert devices == ["lo"]


def test_stdout_stderr_and_status_come_back_apart(boot: tuple[vmrun.VMResult, str]) -> None:
    r, _ = boot
    assert r.rc == 7
    assert r.stderr == "to-stderr\n"
    assert "to-stderr" not in r.stdout
