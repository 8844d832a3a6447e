"""pylvsd serving /metrics, /status, /status.json and /admin, with real traffic through its proxy
plane on loopback: the figures are those ``pylvsadm -Ln --stats`` prints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.metrics.conftest import SECRET, Director, free_port, wait_for


def _metrics(d: Director) -> dict[str, Any]:
    code, body = d.get("/metrics", d.metrics_port)
    assert code == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    for s in fams[name].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"{name} {labels} not found")


def _stats_lines(d: Director) -> dict[str, list[int]]:
    """``pylvsadm -Ln --stats --exact``: address -> Conns InPkts OutPkts InBytes OutBytes."""
    out = d.pylvsadm("-Ln", "--stats", "--exact")
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*(?:TCP|->)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", line)
        if m:
            rows[m.group(1)] = [int(x) for x in m.groups()[1:]]
    return rows


def test_metrics_match_pylvsadm_after_real_traffic(director: Director) -> None:
    for i in range(6):
        assert director.request(b"hello %d" % i).startswith(b"rs")
    vs = f"{director.vip}:{director.vport}"
    # the proxy hands its batched byte counts to the core once a second
    wait_for(lambda: _stats_lines(director)[vs][3] > 0, what="byte counters")
    fams = _metrics(director)
    stats = _stats_lines(director)
    svc = {"local_address": director.vip, "local_port": str(director.vport), "proto": "TCP"}
    for i, name in enumerate(("connections", "incoming_packets", "outgoing_packets",
                              "incoming_bytes", "outgoing_bytes")):
        assert _sample(fams, f"pylvs_ipvs_service_{name}", **svc) == stats[vs][i], name
    assert stats[vs][0] >= 6
    listing = director.pylvsadm("-Ln")
    for a in director.real:
        m = re.search(rf"-> {re.escape(a)}:{director.rport}\s+Masq\s+(\d+)\s+(\d+)\s+(\d+)",
                      listing)
        assert m, listing
        lab = {**svc, "remote_address": a, "remote_port": str(director.rport)}
        assert _sample(fams, "node_ipvs_backend_weight", **lab) == int(m.group(1))
        assert _sample(fams, "node_ipvs_backend_connections_active", **lab) == int(m.group(2))
        assert _sample(fams, "node_ipvs_backend_connections_inactive", **lab) == int(m.group(3))
    assert _sample(fams, "node_ipvs_connections") == stats[vs][0]  # the only service
    assert _sample(fams, "pylvs_proxy_accepted") >= 6


def test_status_json_page_and_404(table_director: Director) -> None:
    director = table_director
    code, body = director.get("/status.json")
    assert code == 200
    doc = json.loads(body)
    assert doc["daemon"] == "pylvsd" and doc["version"] == 1
    (svc,) = doc["services"]
    assert svc["name"] == f"TCP {director.vip}:{director.vport}"
    assert {r["name"] for r in svc["real_servers"]} == {
        f"{a}:{director.rport}" for a in director.real}
    code, page = director.get("/status")
    assert code == 200 and b"<!DOCTYPE html>" in page
    assert b'http-equiv="refresh"' in page
    assert b"http://" not in page.replace(b'href="/status.json"', b"")  # no external asset
    for path in ("/nope", "/metrics", "/status.json/x", "/admin"):
        assert director.get(path)[0] == 404, path
    assert director.get("/status", director.metrics_port)[0] == 404  # metrics port: /metrics only
    assert director.get("/", director.metrics_port)[0] == 404


def _admin(d: Director, body: Any, secret: str | None = SECRET) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    req = urllib.request.Request(f"http://127.0.0.1:{d.status_port}/admin", data=data,
                                 method="POST")
    if secret is not None:
        req.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


def _weight(d: Director, addr: str) -> int:
    m = re.search(rf"-> {re.escape(addr)}:{d.rport}\s+\S+\s+(\d+)", d.pylvsadm("-Ln"))
    assert m
    return int(m.group(1))


def test_admin_drain_enable_weight_through_the_control_socket(table_director: Director) -> None:
    director = table_director
    svc = f"TCP {director.vip}:{director.vport}"
    rs = f"{director.real[0]}:{director.rport}"
    req = {"action": "drain", "service": svc, "server": rs}
    assert _admin(director, req, secret=None)[0] == 403
    assert _admin(director, req, secret="wrong-secret")[0] == 403
    assert _weight(director, director.real[0]) == 1
    code, res = _admin(director, {"action": "weight", "service": svc, "server": rs, "weight": 7})
    assert code == 200 and res["weight"] == 7
    assert _weight(director, director.real[0]) == 7
    assert _admin(director, req)[0] == 200
    assert _weight(director, director.real[0]) == 0
    assert _admin(director, {"action": "enable", "service": svc, "server": rs})[0] == 200
    assert _weight(director, director.real[0]) == 7  # the weight it had before the drain
    # refused requests change nothing and say why in one line
    for bad, code_wanted, words in (
        ({"action": "weight", "service": svc, "server": rs, "weight": -1}, 400, "weight"),
        ({"action": "explode", "service": svc, "server": rs}, 400, "action"),
        ({"action": "drain", "service": "TCP nowhere", "server": rs}, 400, "bad service"),
        ({"action": "drain", "service": svc, "server": "127.9.9.9:1"}, 409,
         "No such destination"),
        ({"action": "drain", "service": "TCP 127.9.9.9:1", "server": rs}, 409,
         "Service not defined"),
        (b"{not json", 400, ""),
        ([1, 2], 400, "object"),
    ):
        code, res = _admin(director, bad)
        assert code == code_wanted, (bad, res)
        assert words in res["error"] and "\n" not in res["error"]
    assert _weight(director, director.real[0]) == 7


def _pylvsd(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pylvs.director.main", "--control-socket", str(tmp / "x.sock"),
         "--dataplane", "none", *args], capture_output=True, text=True, timeout=30)


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    busy = free_port()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        for args, words in (
            (["--metrics-address", "127.0.0.1:http"], "is not a port"),
            (["--metrics-address", "localhost:9100"], "is not an IP address"),
            (["--status-address", "70000"], "is not a port"),
            (["--metrics-address", f"127.0.0.1:{busy}"], "cannot listen"),
            (["--status-admin-secret-file", str(tmp_path / "none")], "needs --status-address"),
            (["--status-address", "0", "--status-admin-secret-file", str(tmp_path / "none")],
             "No such file"),
        ):
            r = _pylvsd(tmp_path, *args)
            assert r.returncode == 1, (args, r.stderr)
            assert r.stderr.startswith("pylvsd: ") and words in r.stderr, r.stderr
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x.sock").exists()
