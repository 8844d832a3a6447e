"""BGP state where operators look: the announcer's status document, status page and metrics
(``pylvs scaleout run --status-address/--metrics-address``) and ``pylvs keepalived -t`` on a
keepalived.conf holding a ``pylvs_bgp`` block."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from pylvs.core.api import DestStatus, ServiceStatus
from pylvs.core.model import DestSpec, ServiceKey, ServiceSpec
from pylvs.metrics.collectors import registry_for
from pylvs.metrics.page import render_page
from pylvs.metrics.server import ObservabilityServer
from pylvs.metrics.sources import build_document
from pylvs.scaleout import bird as B
from pylvs.scaleout.config import BGPConfig, Neighbor
from pylvs.scaleout.policy import Observation, decide
from pylvs.scaleout.speaker import Speaker

A = ipaddress.ip_address
CFG = BGPConfig(A("10.170.0.11"), 65001,  # type: ignore[arg-type]
                (Neighbor(A("10.170.0.1"), 65000, hold_time=3, bfd=True),), withdraw_wait=0)


def _speaker(tmp_path: Path) -> Speaker:
    """A speaker that has looked at a director once (not started: no BIRD, no sockets), with
    one VIP that has quorum, one that has not, and its one session Established."""
    sp = Speaker(CFG, str(tmp_path / "no-director.sock"), str(tmp_path / "so.sock"),
                 str(tmp_path / "run"), "/usr/sbin/bird")
    ok = ServiceStatus(ServiceSpec(ServiceKey.inet(6, "10.171.0.100", 80), "mh"),
                       (DestStatus(DestSpec(A("10.1.0.1"), 80, weight=1)),))
    dead = ServiceStatus(ServiceSpec(ServiceKey.inet(6, "10.171.0.200", 80), "mh"),
                         (DestStatus(DestSpec(A("10.1.0.2"), 80, weight=0)),))
    sp.last = Observation(True, "packet", (ok, dead))
    sp.announcer.update(decide(CFG.vips, sp.last, draining=False))
    sp.sessions[0] = B.SessionState("Established", "")
    return sp


def test_the_status_document_page_and_metrics_show_what_is_announced_and_the_sessions(
        tmp_path: Path) -> None:
    sp = _speaker(tmp_path)
    sources = sp.sources()
    doc = build_document(sources)
    assert doc["daemon"] == "pylvs scaleout"
    assert doc["services"] == []  # the director does not answer: nothing listed, no error
    bgp = doc["bgp"]
    assert bgp["announced"] == ["10.171.0.100/32"] and bgp["draining"] is False
    by = {v["prefix"]: v for v in bgp["vips"]}
    assert by["10.171.0.100/32"]["announced"] is True
    assert by["10.171.0.200/32"]["announced"] is False
    assert "no quorum" in by["10.171.0.200/32"]["reason"]
    assert bgp["neighbors"] == [{"address": "10.170.0.1", "remote_as": 65000,
                                 "state": "Established", "last_error": ""}]
    page = render_page(doc)
    assert '<table id="bgp">' in page and "10.171.0.200/32" in page and "no quorum" in page
    assert '<table id="bgp-neighbors">' in page and "Established" in page

    # a drained announcer and a session that went down: seen at the next scrape
    sp.draining = True
    sp.announcer.update(decide(CFG.vips, sp.last, draining=True))
    sp.sessions[0] = B.SessionState("Active", "Socket: Connection refused")
    with ObservabilityServer(sources, metrics=("127.0.0.1", 0), status=("127.0.0.1", 0)) as srv:
        [(host, port)] = srv.addresses  # one port serves both
        text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
        status = json.loads(urllib.request.urlopen(f"http://{host}:{port}/status.json",
                                                   timeout=10).read())
    assert 'pylvs_bgp_announced{vip="10.171.0.100/32"} 0.0' in text
    assert 'pylvs_bgp_announced{vip="10.171.0.200/32"} 0.0' in text
    assert "pylvs_bgp_draining 1.0" in text
    assert 'pylvs_bgp_session_up{neighbor="10.170.0.1",remote_as="65000"} 0.0' in text
    assert 'pylvs_bgp_session_state{neighbor="10.170.0.1",remote_as="65000",state="Active"} ' \
        '1.0' in text
    assert status["bgp"]["draining"] is True and status["bgp"]["announced"] == []
    assert status["bgp"]["neighbors"][0]["last_error"] == "Socket: Connection refused"


def test_no_bgp_section_or_series_without_an_announcer() -> None:
    from pylvs.metrics.sources import Sources

    sources = Sources("pylvsd")
    assert build_document(sources)["bgp"] is None
    names = {m.name for m in registry_for(sources).collect()}
    assert not any(n.startswith("pylvs_bgp") for n in names)
    assert 'id="bgp"' not in render_page(build_document(sources))


def _keepalived_t(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylvs.cli.main", "keepalived", "-t", "-f",
                           str(path)], capture_output=True, text=True, timeout=60)


KEEPALIVED_CONF = """\
virtual_server 10.171.0.100 80 {{
    lb_algo mh
    lb_kind DR
    protocol TCP
    real_server 192.168.168.10 80 {{
    }}
}}
pylvs_bgp {{
    router_id 10.170.0.11
    local_as 65001
    neighbor 10.170.0.1 {{
        remote_as {remote_as}
        hold_time 3
        bfd
    }}
    vip 10.171.0.100
}}
"""


def test_keepalived_t_warns_as_keepalived_and_shows_what_pylvs_scaleout_would_do(
        tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(remote_as=65000))
    r = _keepalived_t(conf)
    assert r.returncode == 0, r.stderr
    assert f"{conf}:8: warning: Unknown keyword 'pylvs_bgp'" in r.stderr  # as keepalived
    shown = r.stderr.split("pylvs_bgp (for pylvs scaleout run --config, not keepalived):\n", 1)
    assert len(shown) == 2, r.stderr
    assert shown[1].splitlines()[:4] == [
        "  router id 10.170.0.11, local AS 65001",
        "  neighbor 10.170.0.1 AS 65000: hold 3 s, keepalive 1 s, connect retry 5 s, BFD",
        "  announces only: 10.171.0.100",
        "  withdraw wait 2 s, poll interval 1 s"]


def test_keepalived_t_says_why_pylvs_scaleout_would_refuse_a_bad_block(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(remote_as="many"))
    r = _keepalived_t(conf)
    assert r.returncode == 0, r.stderr  # keepalived's own exit code: not keepalived's block
    assert f"pylvs_bgp: pylvs scaleout would refuse it: {conf}:12: remote_as: 'many' is not " \
        "a whole number" in r.stderr
    assert "for pylvs scaleout run --config" not in r.stderr


def test_keepalived_t_without_a_pylvs_bgp_block_says_nothing_of_it(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(remote_as=1).split("pylvs_bgp")[0])
    r = _keepalived_t(conf)
    assert r.returncode == 0, r.stderr
    assert "pylvs_bgp" not in r.stderr
