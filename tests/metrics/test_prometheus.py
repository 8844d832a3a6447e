"""Proof with a real Prometheus: it scrapes pylvsd (proxy plane, real traffic on loopback) every
second, and what its HTTP API answers is what ``pylvsadm -Ln --stats`` and ``-Ln`` print."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.metrics.conftest import Director, free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="the Debian prometheus package is not "
                       "installed (scripts/system-deps.sh test installs it as root)"),
    pytest.mark.slow,
]


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _scalar(port: int, expr: str) -> float | None:
    res = _query(port, expr)
    return float(res[0]["value"][1]) if len(res) == 1 else None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


def test_prometheus_scrapes_pylvsd(director: Director, tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    d = director
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pylvsd\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{d.metrics_port}']\n")
    with open(tmp_path / "prometheus.log", "wb") as log:
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=log, start_new_session=True)
    held: list[socket.socket] = []
    try:
        wait_for(lambda: _ready(port), timeout=60, what="prometheus to be ready")
        wait_for(lambda: _scalar(port, 'up{job="pylvsd"}') == 1, timeout=30,
                 what="a first successful scrape")
        # real traffic: requests that close, and three connections held open (active)
        for i in range(20):
            assert d.request(b"req %d" % i).startswith(b"rs")
        for _ in range(3):
            c = socket.create_connection((d.vip, d.vport), timeout=5)
            c.sendall(b"hold")
            assert c.recv(100).startswith(b"rs")
            held.append(c)
        vs = f"{d.vip}:{d.vport}"
        svc = f'local_address="{d.vip}",local_port="{d.vport}",proto="TCP"'

        def stats() -> list[int]:
            out = d.pylvsadm("-Ln", "--stats", "--exact")
            m = re.search(rf"TCP\s+{re.escape(vs)}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out)
            assert m, out
            return [int(x) for x in m.groups()]

        # once the proxy's once-a-second counter flush has landed, the figures stand still
        wait_for(lambda: stats() == stats() and stats()[4] > 0, what="settled counters")
        want = stats()
        names = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
                 "outgoing_bytes")

        def prom_counts() -> list[float | None]:
            return [_scalar(port, f"pylvs_ipvs_service_{n}_total{{{svc}}}") for n in names]

        # A late counter flush (the connections' closing packets) may move the figures after
        # they looked settled: compare Prometheus with what pylvsadm says now, until they agree.
        def agree() -> bool:
            nonlocal want
            want = stats()
            return prom_counts() == [float(x) for x in want]

        wait_for(agree, timeout=30, what=f"prometheus to see what pylvsadm says ({want})")
        assert want[0] >= 23
        # the whole table's counter (node_exporter's) is the same: one service
        assert _scalar(port, "node_ipvs_connections_total") == want[0]
        # per real server: weight, active and inactive as pylvsadm -Ln lists them
        listing = d.pylvsadm("-Ln")
        active_total = 0
        for a in d.real:
            m = re.search(rf"-> {re.escape(a)}:{d.rport}\s+Masq\s+(\d+)\s+(\d+)\s+(\d+)", listing)
            assert m, listing
            sel = f'{svc},remote_address="{a}",remote_port="{d.rport}"'
            for metric, value in (("node_ipvs_backend_weight", m.group(1)),
                                  ("node_ipvs_backend_connections_active", m.group(2)),
                                  ("node_ipvs_backend_connections_inactive", m.group(3))):
                wait_for(lambda metric=metric, value=value, sel=sel:  # type: ignore[misc]
                         _scalar(port, f"{metric}{{{sel}}}") == float(value), timeout=10,
                         what=f"{metric} of {a} = {value}")
            active_total += int(m.group(2))
        assert active_total == 3  # the three held connections
        assert _scalar(port, "sum(node_ipvs_backend_connections_active)") == 3
        # a rate over the scraped counter: traffic happened within the last minute
        rate = _scalar(port, f"rate(pylvs_ipvs_service_connections_total{{{svc}}}[1m])")
        assert rate is not None and rate > 0
        # the proxy plane's own counters
        accepted = _scalar(port, "pylvs_proxy_accepted_total")
        assert accepted is not None and accepted >= 23
    finally:
        for c in held:
            c.close()
        prom.terminate()
        try:
            prom.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
