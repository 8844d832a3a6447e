"""keepalived's checker rules, sans-IO: retries, alpha, quorum with hysteresis, sorry server."""

from __future__ import annotations

from pylvs.config import keepalived
from pylvs.config.keepalived import VirtualServerConfig
from pylvs.core.model import ForwardingMethod
from pylvs.health.checkers import interpret
from pylvs.health.state import CheckerState, VirtualServerState

CONF = """
virtual_server 192.168.168.100 80 {
    delay_loop 6
    lb_algo rr
    lb_kind DR
    protocol TCP
    %(vs_extra)s
    real_server 192.168.168.10 80 {
        weight 2
        %(rs_extra)s
        TCP_CHECK {
            connect_timeout 3
            retry 2
            delay_before_retry 1
        }
    }
    real_server 192.168.168.20 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
        }
    }
}
"""


def vs_config(vs_extra: str = "", rs_extra: str = "") -> VirtualServerConfig:
    cfg = keepalived.parse_text(CONF % {"vs_extra": vs_extra, "rs_extra": rs_extra}, "test.conf")
    lvs = interpret(cfg.other)
    assert not lvs.errors, lvs.errors
    (vs,) = lvs.virtual_servers
    return vs


def test_config_resolves_inherited_timers_and_method() -> None:
    vs = vs_config()
    rs1, rs2 = vs.real_servers
    assert rs1.dest.fwd == ForwardingMethod.DROUTE and rs1.dest.weight == 2
    chk = rs1.checkers[0]
    assert (chk.delay_loop, chk.retry, chk.delay_before_retry, chk.connect_timeout) == (6, 2, 1, 3)
    assert str(chk.connect_ip) == "192.168.168.10" and chk.connect_port == 80
    assert rs2.checkers[0].retry == 1  # keepalived's default retry


def test_up_checker_goes_down_only_after_its_retries() -> None:
    vs = vs_config()
    chk = CheckerState.start(vs.real_servers[0].checkers[0], now=0.0, alpha=False)
    assert chk.up and chk.next_due == 0.0
    assert chk.result(False, 0.0) is False  # retry 1 of 2, after delay_before_retry
    assert chk.up and chk.next_due == 1.0
    assert chk.result(False, 1.0) is False  # retry 2 of 2
    assert chk.result(False, 2.0) is True  # now it is down
    assert not chk.up and chk.next_due == 8.0  # back to delay_loop
    assert chk.result(False, 8.0) is False  # a down checker is not retried
    assert chk.next_due == 14.0
    assert chk.result(True, 14.0) is True  # one success brings it up
    assert chk.up and chk.next_due == 20.0


def test_success_between_failures_resets_the_retry_count() -> None:
    vs = vs_config()
    chk = CheckerState.start(vs.real_servers[0].checkers[0], now=0.0, alpha=False)
    chk.result(False, 0.0)
    chk.result(False, 1.0)
    chk.result(True, 2.0)
    assert chk.result(False, 8.0) is False and chk.up


def test_alpha_starts_servers_down_until_their_first_success() -> None:
    vs = vs_config(vs_extra="alpha")
    st = VirtualServerState.start(vs, 0.0)
    assert [s.alive for s in st.servers] == [False, False]
    assert st.desired_dests() == []
    chk = st.servers[1].checkers[0]
    assert chk.result(True, 0.0)
    st.on_checker_change(st.servers[1])
    assert [str(d.addr) for d in st.desired_dests()] == ["192.168.168.20"]


def test_dead_server_leaves_the_table_or_goes_to_weight_zero_with_inhibit() -> None:
    for extra, expected in (("", ["192.168.168.20"]),
                            ("inhibit_on_failure", ["192.168.168.10/0", "192.168.168.20/1"])):
        st = VirtualServerState.start(vs_config(rs_extra=extra), 0.0)
        rs1 = st.servers[0]
        for t in (0.0, 1.0, 2.0):
            rs1.checkers[0].result(False, t)
        notes = st.on_checker_change(rs1)
        assert notes == []
        got = [str(d.addr) if not extra else f"{d.addr}/{d.weight}" for d in st.desired_dests()]
        assert got == expected


def test_notify_down_and_up_scripts_run_on_transitions() -> None:
    st = VirtualServerState.start(
        vs_config(rs_extra='notify_down "/bin/echo down"\n notify_up "/bin/echo up"'), 0.0)
    rs1 = st.servers[0]
    for t in (0.0, 1.0, 2.0):
        rs1.checkers[0].result(False, t)
    assert [n.command for n in st.on_checker_change(rs1)] == ["/bin/echo down"]
    rs1.checkers[0].result(True, 8.0)
    assert [n.command for n in st.on_checker_change(rs1)] == ["/bin/echo up"]


def test_quorum_with_hysteresis_and_sorry_server() -> None:
    vs = vs_config(vs_extra="quorum 2\n hysteresis 1\n sorry_server 192.168.168.99 80\n"
                            ' quorum_down "/bin/echo lost"\n quorum_up "/bin/echo gained"')
    st = VirtualServerState.start(vs, 0.0)
    assert st.quorum_up  # weight 3 >= 2
    rs1, rs2 = st.servers
    # rs2 (weight 1) down: total 2 >= quorum - hysteresis (1): quorum kept
    rs2.checkers[0].result(False, 0.0)
    rs2.checkers[0].result(False, 1.0)
    assert st.on_checker_change(rs2) == []
    assert st.quorum_up
    # rs1 down as well: total 0 -> quorum lost, the sorry server replaces everything
    for t in (0.0, 1.0, 2.0):
        rs1.checkers[0].result(False, t)
    assert [n.command for n in st.on_checker_change(rs1)] == ["/bin/echo lost"]
    assert [f"{d.addr}:{d.port}" for d in st.desired_dests()] == ["192.168.168.99:80"]
    # rs1 back: total 2 < quorum + hysteresis (3): still no quorum
    rs1.checkers[0].result(True, 10.0)
    assert st.on_checker_change(rs1) == []
    assert not st.quorum_up
    # rs2 back: total 3 -> quorum gained, real servers return, sorry server leaves
    rs2.checkers[0].result(True, 10.0)
    assert [n.command for n in st.on_checker_change(rs2)] == ["/bin/echo gained"]
    assert sorted(str(d.addr) for d in st.desired_dests()) == ["192.168.168.10", "192.168.168.20"]


def test_misc_dynamic_weight_comes_from_the_exit_status() -> None:
    conf = """
virtual_server 10.0.0.1 80 {
    lb_kind NAT
    real_server 10.0.1.1 8080 {
        weight 5
        MISC_CHECK {
            misc_path "/bin/true"
            misc_dynamic
        }
    }
}
"""
    (vs,) = interpret(keepalived.parse_text(conf, "t.conf").other).virtual_servers
    st = VirtualServerState.start(vs, 0.0)
    rs = st.servers[0]
    assert rs.checkers[0].config.retry == 0  # MISC_CHECK's default
    assert rs.weight == 5
    rs.checkers[0].result(True, 0.0, weight=10 - 2)
    assert [d.weight for d in st.desired_dests()] == [8]


def test_malformed_virtual_server_is_an_error_with_file_and_line() -> None:
    bad = """
virtual_server 10.0.0.1 80 {
    lb_algo nosuch
    real_server 10.0.1.1 80 {
        weight many
        HTTP_GET {
            url {
                path /
                status_code 700
            }
        }
    }
}
"""
    lvs = interpret(keepalived.parse_text(bad, "bad.conf", strict=False).other)
    msgs = [str(d) for d in lvs.errors]
    assert any(m.startswith("bad.conf:3:") and "scheduler" in m for m in msgs)
    assert any(m.startswith("bad.conf:5:") and "weight" in m for m in msgs)
    assert any(m.startswith("bad.conf:9:") and "status_code" in m for m in msgs)
