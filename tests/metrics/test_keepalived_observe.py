"""``pylvs keepalived`` with virtual servers on loopback: checkers' state and reason on the status
page (headless Chromium), in /status.json, in the metrics and in ``pylvs top``; a real server that
stops answering turns red with its reason."""

from __future__ import annotations

import json
import re
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.metrics.conftest import free_port, wait_for
from tests.metrics.test_status_chromium import CHROMIUM, _chromium


class _Quiet(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(100)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def keepalived(tmp_path: Path) -> Iterator[dict[str, object]]:
    import random

    base = random.randint(1, 120) * 2 + 1
    vip, real = f"127.0.{base}.100", [f"127.0.{base}.10", f"127.0.{base}.20"]
    servers = []
    rport = 0
    for a in real:
        srv = _Server((a, rport), _Quiet)
        rport = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    vport = free_port(vip)
    rs = "".join(f"""    real_server {a} {rport} {{
        weight 2
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
""" for a in real)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(f"""virtual_server {vip} {vport} {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    protocol TCP
{rs}}}
""")
    sock, mport, sport = str(tmp_path / "ka.sock"), free_port(), free_port()
    with open(tmp_path / "ka.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pylvs.cli.main", "keepalived", "-n", "-l", "-f", str(conf),
             "--dataplane", "proxy", "--control-socket", sock, "--metrics-address", str(mport),
             "--status-address", str(sport)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"proc": proc, "sock": sock, "mport": mport, "sport": sport, "vip": vip,
               "vport": vport, "real": real, "rport": rport, "servers": servers,
               "log": tmp_path / "ka.log", "tmp": tmp_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def _get(port: object, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return bytes(r.read())


def _states(k: dict[str, object]) -> dict[str, tuple[str, str | None]]:
    try:
        doc = json.loads(_get(k["sport"], "/status.json"))
    except OSError:
        return {}
    return {r["name"]: (r["health"]["state"], r["health"]["last_result"])
            for s in doc["services"] for r in s["real_servers"]}


def test_a_failing_real_server_shows_down_everywhere(keepalived: dict[str, object]) -> None:
    k = keepalived
    real, rport = k["real"], k["rport"]
    assert isinstance(real, list)
    rs1, rs2 = (f"{a}:{rport}" for a in real)
    wait_for(lambda: {s for s, _ in _states(k).values()} == {"up"}, timeout=20,
             what=f"both real servers up ({Path(str(k['log'])).read_text()[-1500:]})")
    servers = k["servers"]
    assert isinstance(servers, list)
    servers[0].shutdown()
    servers[0].server_close()  # the first real server stops answering
    wait_for(lambda: _states(k).get(rs1, ("", ""))[0] == "down", timeout=20,
             what="the first real server down")
    _state, reason = _states(k)[rs1]
    assert reason and reason != "success"  # the checker's own words (connection refused...)
    assert _states(k)[rs2][0] == "up"
    fams = {f.name: f for f in text_string_to_metric_families(
        _get(k["mport"], "/metrics").decode())}
    up = {s.labels["remote_address"]: s.value for s in fams["pylvs_health_real_server_up"].samples}
    assert up == {real[0]: 0.0, real[1]: 1.0}
    assert any(s.labels["kind"] == "TCP_CHECK" and s.value > 0
               for s in fams["pylvs_health_check_duration_seconds"].samples)
    weights = {s.labels["remote_address"]: s.value
               for s in fams["node_ipvs_backend_weight"].samples}
    assert weights == {real[1]: 2.0}  # keepalived takes a failed real server out of the table
    # pylvs top over the same control socket
    top = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "top", "--once",
                          "--control-socket", str(k["sock"])], capture_output=True, text=True,
                         timeout=30)
    assert top.returncode == 0, top.stderr
    assert re.search(rf"{re.escape(rs2)}\s+Masq\s+up\s+2\b", top.stdout), top.stdout
    assert re.search(rf"{re.escape(rs1)}\s+-\s+down\b", top.stdout), top.stdout
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/system-deps.sh test)")
    tmp = Path(str(k["tmp"]))
    shot = tmp / "keepalived-status.png"
    url = f"http://127.0.0.1:{k['sport']}/status"
    r = _chromium(tmp / "profile", "--window-size=1280,800", f"--screenshot={shot}", url)
    assert r.returncode == 0 and shot.stat().st_size > 5000
    dom = _chromium(tmp / "profile", "--dump-dom", url).stdout
    assert f'data-server="{rs2}" data-state="up"' in dom
    assert f'data-server="{rs1}" data-state="down"' in dom
    assert reason in dom or reason.replace("'", "&#x27;") in dom
