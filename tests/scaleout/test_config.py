"""The pylvs_bgp block: read back as written, every mistake one FILE:LINE line."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from pylvs.scaleout.config import BGPConfigError, load

GOOD = """\
# keepalived.conf may hold it beside its own blocks
global_defs {
    router_id lvs1
}
pylvs_bgp {
    router_id 10.20.0.11
    local_as 65001
    neighbor 10.20.0.1 {
        remote_as 65000
        source_address 10.20.0.11
        hold_time 3
        keepalive_time 1
        connect_retry 1
        bfd
    }
    neighbor fd00:20::1 {
        remote_as 4200000000
    }
    vip 192.0.2.10 2001:db8::10
    withdraw_wait 0.5
    poll_interval 0.2
    announce_delay 7.5
}
"""


def test_a_good_block_reads_back(tmp_path: Path) -> None:
    f = tmp_path / "keepalived.conf"
    f.write_text(GOOD)
    cfg = load(str(f))
    assert cfg.router_id == ipaddress.ip_address("10.20.0.11") and cfg.local_as == 65001
    n1, n2 = cfg.neighbors
    assert (n1.remote_as, n1.hold_time, n1.keepalive_time, n1.connect_retry, n1.bfd) == \
        (65000, 3, 1, 1, True)
    assert n1.source_address == ipaddress.ip_address("10.20.0.11")
    assert (n2.remote_as, n2.hold_time, n2.keepalive_time, n2.bfd) == (4200000000, 9, None, False)
    assert [str(v) for v in cfg.vips] == ["192.0.2.10", "2001:db8::10"]
    assert (cfg.withdraw_wait, cfg.poll_interval, cfg.announce_delay) == (0.5, 0.2, 7.5)
    text = "\n".join(cfg.describe())
    assert "first announcement: 7.5 s after the director is ready" in text
    f.write_text(GOOD.replace("announce_delay 7.5", "announce_delay auto"))
    assert load(str(f)).announce_delay is None
    f.write_text(GOOD.replace("    announce_delay 7.5\n", ""))
    assert load(str(f)).announce_delay is None  # auto unless told
    assert "neighbor 10.20.0.1 AS 65000: hold 3 s, keepalive 1 s" in text and "BFD" in text


@pytest.mark.parametrize(("body", "message"), [
    ("local_as 65001\nneighbor 10.0.0.1 {\nremote_as 1\n}", "router_id is required"),
    ("router_id 10.0.0.2\nneighbor 10.0.0.1 {\nremote_as 1\n}", "local_as is required"),
    ("router_id 10.0.0.2\nlocal_as 1", "at least one neighbor is required"),
    ("router_id fd00::1\nlocal_as 1", "router_id must be an IPv4 address"),
    ("router_id 10.0.0.2\nlocal_as 0", "local_as: 0 is out of range"),
    ("router_id 10.0.0.2\nlocal_as 4294967296", "out of range"),
    ("router_id 10.0.0.2\nlocal_as x", "'x' is not a whole number"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1", "needs a block with remote_as"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nhold_time 3\n}",
     "remote_as is required"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\nhold_time 2\n}",
     "hold_time must be 0 or at least 3"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\nhold_time 3\n"
     "keepalive_time 3\n}", "keepalive_time must be below hold_time"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\n"
     "source_address fd00::1\n}", "source_address must be of the neighbor's address family"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\nbfd on\n}",
     "bfd takes no value"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\n}\n"
     "neighbor 10.0.0.1 {\nremote_as 3\n}", "neighbor 10.0.0.1 is given twice"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\n}\nvip 10.0.0.300",
     "'10.0.0.300' is not an IP address"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\n}\nwithdraw_wait -1",
     "withdraw_wait: -1 is out of range"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\n}\nannounce_delay soon",
     "announce_delay: 'soon' is not a number of seconds"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\n}\nannounce_delay 601",
     "announce_delay: 601 is out of range (0 to 600 s)"),
    ("router_id 10.0.0.2\nlocal_as 1\nneighbor 10.0.0.1 {\nremote_as 2\n}\nfoo 1",
     "unknown keyword 'foo' in pylvs_bgp"),
    ("router_id 10.0.0.2\nlocal_as 1 {\n}", "local_as takes no block"),
])
def test_mistakes_are_one_line_with_file_and_line(tmp_path: Path, body: str,
                                                  message: str) -> None:
    f = tmp_path / "bgp.conf"
    f.write_text("pylvs_bgp {\n" + body + "\n}\n")
    with pytest.raises(BGPConfigError) as exc:
        load(str(f))
    assert message in str(exc.value) and str(exc.value).startswith(f"{f}:")


def test_no_block_a_second_block_and_no_file(tmp_path: Path) -> None:
    f = tmp_path / "k.conf"
    f.write_text("global_defs {\n}\n")
    with pytest.raises(BGPConfigError, match="no pylvs_bgp block"):
        load(str(f))
    f.write_text(GOOD + GOOD.split("\n", 4)[4])
    with pytest.raises(BGPConfigError, match="a second pylvs_bgp block"):
        load(str(f))
    with pytest.raises(BGPConfigError, match="cannot read configuration"):
        load(str(tmp_path / "missing.conf"))


def test_the_command_line_says_one_line_and_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "bgp.conf"
    f.write_text("pylvs_bgp {\nrouter_id 10.0.0.2\n}\n")
    for action in ("check", "run"):
        out = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "scaleout", action,
                              "--config", str(f), *(["--socket", str(tmp_path / "s")]
                                                    if action == "run" else [])],
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.strip().splitlines() == [
            f"pylvs scaleout: {f}:1: pylvs_bgp: local_as is required"]
    good = tmp_path / "good.conf"
    good.write_text(GOOD)
    out = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "scaleout", "check",
                          "--config", str(good)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0 and "router id 10.20.0.11, local AS 65001" in out.stdout
    out = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "scaleout", "status",
                          "--socket", str(tmp_path / "nobody.sock")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 and out.stderr.startswith("pylvs scaleout: no answer on ")
    assert len(out.stderr.splitlines()) == 1
