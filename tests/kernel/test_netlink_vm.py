"""KernelIPVS against the real kernel IPVS in a VM, checked with the real ipvsadm on the same
table: what we write, ipvsadm reads back identically, and what ipvsadm writes, we read."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script

# A boot under TCG on a loaded machine can take minutes: more than the default per-test limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def guest() -> dict[str, Any]:
    return run_guest_script("guest_netlink.py")


def test_guest_runs_debian_kernel_with_ipvs(guest: dict[str, Any]) -> None:
    assert "version='1.2.1'" in guest["info"]
    assert "conn_tab_size=4096" in guest["info"]


def test_table_written_over_netlink_saves_like_ipvsadms_own(guest: dict[str, Any]) -> None:
    assert guest.get("ipvsadm_failures") is None
    assert guest["ours_save"]["rc"] == 0
    assert guest["ours_save"]["stdout"] == guest["theirs_save"]["stdout"]
    assert guest["ours_list"]["stdout"] == guest["theirs_list"]["stdout"]
    assert guest["ours_thresholds"]["stdout"] == guest["theirs_thresholds"]["stdout"]
    assert guest["ours_info_services"] == 6


def test_table_written_by_ipvsadm_reads_back_as_specs(guest: dict[str, Any]) -> None:
    assert guest["theirs_table"] == guest["expected_table"]
    assert guest["ours_table"] == guest["expected_table"]


def test_edits_apply_both_ways(guest: dict[str, Any]) -> None:
    listing = guest["after_edit"]["stdout"]
    assert "TCP  10.0.0.100:80 wrr persistent 30 mask 255.255.0.0" in listing
    assert ["->", "192.168.168.11:80", "Route", "9", "0", "0"] in [x.split() for x in listing.splitlines()]
    thresholds = guest["after_edit_thresholds"]["stdout"].splitlines()
    assert ["->", "192.168.168.11:80", "50", "5", "0", "0"] in [x.split() for x in thresholds]
    sched, timeout, dests = guest["read_edit"]
    assert sched == "lc" and timeout == 0  # ipvsadm -E without -p drops persistence
    assert ["192.168.168.12", 0, 4] in dests


def test_kernel_refusals_come_back_with_the_kernels_errno(guest: dict[str, Any]) -> None:
    e, n = guest["errors"], guest["errnos"]
    assert e["dup_service"] == n["EEXIST"]
    assert e["no_service_edit"] == n["ESRCH"]
    assert e["no_service_del"] == n["ESRCH"]
    assert e["no_service_get"] == n["ESRCH"]
    assert e["no_scheduler"] == n["ENOENT"]
    assert e["no_pe"] == n["ENOENT"]
    assert e["dup_dest"] == n["EEXIST"]
    assert e["no_dest_del"] == n["ENOENT"]
    assert e["no_dest_edit"] == n["ENOENT"]
    assert e["dest_no_service"] == n["ESRCH"]
    assert e["thresholds"] == n["ERANGE"]
    assert e["zero_no_service"] == n["ESRCH"]


def test_timeouts_set_only_nonzero_fields(guest: dict[str, Any]) -> None:
    assert guest["timeouts_ipvsadm"] == "Timeout (tcp tcpfin udp): 1000 120 77\n"
    assert guest["timeouts_read"] == [1000, 33, 77]


def test_flush_empties_the_table(guest: dict[str, Any]) -> None:
    assert guest["after_flush"] == ""
    assert guest["conns_empty"] == 0


def test_pipelined_apply_reports_each_refusal_and_goes_on(guest: dict[str, Any]) -> None:
    assert guest["pipeline_failures"] == [[50, 17], [500, 3]]
    assert guest["pipeline_services"] == 200
    assert guest["pipeline_dests"] == 2000
    assert guest["pipeline_save_lines"] == 2200


def test_sync_daemon_started_by_pylvsadm_lists_like_ipvsadm(guest: dict[str, Any]) -> None:
    assert guest["daemon_start"] == {"rc": 0, "stdout": "", "stderr": ""}
    theirs = guest["daemon_list_theirs"]
    assert theirs["stdout"].startswith("master sync daemon (mcast=pylvsy0, syncid=5")
    assert guest["daemon_list_ours"] == theirs
    assert guest["daemon_stop"]["rc"] == 0
    assert guest["daemon_after_stop"]["stdout"] == ""
