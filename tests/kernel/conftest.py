"""Fixtures for the kernel IPVS tests: a VM on Debian's kernel, booted once per test module.

Each module gives the VM one guest script (a ``guest_*.py`` file next to the tests, run by the
project's virtualenv inside the VM) that does all of that module's work and prints JSON; the
tests then assert on parts of it. A boot costs several seconds under TCG, so boots stay few.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "vm"))

import vmrun  # noqa: E402

GUEST_PYTHON = REPO / ".venv" / "bin" / "python"


def run_guest_script(name: str, timeout: float = 240, *args: str) -> dict[str, Any]:
    """Boot the VM, run tests/kernel/NAME with the venv's python, return its JSON output."""
    try:
        vmrun.check_available()
        vmrun.guest_kernel()
    except vmrun.VMUnavailable as e:
        pytest.skip(f"no test VM: {e}")
    script = REPO / "tests" / "kernel" / name
    cmd = " ".join(shlex.quote(x) for x in (str(GUEST_PYTHON), str(script), *args))
    r = vmrun.run_in_vm_full(f"cd {shlex.quote(str(REPO))} && {cmd}\n", timeout=timeout)
    if r.rc != 0:
        pytest.fail(f"guest script {name} failed rc={r.rc}\nstdout:\n{r.stdout[-3000:]}\n"
                    f"stderr:\n{r.stderr[-5000:]}")
    try:
        result: dict[str, Any] = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"guest script {name} printed no JSON:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    result["_vm_seconds"] = r.seconds
    result["_stderr"] = r.stderr
    return result
