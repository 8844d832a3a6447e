"""The kernel data plane in a VM: a Director's table mirrored into kernel IPVS, adopting the
kernel's existing table at start, one netlink request per change, refusals re-read and reported,
and the kernel's counters and connections read back into the table."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script

# A boot under TCG on a loaded machine can take minutes: more than the default per-test limit.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def guest() -> dict[str, Any]:
    return run_guest_script("guest_dataplane.py", 300)


def test_start_adopts_kernel_entries_and_pushes_the_tables(guest: dict[str, Any]) -> None:
    assert sorted(guest["adopted"]) == [
        "TCP 10.99.0.1:80 -> 10.99.0.1:80", "TCP 10.99.0.1:80 -> 192.168.50.3:80",
    ]
    assert guest["timeouts_adopted"] == [700, 100, 200]
    # edit .2's weight, add .4, add the UDP service and its server: four requests, no flush
    assert guest["start_requests"] == 4
    assert guest["kernel_after_start"] == guest["table_after_start"]
    web = guest["kernel_after_start"][0]
    assert ["192.168.50.2", 80, 0, 5] in web[3] and ["192.168.50.3", 80, 0, 1] in web[3]


def test_one_server_change_is_one_request(guest: dict[str, Any]) -> None:
    assert guest["edit_requests"] == 1
    assert guest["more_requests"] == 4
    assert guest["kernel_after_changes"] == guest["table_after_changes"]


def test_kernel_refusal_is_reported_not_hidden(guest: dict[str, Any]) -> None:
    assert guest["refused"] == [
        "kernel refused a change to TCP 10.99.0.2:80: No such file or directory"
    ]
    assert guest["out_of_sync"] == {"TCP 10.99.0.2:80": "in the table, missing from the kernel"}


def test_kernel_counters_and_connections_reach_the_table(guest: dict[str, Any]) -> None:
    assert guest["traffic"] == ["hi", "hi", "hi"]
    assert guest["table_conns"] == 3
    assert guest["table_dest_conns"]["10.99.0.1:80"] == 3
    assert len(guest["connections"]) == 3
    assert all(d == "10.99.0.1" for _s, d in guest["connections"])


def test_zero_through_the_table_zeroes_the_kernel(guest: dict[str, Any]) -> None:
    assert guest["kernel_conns_after_zero"] == 0


def test_stop_leaves_the_kernel_table_in_place(guest: dict[str, Any]) -> None:
    assert guest["kernel_after_stop"] == 1


def test_timeouts_set_in_the_table_reach_the_kernel(guest: dict[str, Any]) -> None:
    assert guest["kernel_timeouts"] == [901, 100, 200]


def test_settings_the_kernel_has_are_the_kernels(guest: dict[str, Any]) -> None:
    """drop_entry given before the start goes to the kernel; am_droprate, which nobody gave,
    is taken from the kernel; a later write (sloppy_tcp, drop_packet) reaches the kernel at
    once; the rest stay as the kernel has them (pylvs's own default secure_tcp 1 is not
    pushed onto a host that left it at 0)."""
    assert guest["sysctl_kernel_after_start"] == {
        "am_droprate": 20, "drop_entry": 3, "drop_packet": 0, "sloppy_tcp": 0, "secure_tcp": 0}
    assert guest["sysctl_table_after_start"] == guest["sysctl_kernel_after_start"]
    assert guest["sysctl_kernel_after_set"] == {
        "am_droprate": 20, "drop_entry": 3, "drop_packet": 3, "sloppy_tcp": 1, "secure_tcp": 0}
