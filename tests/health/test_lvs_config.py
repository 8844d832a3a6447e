"""The LVS part of real keepalived.conf files: keepalived's own samples and the shared corpus."""

from __future__ import annotations

import csv
import glob
from pathlib import Path

import pytest

from pylvs.config import keepalived
from pylvs.core.model import ForwardingMethod, ServiceFlags
from pylvs.health.checkers import interpret
from pylvs.health.checkers.file import FileOptions
from pylvs.health.checkers.udp import UdpOptions

SAMPLES = sorted(glob.glob("/usr/share/doc/keepalived/samples/keepalived.conf.*"))
CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "keepalived"


@pytest.mark.skipif(not SAMPLES, reason="keepalived's samples are not installed (apt package keepalived)")
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_every_keepalived_sample_virtual_server_parses_without_error(path: str) -> None:
    cfg = keepalived.load(path, strict=False)
    lvs = interpret(cfg.other)
    assert lvs.errors == []
    for d in lvs.diagnostics:  # anything not implemented is said, with file:line
        assert d.file and d.line > 0


def _corpus() -> list[tuple[str, str]]:
    index = CORPUS / "INDEX.tsv"
    if not index.exists():
        return []
    with open(index, encoding="utf-8") as f:
        return [(r["file"], r["verdict"]) for r in csv.DictReader(f, delimiter="\t")]


@pytest.mark.skipif(not _corpus(), reason="shared keepalived corpus not present")
@pytest.mark.parametrize(("name", "verdict"), _corpus() or [("none", "none")])
def test_corpus_files_accepted_by_keepalived_have_no_lvs_errors(name: str, verdict: str) -> None:
    cfg = keepalived.load(str(CORPUS / name), strict=False)
    lvs = interpret(cfg.other)
    if verdict == "accepted":
        assert lvs.errors == [], [str(e) for e in lvs.errors]
    for vs in lvs.virtual_servers:
        assert vs.services, f"{name}: {vs.name} produced no IPVS service"


def test_sample_fwmark_and_group_expand_to_services() -> None:
    text = """
virtual_server_group web {
    192.168.201.100-102 80
    10.0.0.0/30 443
    fwmark 7
}
virtual_server group web {
    lb_algo sh
    sh-port
    lb_kind TUN type gue port 6080 csum
    persistence_timeout
    persistence_granularity 255.255.255.0
    real_server 192.168.200.2 {
        weight 3
    }
}
virtual_server fwmark 9 {
    lvs_sched wrr
    lvs_method DR
}
"""
    lvs = interpret(keepalived.parse_text(text, "g.conf").other)
    assert lvs.errors == []
    web, mark = lvs.virtual_servers
    keys = [str(s.key) for s in web.services]
    assert keys == [
        "TCP 192.168.201.100:80", "TCP 192.168.201.101:80", "TCP 192.168.201.102:80",
        "TCP 10.0.0.0:443", "TCP 10.0.0.1:443", "TCP 10.0.0.2:443", "TCP 10.0.0.3:443", "FWM 7",
    ]
    spec = web.services[0]
    assert spec.scheduler == "sh" and spec.flags & ServiceFlags.SCHED2
    assert spec.timeout == 360 and spec.netmask == 0xFFFFFF00
    (rs,) = web.real_servers
    assert rs.dest.fwd == ForwardingMethod.TUNNEL and rs.dest.tun_port == 6080 and rs.dest.weight == 3
    assert mark.services[0].key.fwmark == 9 and mark.services[0].scheduler == "wrr"


def test_nb_get_retry_counts_in_http_get_only_as_keepalived_does() -> None:
    text = """
virtual_server 10.0.0.1 80 {
    real_server 10.0.1.1 80 {
        HTTP_GET {
            url {
                path /
            }
            nb_get_retry 4
        }
        TCP_CHECK {
            nb_get_retry 3
        }
    }
}
"""
    lvs = interpret(keepalived.parse_text(text, "n.conf").other)
    http, tcp = lvs.virtual_servers[0].real_servers[0].checkers
    assert http.retry == 4
    assert tcp.retry == 1  # ignored there, as keepalived 2.2.7 ignores it
    assert [(d.line, d.severity) for d in lvs.diagnostics] == [(11, "warning")]
    assert "nb_get_retry" in lvs.diagnostics[0].message


def test_udp_and_ping_checks_read_keepalived_hex_strings_and_lengths() -> None:
    text = """
virtual_server 10.0.0.1 53 {
    protocol UDP
    real_server 10.0.1.1 53 {
        UDP_CHECK {
            payload Ab12f 3 456 546443123
            require_reply 0x 12
            min_reply_length 2
            max_reply_length 40
        }
        PING_CHECK {
            connect_timeout 2
        }
    }
}
"""
    lvs = interpret(keepalived.parse_text(text, "u.conf").other)
    udp, ping = lvs.virtual_servers[0].real_servers[0].checkers
    assert udp.kind == "UDP_CHECK" and udp.connect_port == 53
    opts = udp.options
    assert isinstance(opts, UdpOptions)
    assert opts.payload == bytes.fromhex("AB120F0345065464431203")
    assert opts.require_reply and opts.reply_value == b"\x00\x12" and opts.reply_mask == b"\xf0\xff"
    assert (opts.min_reply_length, opts.max_reply_length) == (2, 40)
    assert ping.kind == "PING_CHECK" and ping.connect_timeout == 2
    assert lvs.diagnostics == []


def test_udp_check_with_bad_hex_or_lengths_is_an_error_at_its_line() -> None:
    text = """
virtual_server 10.0.0.1 53 {
    real_server 10.0.1.1 53 {
        UDP_CHECK {
            payload 12zz
        }
        UDP_CHECK {
            min_reply_length 9
            max_reply_length 3
        }
    }
}
"""
    lvs = interpret(keepalived.parse_text(text, "b.conf").other)
    errors = [(d.line, d.severity) for d in lvs.diagnostics]
    assert errors == [(5, "error"), (7, "error")]
    assert "12zz" in lvs.diagnostics[0].message


def test_file_check_needs_a_defined_track_file() -> None:
    text = """
track_file maint {
    file /run/maint
    weight 0 reverse
}
virtual_server 10.0.0.1 80 {
    real_server 10.0.1.1 80 {
        FILE_CHECK {
            track_file maint
        }
        FILE_CHECK {
            track_file nosuch
        }
    }
}
"""
    cfg = keepalived.parse_text(text, "f.conf")
    lvs = interpret(cfg.other, cfg.track_files)
    (chk,) = lvs.virtual_servers[0].real_servers[0].checkers
    assert (chk.kind, chk.options) == ("FILE_CHECK", FileOptions("/run/maint", 0, True))
    assert [(d.line, d.severity) for d in lvs.diagnostics] == [(12, "error")]
    assert "no track_file named 'nosuch'" in lvs.diagnostics[0].message
