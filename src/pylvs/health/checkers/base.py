"""What every checker module shares: the result of one probe, the kind a module defines (its
keywords, from :class:`~pylvs.config.keepalived.checkers.CheckerKind`, plus its probe) and the
sockets a probe opens.

Probes never block the event loop: sockets are asyncio's, scripts run as subprocesses killed at
their timeout, and a server that answers slowly or with garbage fails this attempt without
holding up any other check.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass

from pylvs.config.keepalived.checkers import CheckerConfig, CheckerKind

__all__ = ["CheckResult", "HealthChecker", "datagram_socket", "open_stream"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One attempt's verdict. ``detail`` is ours (status page, control API); ``reason`` is the
    failure in keepalived's words, for the kinds whose log line carries one (SMTP_CHECK's
    "Connection timeout to server [ip]:port", DNS_CHECK's "read timeout from socket",
    MISC_CHECK's "exited with status 1" or "timed out")."""

    ok: bool
    detail: str
    weight: int | None = None
    reason: str = ""


class HealthChecker(CheckerKind):
    """A checker kind as ``pylvs keepalived`` runs it: its keywords (the base class) and its
    probe, one attempt bounded by its timeout that says whether the real server passed, with a
    one-line reason."""

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        raise NotImplementedError

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str | None:
        """keepalived's log line when this checker passes while down or on its first run
        (``rs`` and ``vs`` are keepalived's names, ``pylvs.health.wording``); None when
        keepalived logs nothing for this kind."""
        return None

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str | None:
        """keepalived's log line when this checker fails an up real server, ``retries`` being
        the retries it used first (0: none configured)."""
        return None


async def open_stream(cfg: CheckerConfig, use_ssl: bool = False,
                      server_hostname: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP (or TLS, unverified as keepalived's) connection from bindto to the checked port."""
    local = (str(cfg.bindto), cfg.bind_port) if cfg.bindto is not None else None
    ctx = None
    if use_ssl:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection(
        str(cfg.connect_ip), cfg.connect_port, local_addr=local, ssl=ctx,
        server_hostname=server_hostname if use_ssl else None,
    )


def datagram_socket(cfg: CheckerConfig, kind: int, proto: int = 0) -> socket.socket:
    """A non-blocking socket of the checked address's family, bound to bindto if set."""
    family = socket.AF_INET6 if cfg.connect_ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if cfg.bindto is not None:
            sock.bind((str(cfg.bindto), cfg.bind_port))
    except OSError:
        sock.close()
        raise
    return sock
