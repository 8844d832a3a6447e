"""keepalived.conf parser: real-world files, keepalived's samples, grammar corners, and fuzzing."""

from __future__ import annotations

import csv
import glob
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.config import keepalived as K
from pylvs.config.grammar import ConfigError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
CORPUS = SHARED / "corpus" / "keepalived"
SAMPLES = Path("/usr/share/doc/keepalived/samples")


def corpus_rows() -> list[dict[str, str]]:
    index = CORPUS / "INDEX.tsv"
    if not index.exists():
        return []
    with index.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.skipif(not (CORPUS / "INDEX.tsv").exists(), reason="shared keepalived corpus not present")
@pytest.mark.parametrize("row", corpus_rows(), ids=lambda r: r["file"])
def test_corpus_file_parses_as_keepalived_judged_it(row: dict[str, str]) -> None:
    from pylvs.health.checkers import interpret

    path = str(CORPUS / row["file"])
    cfg = K.load(path, strict=False)
    diagnostics = [*cfg.diagnostics, *interpret(cfg.other).diagnostics]  # VRRP and LVS parts
    errors = [d for d in diagnostics if d.severity == "error"]
    if row["verdict"] == "accepted":
        assert errors == [], errors
        assert cfg.vrrp_instances, "every accepted corpus file has a vrrp_instance"
        for inst in cfg.vrrp_instances:
            assert 1 <= inst.virtual_router_id <= 255 and inst.virtual_ipaddress
        return
    # rejected: where keepalived named a line, we report something at that same line
    note = row["note"]
    if "Line " in note.split("[+")[0] and "Unable to set default user" not in note:
        line = int(note.split("Line ")[1].split(")")[0])
        assert any(d.line == line for d in diagnostics), (line, diagnostics)


def test_corpus_unicast_and_scripts_are_typed() -> None:
    path = CORPUS / "49-ideaxy-mysql-keepalived.conf"
    if not path.exists():
        pytest.skip("shared keepalived corpus not present")
    cfg = K.load(str(path))
    inst = cfg.vrrp_instances[0]
    assert inst.unicast_src_ip and inst.unicast_peer
    assert inst.nopreempt


@pytest.mark.skipif(not SAMPLES.exists(), reason="keepalived package (samples) not installed")
@pytest.mark.parametrize("path", sorted(glob.glob(str(SAMPLES / "keepalived.conf.*"))), ids=lambda p: Path(p).name)
def test_keepalived_sample_parses_without_errors(path: str) -> None:
    cfg = K.load(path, config_id="high")
    assert not [d for d in cfg.diagnostics if d.severity == "error"]
    for inst in cfg.vrrp_instances:
        assert inst.virtual_router_id


GOOD = """\
! comment
global_defs {
   router_id LVS_A   # trailing comment
   vrrp_garp_master_repeat 3
   vrrp_version 3
}
vrrp_script chk_nginx {
    script "/usr/bin/killall -0 nginx"
    interval 2
    weight -20
    fall 3
    rise 2
}
vrrp_instance VI_1
{
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 0.5
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    unicast_src_ip 10.0.0.1
    unicast_peer {
        10.0.0.2
    }
    virtual_ipaddress {
        192.168.200.16/24 dev eth0 label eth0:1
        192.168.200.17
    }
    track_script {
        chk_nginx weight 10
    }
    track_interface { eth1 weight -5 }
    notify /etc/keepalived/notify.sh
    nopreempt
}
vrrp_sync_group VG1 {
    group {
        VI_1
    }
    notify_master "/bin/echo master"
}
virtual_server 192.168.200.16 80 {
    lb_kind DR
    real_server 10.0.0.10 80 { weight 1 }
}
"""


def test_typed_instance_from_keepalived_grammar() -> None:
    cfg = K.parse_text(GOOD, "ka.conf")
    g = cfg.global_defs
    assert g.router_id == "LVS_A" and g.vrrp_garp_master_repeat == 3 and g.vrrp_version == 3
    sc = cfg.vrrp_scripts[0]
    assert (sc.script, sc.interval, sc.weight, sc.fall, sc.rise) == ("/usr/bin/killall -0 nginx", 2.0, -20, 3, 2)
    i = cfg.instance("VI_1")
    assert (i.state, i.interface, i.virtual_router_id, i.priority, i.advert_int) == ("MASTER", "eth0", 51, 100, 0.5)
    assert (i.auth_type, i.auth_pass) == ("PASS", "1111")
    assert i.virtual_ipaddress[0] == K.VirtualIP("192.168.200.16/24", "eth0", "eth0:1", None, None, 30)
    assert i.virtual_ipaddress[1].address == "192.168.200.17/32"
    assert i.unicast_src_ip == "10.0.0.1" and i.unicast_peer == ("10.0.0.2",)
    assert i.track_script == (K.TrackScript("chk_nginx", 10),)
    assert i.track_interface == (K.TrackInterface("eth1", -5),)
    assert i.notify == "/etc/keepalived/notify.sh"
    assert i.nopreempt is False  # cleared: MASTER state, as keepalived does
    assert i.effective_version(g) == 3
    assert cfg.vrrp_sync_groups[0].group == ("VI_1",) and cfg.vrrp_sync_groups[0].notify_master == "/bin/echo master"
    assert [s.keyword for s in cfg.other] == ["virtual_server"]
    assert cfg.other[0].block is not None and cfg.other[0].block[1].keyword == "real_server"
    assert not any("not handled" in d.message for d in cfg.warnings)  # pylvs.config.keepalived.lvs reads it
    assert K.parse_text(GOOD + "static_routes {\n 10.1.0.0/16 via 10.0.0.1\n}\n").warnings[-1].message.startswith(
        "static_routes: parsed and kept, not handled")


def test_unknown_keyword_is_a_warning_with_file_and_line() -> None:
    cfg = K.parse_text("vrrp_instance V {\n virtual_router_id 1\n bogus_keyword 3\n virtual_ipaddress { 10.1.1.1 }\n}\n", "x.conf")
    w = [d for d in cfg.warnings if "bogus_keyword" in d.message]
    assert w and w[0].file == "x.conf" and w[0].line == 3
    assert str(w[0]).startswith("x.conf:3: warning:")


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("vrrp_instance V {\n virtual_router_id 1\n", 1, "missing its closing"),
        ("vrrp_instance V {\n virtual_router_id 1\n}\n}\n", 4, "Extra '}'"),
        ("vrrp_instance V {\n virtual_router_id 300\n}\n", 2, "outside range"),
        ("vrrp_instance V {\n virtual_router_id 1\n priority abc\n}\n", 3, "invalid number"),
        ("vrrp_instance V {\n virtual_router_id 1\n virtual_ipaddress {\n 10.0.0.300\n }\n}\n", 4, "invalid IP"),
        ("vrrp_instance V {\n virtual_router_id 1\n state SLAVE\n}\n", 3, "MASTER or BACKUP"),
        ('vrrp_script s {\n script "/bin/true\n}\n', 2, "unterminated"),
    ],
)
def test_malformed_config_is_an_error_with_file_and_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        K.parse_text(text, "bad.conf")
    errors = [d for d in err.value.diagnostics if d.severity == "error"]
    assert any(d.line == line and needle in d.message and d.file == "bad.conf" for d in errors), errors


def test_include_with_glob_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("vrrp_instance A {\n virtual_router_id 1\n virtual_ipaddress { 10.0.0.1 }\n}\n")
    (tmp_path / "conf.d" / "b.conf").write_text("vrrp_instance B {\n virtual_router_id 2\n virtual_ipaddress { 10.0.0.2 }\n bad_kw\n}\n")
    main = tmp_path / "keepalived.conf"
    main.write_text("global_defs {\n router_id X\n}\ninclude conf.d/*.conf\n")
    cfg = K.load(str(main))
    assert [i.name for i in cfg.vrrp_instances] == ["A", "B"]
    w = next(d for d in cfg.warnings if "bad_kw" in d.message)
    assert w.file.endswith("b.conf") and w.line == 4


def test_crlf_and_non_utf8_bytes_are_tolerated(tmp_path: Path) -> None:
    p = tmp_path / "k.conf"
    p.write_bytes(b"! \xc4\xe3\xba\xc3 gbk\r\nvrrp_instance V {\r\n virtual_router_id 9\r\n virtual_ipaddress {\r\n 10.0.0.9/24\r\n }\r\n}")
    cfg = K.load(str(p))
    assert cfg.vrrp_instances[0].virtual_router_id == 9


def test_conditional_lines_and_definitions() -> None:
    text = "$PRIO=150\nvrrp_instance V {\n virtual_router_id 3\n@a priority $PRIO\n@^a priority 50\n virtual_ipaddress { 10.0.0.3 }\n}\n"
    assert K.parse_text(text, config_id="a").vrrp_instances[0].priority == 150
    assert K.parse_text(text, config_id="b").vrrp_instances[0].priority == 50


def test_mixed_families_keep_the_first_like_keepalived() -> None:
    cfg = K.parse_text("vrrp_instance V {\n virtual_router_id 3\n virtual_ipaddress {\n 10.0.0.3\n 2001:db8::1/64\n }\n}\n")
    assert [v.address for v in cfg.vrrp_instances[0].virtual_ipaddress] == ["10.0.0.3/32"]
    assert any(d.line == 5 and "address family" in d.message for d in cfg.warnings)


words = st.sampled_from(["vrrp_instance", "VI_1", "{", "}", "priority", "100", "state", "MASTER", "virtual_router_id",
                         "51", "virtual_ipaddress", "10.0.0.1/24", "include", "#", "!", '"', "global_defs", "x", "\n",
                         "authentication", "auth_pass", "300", "-1", "track_script", "weight", "@a", "$X=1", "\\"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(words, max_size=60).map(" ".join) | st.text(max_size=200))
def test_parser_never_crashes_on_arbitrary_input(text: str) -> None:
    try:
        cfg = K.parse_text(text, "fuzz.conf")
    except ConfigError as exc:
        assert all(d.file == "fuzz.conf" or d.file.endswith(".conf") or d.file == "" for d in exc.diagnostics)
        assert any(d.severity == "error" for d in exc.diagnostics)
    else:
        for d in cfg.diagnostics:
            assert d.severity == "warning"


def _span(st: K.Statement) -> tuple[int, int]:
    last = st.line
    for child in st.block or ():
        last = max(last, _span(child)[1])
    return st.line, last + 1  # + the closing brace


KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"


@pytest.mark.skipif(not Path(KEEPALIVED).exists(), reason="keepalived (Debian package) not installed")
@pytest.mark.parametrize(
    "path",
    sorted(glob.glob(str(SAMPLES / "keepalived.conf.*"))) + sorted(glob.glob(str(CORPUS / "*.conf"))),
    ids=lambda p: Path(p).name,
)
def test_every_unknown_keyword_keepalived_reports_we_report_at_the_same_line(path: str) -> None:
    out = subprocess.run([KEEPALIVED, "-t", "-f", path], capture_output=True, text=True, timeout=30)
    theirs = {int(m.group(1)) for m in re.finditer(r"Line (\d+)\) Unknown keyword", out.stdout + out.stderr)}
    cfg = K.load(path, strict=False)
    ours = {d.line for d in cfg.diagnostics}
    # the virtual_server part is pylvs.config.keepalived.lvs's; an unknown block is reported once at its start
    skip = [_span(st) for st in cfg.other if st.keyword in ("virtual_server", "virtual_server_group")]
    skip += [(a + 1, b) for a, b in (_span(st) for st in cfg.other) if a in ours]
    missing = sorted(n for n in theirs if n not in ours and not any(a <= n <= b for a, b in skip))
    assert missing == [], f"keepalived reports unknown keywords at lines {missing}"
