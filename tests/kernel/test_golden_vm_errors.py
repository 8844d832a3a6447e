"""Golden replay in the VM, part 2: about a hundred bad command lines (c_errors)
run as recorded, with pylvsadm on the kernel's IPVS standing in for ipvsadm:
every step's stdout, stderr and exit code must match the recording."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script
from tests.kernel.golden_compare import GOLDEN, differences

# A boot under TCG on a loaded machine can take minutes: more than the default per-test limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]
CASES = ("c_errors",)


@pytest.fixture(scope="module")
def replay() -> dict[str, Any]:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden recordings not found at {GOLDEN}")
    return run_guest_script("guest_golden.py", 300, *CASES)


@pytest.mark.parametrize("case", CASES)
def test_pylvsadm_on_kernel_matches_golden(replay: dict[str, Any], case: str) -> None:
    result = replay[case]
    assert result["script_rc"] == 0, result["script_stderr"]
    diffs = differences(case, result["steps"])
    assert not diffs, "\n".join(diffs[:20])
