"""Scale-out with a scheduler other than ``mh``: the ECMP directors share their connections
through the IPVS sync protocol (each both master and backup on one group), so a flow the router
moves after a director dies finds its entry on the director it reaches.

- every director runs both daemons, and a new connection's entry reaches all of them (the time it
  takes is measured: up to the master's flush interval, as in the kernel);
- with ``rr`` and ``sloppy_tcp`` off, long-lived connections (streaming echo checked byte for
  byte, keep-alive HTTP pinned to one real server) survive losing one of three directors, and a
  fourth joining: the lab sets ``sync_refresh_period`` on every director, and the newcomer's
  ``pylvs scaleout`` holds its first announcement (the router sends it nothing) until its backup
  can have heard one refresh cycle, so the flows the router then moves to it find their entries.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pylvs.control.client import ControlClient
from pylvs.core.sync import FLUSH_AFTER
from pylvs.lab import router
from pylvs.lab.topology import Lab
from pylvs.scaleout.cli import request
from pylvs.scaleout.policy import JOIN_MARGIN

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def synced() -> Iterator[router.ECMPCluster]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    for tool in ("ip", "bird", "birdc"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (iproute2, bird2: scripts/system-deps.sh installs them)")
    lab = Lab(f"y{os.getpid() % 1000}{random.randrange(36**3):x}"[:8], hosts=router.ecmp_hosts(4))
    ecmp = router.ECMPCluster(lab, 3, scheduler="rr", sloppy=False, sync=True)
    try:
        lab.up()
        ecmp.start()
        ecmp.wait_next_hops({router.director_addr(k) for k in (1, 2, 3)}, timeout=30)
        yield ecmp
    finally:
        ecmp.stop()
        lab.down()


def _join_held_back(ecmp: router.ECMPCluster, k: int) -> dict[str, object]:
    """Start director ``k`` and follow its announcer until its first announcement: while the
    announcer says it holds it back, the router must have no route through ``k`` (the router's
    next hops are read *before* the announcer's status, so a hop seen beside a closed gate is
    the gate's fault, not a race). Its join status, once open."""
    ecmp.start_director(k)
    deadline = time.monotonic() + 30
    held = 0
    while True:
        assert time.monotonic() < deadline, "the announcer never announced"
        hops = router.next_hops(ecmp.lab)
        try:
            join = request(ecmp.speaker_socket(k), "status")["result"]["join"]
        except OSError:  # BIRD is up, the announcer's socket not yet
            time.sleep(0.1)
            continue
        if join["open"]:
            assert held > 0, "the announcer never held its first announcement back"
            return dict(join)
        held += 1
        assert router.director_addr(k) not in hops, (hops, join)
        time.sleep(0.2)


def test_rr_with_sync_keeps_long_lived_connections_when_one_of_three_dies_and_one_joins(
        synced: router.ECMPCluster) -> None:
    ecmp = synced
    lab = ecmp.lab
    for k in (1, 2, 3):
        with ControlClient(ecmp.control_socket(k)) as c:
            assert sorted(d.state for d in c.get_daemons()) == ["backup", "master"]
            sysctls = c.get_sysctl()
            assert (sysctls["sync_threshold"], sysctls["sync_refresh_period"]) == \
                ([0, 0], router.SYNC_REFRESH)
    # each announcer's metrics and status page, inside its director's namespace
    # (the announcer reads BIRD's sessions once a second: a session just established may show
    # "Active" for a poll, so the page is read again until it says Established)
    want = ('pylvs_bgp_announced{vip="10.171.0.100/32"} 1.0',
            'pylvs_bgp_session_up{neighbor="10.170.0.1",remote_as="65000"} 1.0')
    deadline = time.monotonic() + 15
    while True:
        m = lab.run("dir1", ["curl", "-sf", f"http://{router.STATUS_ADDRESS}/metrics"], timeout=20)
        if all(w in m.stdout for w in want) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for w in want:
        assert w in m.stdout, m.stdout[-1500:]
    doc = json.loads(lab.run("dir1", ["curl", "-sf", f"http://{router.STATUS_ADDRESS}/status.json"],
                             timeout=20).stdout)
    assert doc["bgp"]["announced"] == ["10.171.0.100/32"]
    assert {s["name"] for s in doc["services"]} == {"TCP 10.171.0.100:80",
                                                    "TCP 10.171.0.100:9000"}, doc["services"]
    # a new entry reaches every director, within the master's flush interval and a poll
    delays = router.sync_delays(ecmp, count=6, spacing=0.3)
    assert len(delays) == 6 and delays[0] >= 0 and delays[-1] < FLUSH_AFTER + 1.5, delays

    echo = router.start_echo_servers(lab)
    try:
        hold = lab.popen("client", [sys.executable, "-m", "pylvs.lab.router", "hold", "--echo",
                                    "20", "--http", "20", "--seconds", "24"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
        time.sleep(4.5)  # every connection established and synced (flush after 2 s)
        with ControlClient(ecmp.control_socket(2)) as c:
            scheduled_by_dir2 = sum(s.stats.conns for s in c.get_services())
        assert scheduled_by_dir2 > 0  # dir2 carries flows that must move when it dies
        ecmp.kill("dir2-director")
        ecmp.wait_next_hops({router.director_addr(1), router.director_addr(3)}, timeout=5)
        # a fourth director joins while the connections run: held back one refresh cycle
        join = _join_held_back(ecmp, 4)
        assert join["wait"] == router.SYNC_REFRESH + FLUSH_AFTER + JOIN_MARGIN, join
        assert "refresh cycle" in str(join["why"]), join
        ecmp.wait_next_hops({router.director_addr(k) for k in (1, 3, 4)}, timeout=20)
        log = ecmp.log_text("dir4-scaleout.log")
        assert "joining: first announcement in " in log and "joining: waited " in log, log
        with ControlClient(ecmp.control_socket(4)) as c:  # it learnt them before its route
            assert c.status()["sync"]["backup"]["entries_created"] >= 20, c.status()["sync"]
        out, err = hold.communicate(timeout=60)
        assert hold.returncode == 0, err
        result = json.loads(out)
        assert result["echo_broken"] == 0 and result["http_broken"] == 0, result
        assert result["echo_ok"] == 20 and result["http_ok"] == 20, result
        assert result["bytes"] > 0 and result["requests"] > 20 * 10
        # the survivors forwarded flows they never scheduled: from entries the sync gave them
        created = 0
        for k in (1, 3):
            with ControlClient(ecmp.control_socket(k)) as c:
                created += c.status()["sync"]["backup"]["entries_created"]
        assert created >= scheduled_by_dir2
    finally:
        for p in echo:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)


def test_lab_up_sync_without_ecmp_is_refused_in_one_line() -> None:
    if os.geteuid() != 0:
        pytest.skip("pylvs lab up checks for root first")
    r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "lab", "--id", "nosync", "up",
                        "--sync"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == "pylvs lab up: --sync goes with --ecmp (the ECMP directors " \
        "share connections)"
    assert r.stdout == ""


def test_lab_up_with_an_unknown_scheduler_is_refused_before_building_anything() -> None:
    if os.geteuid() != 0:
        pytest.skip("pylvs lab up checks for root first")
    r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "lab", "--id", "nosched", "up",
                        "--ecmp", "--scheduler", "bogus", "--sync"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("pylvs lab up: --scheduler bogus: no such scheduler (one of rr, ")
    assert len(r.stderr.splitlines()) == 1
    assert not any("nosched" in ns for ns in os.listdir("/run/netns")) \
        if os.path.isdir("/run/netns") else True


@pytest.mark.parametrize("words", [["--ecmp", "--sync-refresh", "1"],
                                   ["--ecmp", "--sync", "--sync-refresh", "-1"]])
def test_lab_up_sync_refresh_without_sync_or_below_0_is_refused_in_one_line(
        words: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("pylvs lab up checks for root first")
    r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "lab", "--id", "norefr", "up",
                        *words], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr == ("pylvs lab up: --sync-refresh takes seconds (0 or more) and goes with "
                        "--sync\n")
    assert r.stdout == ""
