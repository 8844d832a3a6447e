"""keepalived 2.2.7's log lines for checkers and virtual servers, from the sans-IO state and the
checker kinds: the service names, the order of the lines, and each kind's own wording (format
strings of keepalived/check/ipwrapper.c, check_api.c and check_*.c at tag v2.2.7)."""

from __future__ import annotations

from pylvs.config import keepalived
from pylvs.config.keepalived import VirtualServerConfig
from pylvs.health import wording
from pylvs.health.checkers import KINDS, CheckResult, interpret
from pylvs.health.state import VirtualServerState


def one_vs(text: str) -> VirtualServerConfig:
    lvs = interpret(keepalived.parse_text(text, "w.conf").other)
    assert not lvs.errors, lvs.errors
    return lvs.virtual_servers[0]


VS = """
virtual_server 10.0.0.1 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    quorum 2
    hysteresis 1
    %s
    real_server 10.0.1.1 80 {
        weight 2
        %s
        TCP_CHECK { connect_timeout 1 retry 3 }
    }
    real_server 10.0.1.2 8080 {
        weight 1
        TCP_CHECK { connect_timeout 1 retry 0 }
    }
}
"""


def test_service_names_follow_keepalived() -> None:
    vs = one_vs(VS % ("", ""))
    assert wording.vs_text(vs) == "[10.0.0.1]:tcp:80"
    assert wording.rs_text(vs.real_servers[1].dest, vs) == "[10.0.1.2]:tcp:8080"
    udp6 = one_vs("virtual_server 2001:db8::1 53 {\n protocol UDP\n real_server 2001:db8::10 53 { }\n}\n")
    assert wording.vs_text(udp6) == "[2001:db8::1]:udp:53"
    assert wording.rs_text(udp6.real_servers[0].dest, udp6) == "[2001:db8::10]:udp:53"
    fwm = one_vs("virtual_server fwmark 7 {\n lb_kind DR\n real_server 10.0.1.1 0 { }\n}\n")
    assert wording.vs_text(fwm) == "FWM 7"
    assert wording.rs_text(fwm.real_servers[0].dest, fwm) == "[10.0.1.1]:none:0"
    grp = one_vs("virtual_server_group G {\n 10.0.0.1 80\n}\nvirtual_server group G {\n protocol TCP\n"
                 " real_server 10.0.1.1 80 { }\n}\n")
    assert wording.vs_text(grp) == "[G]:0"


def test_a_server_leaving_and_returning_with_quorum_and_sorry_server() -> None:
    vs = one_vs(VS % ("sorry_server 10.0.9.9 80", ""))
    st = VirtualServerState.start(vs, 0.0)
    st.startup_lines()
    assert st.lines == []  # quorum up from the start: nothing to say
    rs1, rs2 = st.servers
    rs1.checkers[0].up = False
    st.on_checker_change(rs1)
    # weight 1 left, quorum 2 - hysteresis 1 = 1: not lost yet
    assert st.lines == ["Removing service [10.0.1.1]:tcp:80 from VS [10.0.0.1]:tcp:80"]
    st.lines.clear()
    rs2.checkers[0].up = False
    st.on_checker_change(rs2)
    assert st.lines == [
        "Removing service [10.0.1.2]:tcp:8080 from VS [10.0.0.1]:tcp:80",
        "Lost quorum 2-1=1 > 0 for VS [10.0.0.1]:tcp:80",
        "Adding sorry server [10.0.9.9]:tcp:80 to VS [10.0.0.1]:tcp:80",
        "Removing alive servers from the pool for VS [10.0.0.1]:tcp:80",
    ]
    st.lines.clear()
    rs1.checkers[0].up = True
    st.on_checker_change(rs1)
    # weight 2 < quorum + hysteresis 3: still down; the second server brings it back
    assert st.lines == ["Adding service [10.0.1.1]:tcp:80 to VS [10.0.0.1]:tcp:80"]
    st.lines.clear()
    rs2.checkers[0].up = True
    st.on_checker_change(rs2)
    assert st.lines == [
        "Adding service [10.0.1.2]:tcp:8080 to VS [10.0.0.1]:tcp:80",
        "Gained quorum 2+1=3 <= 3 for VS [10.0.0.1]:tcp:80",
        "Removing sorry server [10.0.9.9]:tcp:80 from VS [10.0.0.1]:tcp:80",
        "Adding alive servers to the pool for VS [10.0.0.1]:tcp:80",
    ]


def test_inhibited_servers_are_enabled_and_disabled_and_alpha_starts_down() -> None:
    vs = one_vs(VS % ("alpha\n    sorry_server 10.0.9.9 80\n    sorry_server_inhibit", "inhibit_on_failure"))
    st = VirtualServerState.start(vs, 0.0)
    st.startup_lines()
    assert st.lines == [
        "Starting with quorum down 2-1=3 > 0 for VS [10.0.0.1]:tcp:80",  # keepalived prints q+h here
        "Enabling sorry server [10.0.9.9]:tcp:80 to VS [10.0.0.1]:tcp:80",
        "Removing alive servers from the pool for VS [10.0.0.1]:tcp:80",
    ]
    st.lines.clear()
    rs1 = st.servers[0]
    rs1.checkers[0].up = True
    st.on_checker_change(rs1)
    assert st.lines[0] == "Enabling service [10.0.1.1]:tcp:80 of VS [10.0.0.1]:tcp:80"
    st.lines.clear()
    rs1.checkers[0].up = False
    st.on_checker_change(rs1)
    assert st.lines[0] == "Disabling service [10.0.1.1]:tcp:80 of VS [10.0.0.1]:tcp:80"


def test_each_checker_kind_says_it_as_keepalived_does() -> None:
    vs = one_vs(VS % ("", ""))
    rs, v = "[10.0.1.1]:tcp:80", "[10.0.0.1]:tcp:80"
    cfg = vs.real_servers[0].checkers[0]
    ok, bad = CheckResult(True, ""), CheckResult(False, "")
    assert KINDS["TCP_CHECK"].success_line(cfg, rs, v, ok) == f"TCP connection to {rs} success."
    assert KINDS["TCP_CHECK"].failure_line(cfg, rs, v, 3, bad) == f"TCP_CHECK on service {rs} failed after 3 retries."
    assert KINDS["TCP_CHECK"].failure_line(cfg, rs, v, 0, bad) == f"TCP_CHECK on service {rs} failed."
    for http in ("HTTP_GET", "SSL_GET"):
        assert KINDS[http].success_line(cfg, rs, v, ok) == f"Remote Web server {rs} succeed on service."
        assert KINDS[http].failure_line(cfg, rs, v, 2, bad) == f"HTTP_CHECK on service {rs} failed after 2 retries."
    assert KINDS["UDP_CHECK"].failure_line(cfg, rs, v, 0, bad) == f"UDP_CHECK on service {rs} failed."
    assert KINDS["PING_CHECK"].success_line(cfg, rs, v, ok) == f"ICMP connection to {rs} success."
    assert KINDS["PING_CHECK"].failure_line(cfg, rs, v, 1, bad) == f"ICMP CHECK on service {rs} of {v} failed after 1 retries."
    assert KINDS["SMTP_CHECK"].success_line(cfg, rs, v, ok) == f"Remote SMTP server {rs} succeed on service."
    smtp_bad = CheckResult(False, "", reason="Connection timeout to server [10.0.1.1]:25")
    assert KINDS["SMTP_CHECK"].failure_line(cfg, rs, v, 1, smtp_bad) == "SMTP_CHECK Connection timeout to server [10.0.1.1]:25"
    assert KINDS["DNS_CHECK"].success_line(cfg, rs, v, ok) is None  # keepalived is silent there
    dns_bad = CheckResult(False, "", reason="read timeout from socket")
    assert KINDS["DNS_CHECK"].failure_line(cfg, rs, v, 3, dns_bad) == f"DNS_CHECK ({rs}) read timeout from socket after 3 retries"
    assert KINDS["FILE_CHECK"].failure_line(cfg, rs, v, 0, bad) is None


def test_misc_check_lines_name_the_script_and_the_exit() -> None:
    vs = one_vs("virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.0.1.1 80 {\n"
                "  MISC_CHECK { misc_path \"/usr/local/bin/probe --deep\" }\n }\n}\n")
    cfg = vs.real_servers[0].checkers[0]
    kind = KINDS["MISC_CHECK"]
    rs, v = "[10.0.1.1]:tcp:80", "[10.0.0.1]:tcp:80"
    assert kind.success_line(cfg, rs, v, CheckResult(True, "")) == (
        f"Misc check for [{rs} VS {v}] by [/usr/local/bin/probe] succeeded.")
    failed = CheckResult(False, "", reason="exited with status 1")
    assert kind.failure_line(cfg, rs, v, 0, failed) == (
        f"Misc check for [{rs} VS {v}] by [/usr/local/bin/probe] failed with retry disabled (exited with status 1).")
    assert kind.failure_line(cfg, rs, v, 1, failed) == (
        f"Misc check for [{rs} VS {v}] by [/usr/local/bin/probe] failed after 1 retry (exited with status 1).")
    assert kind.failure_line(cfg, rs, v, 2, CheckResult(False, "", reason="timed out")) == (
        f"Misc check for [{rs} VS {v}] by [/usr/local/bin/probe] timed out after 2 retries.")


def test_weight_and_activation_lines() -> None:
    vs = one_vs(VS % ("", ""))
    dest = vs.real_servers[0].dest
    assert wording.weight_changed(dest, vs, 2, 5, True) == (
        "Changing weight from 2 to 5 for active service [10.0.1.1]:tcp:80 of VS [10.0.0.1]:tcp:80")
    assert wording.weight_changed(dest, vs, 2, 0, False).startswith("Changing weight from 2 to 0 for inactive")
    assert wording.activating(dest, vs, True) == (
        "Activating healthchecker for service [10.0.1.1]:tcp:80 for VS [10.0.0.1]:tcp:80")
    assert wording.activating(dest, vs, False).startswith("Deactivating healthchecker")
    assert wording.activating(dest, vs, False, change=True).startswith("Suspending healthchecker")
    assert wording.shutting_down(dest, vs) == (
        "Shutting down service [10.0.1.1]:tcp:80 from VS [10.0.0.1]:tcp:80")
