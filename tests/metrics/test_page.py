"""The status page and the HTTP server in-process: escaping, read-only by default, 404s."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceKey,
    ServiceSpec,
    parse_address,
)
from pylvs.core.table import IPVSTable
from pylvs.metrics.server import Admin, MetricsError, ObservabilityServer, parse_listen
from pylvs.metrics.sources import CheckerView, RealServerHealth, Sources
from tests.metrics.conftest import free_port

KEY = ServiceKey.inet(Protocol.TCP, "10.0.0.1", 80)
EVIL = '<script>alert("x")</script>&'


def _sources() -> Sources:
    t = IPVSTable()
    t.add_service(ServiceSpec(KEY))
    t.add_dest(KEY, DestSpec(parse_address("10.0.1.1"), 80, ForwardingMethod.MASQ, 2))
    chk = CheckerView("MISC_CHECK", "k.conf:3", False, f"script said {EVIL}", 1.0)
    health = {(KEY, "10.0.1.1:80"): RealServerHealth(f"vs {EVIL}", False, (chk,))}
    vrrp = {"instances": {f"VI_{EVIL}": {"state": "BACKUP", "vrid": 1, "interface": "eth0",
                                         "vips": [], "stats": {}, "split_brain": None}}}
    return Sources("keepalived", table=lambda: t, health=lambda: health, vrrp=lambda: vrrp)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def _post(port: int, body: dict[str, Any], secret: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_every_configured_string_is_escaped() -> None:
    with ObservabilityServer(_sources(), status=("127.0.0.1", 0)) as srv:
        port = srv.addresses[0][1]
        code, page = _get(port, "/status")
        assert code == 200
        assert b"<script>" not in page
        assert b"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
        assert page.count(b"&lt;script&gt;") == 3  # checker result, virtual_server, instance
        assert _get(port, "/")[1].count(b"&lt;script&gt;") == 3
        doc = json.loads(_get(port, "/status.json")[1])  # JSON: the raw text, JSON-quoted
        assert doc["services"][0]["real_servers"][0]["health"]["last_result"].endswith(EVIL)


def test_read_only_without_a_secret_and_404_elsewhere() -> None:
    src = _sources()
    mport, sport = free_port(), free_port()
    with ObservabilityServer(src, metrics=("127.0.0.1", mport), status=("127.0.0.1", sport)):
        body = {"action": "drain", "service": "TCP 10.0.0.1:80", "server": "10.0.1.1:80"}
        assert _post(sport, body, "anything-at-all") == 404
        for path in ("/x", "/status/", "/metrics/", "/..", "/admin"):
            assert _get(sport, path)[0] == 404, path
            assert _get(mport, path)[0] == 404, path
        assert _get(mport, "/metrics")[0] == 200
    table = src.table() if src.table else None
    assert table is not None and next(iter(table.services())).destinations[0].weight == 2


def test_shared_port_and_admin_on_a_table() -> None:
    src = _sources()
    table = src.table() if src.table else None
    assert table is not None
    admin = Admin("secret-secret", lambda: table)
    port_addr = ("127.0.0.1", 0)
    with ObservabilityServer(src, metrics=port_addr, status=port_addr, admin=admin) as srv:
        ((_, port),) = srv.addresses  # one server for all paths
        assert _get(port, "/metrics")[0] == 200 and _get(port, "/status.json")[0] == 200
        body = {"action": "drain", "service": "TCP 10.0.0.1:80", "server": "10.0.1.1:80"}
        assert _post(port, body, "secret-secre") == 403
        assert _post(port, body, "secret-secret") == 200
        assert table.lookup(KEY).destinations[0].weight == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("text,want", [
    ("9100", ("127.0.0.1", 9100)), (":9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9100", ("::1", 9100)),
])
def test_listen_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["", "x", "1.2.3.4:", "host:80", "[::1]80", "1.2.3.4:99999"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(MetricsError):
        parse_listen(text)
