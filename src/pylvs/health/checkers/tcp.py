"""TCP_CHECK: the real server passes when a TCP connection to it completes in connect_timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os

from pylvs.config.keepalived.checkers import CheckerConfig
from pylvs.health.checkers.base import CheckResult, HealthChecker, open_stream
from pylvs.health.wording import retries_text


class TcpCheck(HealthChecker):
    keyword = "TCP_CHECK"

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        return await tcp_check(cfg)

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str:
        return f"TCP connection to {rs} success."

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str:
        return f"TCP_CHECK on service {rs} failed{retries_text(retries)}."


async def tcp_check(cfg: CheckerConfig) -> CheckResult:
    try:
        async with asyncio.timeout(cfg.connect_timeout):
            _, writer = await open_stream(cfg)
    except TimeoutError:
        return CheckResult(False, f"TCP connect to {cfg.connect_ip}:{cfg.connect_port} timed out")
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return CheckResult(False, f"TCP connect to {cfg.connect_ip}:{cfg.connect_port} failed: {reason}")
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return CheckResult(True, "TCP connect succeeded")


KINDS = (TcpCheck(),)
