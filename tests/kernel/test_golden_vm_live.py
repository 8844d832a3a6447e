"""pylvsadm as a drop-in ipvsadm under live traffic, in a VM: real TCP/UDP connections through
kernel IPVS between namespaces (the golden cases' NAT lab), and every listing printed by pylvsadm
and by the real ipvsadm at the same moment on the same kernel table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script
from tests.kernel.golden_compare import GOLDEN, pair_differences

# A boot under TCG on a loaded machine can take minutes: more than the default per-test limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]
CASE = Path(__file__).resolve().parent / "live_conns.sh"


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden recordings (lvsnet.sh, rec.sh) not found at {GOLDEN}")
    result: dict[str, Any] = run_guest_script("guest_golden.py", 400, "--pair", str(CASE))[
        "live_conns"
    ]
    return result


def test_traffic_flows_through_kernel_ipvs(live: dict[str, Any]) -> None:
    assert live["script_rc"] == 0, live["script_stderr"]
    by_cmd = {s["cmd"]: s for s in live["steps"] if "cmd" in s}
    assert by_cmd["conns 10.0.0.100 6"]["stdout"].split() == ["rs2", "rs1"] * 3
    assert by_cmd["conns 10.0.0.101 3"]["stdout"].split() == ["rs3"] * 3
    # direct routing: the servers answer from the VIP they hold themselves
    assert by_cmd["conns 10.0.0.110 4"]["stdout"].split() == ["rs2", "rs1"] * 2


def test_dr_replies_bypass_director(live: dict[str, Any]) -> None:
    stats = next(s["stdout"] for s in live["steps"] if s.get("cmd") == "ipvsadm -Ln --stats")
    row = next(line.split() for line in stats.splitlines() if "10.0.0.110:80" in line)
    conns, inpkts, outpkts = int(row[2]), int(row[3]), int(row[4])
    assert conns == 4 and inpkts > 0
    assert outpkts == 0  # not one reply packet crossed the director


def test_listings_with_live_connections_match_real_ipvsadm(live: dict[str, Any]) -> None:
    pairs = live["pairs"]
    assert len(pairs) >= 14
    diffs = pair_differences(pairs)
    assert not diffs, "\n".join(diffs)


def test_connection_listing_shows_every_state(live: dict[str, Any]) -> None:
    listing = next(s["stdout"] for s in live["steps"] if s.get("cmd") == "ipvsadm -Lnc")
    states = {line.split()[2] for line in listing.splitlines()[2:]}
    assert {"ESTABLISHED", "TIME_WAIT", "UDP", "ASSURED"} <= states
