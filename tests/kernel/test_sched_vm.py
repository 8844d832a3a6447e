"""Every scheduler's decisions in pylvs' own core against the kernel's, in a VM: the same table,
the same sequence of new connections; any difference is a bug in our core."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script

# A boot under TCG on a loaded machine can take minutes: more than the default per-test limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "sh", "dh", "mh", "lblc",
              "lblcr")


@pytest.fixture(scope="module")
def decisions() -> dict[str, Any]:
    return run_guest_script("guest_sched.py", 300)


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_core_scheduler_picks_what_the_kernel_picks(decisions: dict[str, Any], sched: str) -> None:
    kernel, ours = decisions[sched]["kernel"], decisions[sched]["pylvs"]
    # dh maps the one VIP to one server (the quiesced one here); ovf stops once every server
    # holds its weight in connections: "no server" is then the right answer, on both sides.
    if sched not in ("dh", "ovf"):
        assert None not in kernel, "the kernel scheduled no server for some connection"
    assert any(kernel) or sched == "dh"
    assert "10.97.0.3" not in kernel  # weight 0
    first = next((i for i, (a, b) in enumerate(zip(kernel, ours, strict=True)) if a != b), None)
    assert first is None, (
        f"{sched}: connection #{first} kernel {kernel[first]} pylvs {ours[first]}\n"
        f"kernel: {kernel}\npylvs:  {ours}"
    )
