"""keepalived.conf on a kernel host: ``pylvs keepalived -f`` programs kernel IPVS, as keepalived
does, its checkers add and remove real servers there, and a SIGHUP that changes one real server
leaves the others' live connections in place. Checked in the VM with the real ipvsadm."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def guest() -> dict[str, Any]:
    return run_guest_script("guest_keepalived.py", 400)


def test_checkers_decide_what_the_kernel_table_holds(guest: dict[str, Any]) -> None:
    assert guest["only_healthy_server"], guest["log_tail"]
    assert guest["table_initial"] == {"10.99.9.11:80": 1}
    assert guest["second_comes_up"], guest["log_tail"]
    assert guest["failed_server_removed"], guest["log_tail"]


def test_sighup_changes_one_server_and_keeps_the_others_connections(guest: dict[str, Any]) -> None:
    assert guest["reloaded"], guest["log_tail"]
    assert guest["table_after_reload"] == {"10.99.9.11:80": 5, "10.99.9.12:80": 1}
    before = guest["conns_before"]
    assert before.count("10.99.9.11") == 2 and before.count("10.99.9.12") == 2  # rr
    assert guest["conns_after"] == before
    assert guest["clients_alive"], guest["log_tail"]


def test_lvs_timeouts_apply_and_stop_takes_the_virtual_servers_out(guest: dict[str, Any]) -> None:
    assert guest["timeouts"] == "Timeout (tcp tcpfin udp): 1000 120 200"
    # keepalived removes its own at exit
    assert "10.99.9.1:80" not in guest["table_after_stop"], (guest["stop"], guest["log_tail"])
