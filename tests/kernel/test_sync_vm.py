"""Connection sync interoperates with the kernel's IPVS sync daemons (Debian's kernel in the VM):
a pylvs master's connections appear in the kernel backup's table, and a kernel master's in the
pylvs backup's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import run_guest_script

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def guest() -> dict[str, Any]:
    return run_guest_script("guest_sync.py", 500)


def test_both_sides_run_master_and_backup(guest: dict[str, Any]) -> None:
    assert "master sync daemon (mcast=kv, syncid=4" in guest["kernel_daemons"]
    assert "backup sync daemon (mcast=kv, syncid=3" in guest["kernel_daemons"]
    assert guest["pylvs_daemons"] == ["master", "backup"]


def test_kernel_backup_learns_a_pylvs_masters_connection(guest: dict[str, Any]) -> None:
    assert guest["kernel_learned_pylvs_conn"], guest["kernel_conns"]


def test_pylvs_backup_learns_a_kernel_masters_connection(guest: dict[str, Any]) -> None:
    assert guest["pylvs_learned_kernel_conn"], (guest["pylvs_conns"], guest["pylvs_status_sync"])


def test_pylvsd_on_the_kernel_plane_starts_the_kernels_daemon(guest: dict[str, Any]) -> None:
    assert "master sync daemon (mcast=dd0, syncid=7" in guest["kernel_plane_daemons"]
    assert guest["kernel_plane_listed"] == ["master"]
    assert guest["kernel_plane_after_stop"] == ""
