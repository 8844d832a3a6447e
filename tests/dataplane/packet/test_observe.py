"""The lab's packet director observed as pylvsd is: ``pylvs top`` on its control socket (the
``observe`` operation), Prometheus metrics and the status page from ``serve_packet``'s own
``--metrics-address`` / ``--status-address``, all agreeing with ``pylvsadm`` after real
traffic through the namespace lab; a bad address is one line and exit 1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dataplane.packet.conftest import VIP, Cluster, cluster_fixture

METRICS_PORT = 9931
STATUS_PORT = 9932


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    yield from cluster_fixture("dr")


def start_observed(c: Cluster) -> subprocess.Popen[str]:
    """Replace the lab's director with one that serves metrics and status in its namespace."""
    old = c.procs[-1]
    assert "serve_packet" in " ".join(map(str, old.args))
    old.send_signal(signal.SIGTERM)
    old.wait(15)
    log = c.lab.state_dir / "observed.log"
    with open(log, "w") as f:
        p = c.lab.popen(c.director_host, [
            sys.executable, "-m", "pylvs.director.serve_packet", "--control-socket",
            c.control_socket, "--interfaces", "eth0,eth1",
            "--metrics-address", f"127.0.0.1:{METRICS_PORT}",
            "--status-address", f"127.0.0.1:{STATUS_PORT}"],
            stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    c.procs.append(p)
    deadline = time.monotonic() + 30
    while "director ready" not in log.read_text():
        assert p.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return p


def get(c: Cluster, port: int, path: str) -> str:
    r = c.lab.run(c.director_host, ["curl", "-sS", "--max-time", "5",
                                    f"http://127.0.0.1:{port}{path}"], timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_top_metrics_and_status_of_the_packet_director(cluster: Cluster) -> None:
    c = cluster
    start_observed(c)
    c.service("rr")
    assert len(set(c.curl_many(6))) == 2
    env = {**os.environ, "PYLVS_CONTROL_SOCKET": c.control_socket}
    top = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "top", "--once"],
                         capture_output=True, text=True, timeout=30, env=env)
    assert top.returncode == 0, top.stderr
    assert f"TCP {VIP}:80" in top.stdout, top.stdout
    for rip in c.rips:
        assert rip in top.stdout, top.stdout
    assert "packet" in top.stdout, top.stdout

    metrics = get(c, METRICS_PORT, "/metrics")
    conns = re.search(rf'pylvs_ipvs_service_connections_total\{{[^}}]*local_address='
                      rf'"{re.escape(VIP)}"[^}}]*\}} (\S+)', metrics)
    assert conns, metrics[:3000]
    listing = c.adm("-Ln", "--stats")
    m = re.search(rf"TCP\s+{re.escape(VIP)}:80\s+(\d+)", listing)
    assert m, listing
    assert float(conns.group(1)) == int(m.group(1)) == 6
    listing = c.adm("-Ln")
    for rip in c.rips:  # the counts pylvsadm shows (finished connections: inactive)
        row = re.search(rf"-> {re.escape(rip)}:80\s+Route\s+\d+\s+(\d+)\s+(\d+)", listing)
        assert row, listing
        for kind, want in (("active", row.group(1)), ("inactive", row.group(2))):
            got = re.search(rf'node_ipvs_backend_connections_{kind}\{{[^}}]*remote_address='
                            rf'"{re.escape(rip)}"[^}}]*\}} (\S+)', metrics)
            assert got and float(got.group(1)) == int(want), (kind, rip)

    doc = json.loads(get(c, STATUS_PORT, "/status.json"))
    (svc,) = doc["services"]
    assert svc["name"] == f"TCP {VIP}:80"
    assert {r["name"] for r in svc["real_servers"]} == {f"{rip}:80" for rip in c.rips}


def test_a_bad_metrics_address_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pylvs.director.serve_packet", "--control-socket",
                        str(tmp_path / "x.sock"), "--metrics-address", "127.0.0.1:http"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith("pylvs packet director: ") and "is not a port" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x.sock").exists()
