"""SMTP_CHECK: banner 220, HELO (``helo_name``, default the host name) answered 250, then QUIT:
a mail server that talks SMTP. Default port 25; keepalived 1.x's ``host { connect_ip ... }``
inside the block is still read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.checkers import CheckerConfig, Endpoint, Inherit
from pylvs.config.values import Report, address, arg, port, words
from pylvs.health.checkers.base import CheckResult, HealthChecker, open_stream


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    helo_name: str = ""  # "": the host's name


def options(cfg: CheckerConfig) -> SmtpOptions:
    return cfg.options if isinstance(cfg.options, SmtpOptions) else SmtpOptions()


class SmtpCheck(HealthChecker):
    keyword = "SMTP_CHECK"
    default_port = 25

    def option(self, st: Statement, opts: dict[str, object], endpoint: Endpoint,
               report: Report) -> bool:
        k = st.keyword
        if k == "helo_name":
            opts["helo_name"] = words(st)
        elif k == "host":
            for h in st.block or ():
                if h.keyword == "connect_ip":
                    endpoint.connect_ip = address(h, arg(h))
                elif h.keyword == "connect_port":
                    endpoint.connect_port = port(h, arg(h))
                elif h.keyword == "bindto":
                    endpoint.bindto = address(h, arg(h))
        else:
            return False
        return True

    def finish(self, st: Statement, opts: dict[str, object], inh: Inherit) -> object:
        return SmtpOptions(**opts)  # type: ignore[arg-type]

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        return await smtp_check(cfg)

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str:
        return f"Remote SMTP server {rs} succeed on service."

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str | None:
        return f"SMTP_CHECK {result.reason}" if result.reason else None


async def smtp_check(cfg: CheckerConfig) -> CheckResult:
    """Banner 220, HELO answered 250, then QUIT: a mail server that talks SMTP."""

    server = f"[{cfg.connect_ip}]:{cfg.connect_port}"  # keepalived's FMT_SMTP_RS
    connected = False

    async def talk() -> CheckResult:
        nonlocal connected
        reader, writer = await open_stream(cfg)
        connected = True
        try:
            banner = await reader.readline()
            if not banner.startswith(b"220"):
                return CheckResult(False, f"SMTP_CHECK: banner {banner[:40]!r}",
                                   reason=f"Bad greeting banner from server {server}")
            while banner[3:4] == b"-":
                banner = await reader.readline()
            helo = options(cfg).helo_name or os.uname().nodename
            writer.write(f"HELO {helo}\r\n".encode())
            await writer.drain()
            line = await reader.readline()
            while line[3:4] == b"-":
                line = await reader.readline()
            if not line.startswith(b"250"):
                return CheckResult(False, f"SMTP_CHECK: HELO answered {line[:40]!r}",
                                   reason=f"Bad HELO response from server {server}")
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
            return CheckResult(True, "SMTP_CHECK: HELO accepted")
        finally:
            writer.close()

    try:
        async with asyncio.timeout(cfg.connect_timeout):
            return await talk()
    except TimeoutError:
        return CheckResult(False, "SMTP_CHECK: timed out", reason=(
            f"Read timeout from server {server}" if connected else f"Connection timeout to server {server}"))
    except OSError as exc:
        return CheckResult(False, f"SMTP_CHECK: {exc.strerror or exc}", reason=(
            f"Read failure from server {server}" if connected else f"Error connecting to server {server}"))


KINDS = (SmtpCheck(),)
