"""The checker registry and its seam with the keepalived.conf interpreter: every keyword is
served by its module, and a new kind needs nothing but itself and a registry entry."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pylvs.config import keepalived as K
from pylvs.config.grammar import Statement
from pylvs.config.keepalived.checkers import CheckerConfig, Endpoint, Inherit
from pylvs.config.values import Report, integer
from pylvs.health.checkers import KINDS, MODULES, CheckResult, HealthChecker, interpret, run_check

CONF = """
virtual_server 10.0.0.1 80 {
    real_server 10.0.1.1 80 {
        ECHO_CHECK {
            times 3
            connect_port 7
            bogus 1
        }
        TCP_CHECK {
        }
    }
}
"""


@dataclass(frozen=True, slots=True)
class EchoOptions:
    times: int = 1


class EchoCheck(HealthChecker):
    """What a new checker module holds: its keyword, defaults, options and probe."""

    keyword = "ECHO_CHECK"
    default_retry = 5

    def option(self, st: Statement, opts: dict[str, object], endpoint: Endpoint,
               report: Report) -> bool:
        if st.keyword == "times":
            opts["times"] = integer(st, 1, 10)
            return True
        return False

    def finish(self, st: Statement, opts: dict[str, object], inh: Inherit) -> object:
        return EchoOptions(**opts)  # type: ignore[arg-type]

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        assert isinstance(cfg.options, EchoOptions)
        return CheckResult(True, f"echo x{cfg.options.times}")


def test_every_keepalived_checker_has_its_module() -> None:
    assert set(KINDS) == {"TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "DNS_CHECK",
                          "SMTP_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK"}
    assert len(MODULES) == 8
    for keyword, kind in KINDS.items():
        assert kind.keyword == keyword and type(kind).__module__.startswith("pylvs.health.checkers.")


def test_a_new_kind_is_read_by_the_framework_with_its_own_keywords_and_defaults() -> None:
    cfg = K.parse_text(CONF, "e.conf")
    lvs = K.interpret(cfg.other, cfg.track_files, {**KINDS, "ECHO_CHECK": EchoCheck()})
    echo, tcp = lvs.virtual_servers[0].real_servers[0].checkers
    assert (echo.kind, echo.connect_port, echo.retry, echo.options) == ("ECHO_CHECK", 7, 5, EchoOptions(3))
    assert tcp.kind == "TCP_CHECK"
    assert [str(d) for d in lvs.diagnostics] == [
        "e.conf:7: warning: unknown keyword 'bogus' in ECHO_CHECK, ignored"]


async def test_run_check_dispatches_to_the_kinds_probe() -> None:
    lvs = interpret(K.parse_text(CONF.replace("ECHO_CHECK", "MISC_CHECK").replace(
        "times 3", "misc_path true"), "m.conf").other)
    misc = lvs.virtual_servers[0].real_servers[0].checkers[0]
    assert misc.kind == "MISC_CHECK" and (await run_check(misc)).ok


def test_without_the_kind_its_block_is_an_unknown_keyword() -> None:
    cfg = K.parse_text(CONF, "e.conf")
    lvs = K.interpret(cfg.other, cfg.track_files, KINDS)
    assert "unknown keyword 'ECHO_CHECK' in real_server, ignored" in lvs.diagnostics[0].message
    lvs = K.interpret(cfg.other, cfg.track_files, {})
    assert not lvs.virtual_servers[0].real_servers[0].checkers


@pytest.mark.parametrize("keyword", ["HTTP_GET", "SSL_GET"])
def test_http_kinds_differ_only_in_port(keyword: str) -> None:
    text = CONF.replace("10.0.0.1 80", "fwmark 1").replace("ECHO_CHECK", keyword).replace("times 3", "url {\n path /\n }").replace(
        "connect_port 7\n", "").replace("real_server 10.0.1.1 80", "real_server 10.0.1.1")
    chk = interpret(K.parse_text(text, "h.conf", strict=False).other).virtual_servers[0].real_servers[0].checkers[0]
    assert (chk.kind, chk.connect_port, chk.delay_before_retry) == (keyword, 80 if keyword == "HTTP_GET" else 443, 3.0)
