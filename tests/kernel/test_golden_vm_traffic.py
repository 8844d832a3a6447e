"""Golden replay in the VM, part 3: live connections and large counters (e_conns, e_bignum)
with real traffic between namespaces, run as recorded, with pylvsadm on the kernel's IPVS standing in for ipvsadm:
every step's stdout, stderr and exit code must match the recording."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script
from tests.kernel.golden_compare import GOLDEN, traffic_differences

# A boot under TCG on a loaded machine can take minutes: more than the default per-test limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]
CASES = ("e_conns", "e_bignum")


@pytest.fixture(scope="module")
def replay() -> dict[str, Any]:
    if not os.environ.get("PYLVS_VM_SLOW"):
        pytest.skip("takes several minutes under TCG (1,100 connections, 151 MiB through NAT); "
                    "set PYLVS_VM_SLOW=1 to run it")
    if not GOLDEN.is_dir():
        pytest.skip(f"golden recordings not found at {GOLDEN}")
    return run_guest_script("guest_golden.py", 900, *CASES)


@pytest.mark.parametrize("case", CASES)
def test_pylvsadm_on_kernel_matches_golden(replay: dict[str, Any], case: str) -> None:
    result = replay[case]
    assert result["script_rc"] == 0, result["script_stderr"]
    diffs, _skipped = traffic_differences(case, result["steps"])
    assert not diffs, "\n".join(diffs[:20])
