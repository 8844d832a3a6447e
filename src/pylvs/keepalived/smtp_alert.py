"""keepalived's e-mail alerts: ``notification_email``, ``smtp_server`` and ``smtp_alert``.

What this is for: operators who have keepalived mail them on every VRRP transition and every
real server that goes down get the same mails from pylvs: the same subjects (``[router_id]
VRRP Instance VI_1 - Entering MASTER state``, ``[router_id] Realserver [10.0.1.1]:tcp:80 of
virtual server [10.0.0.1]:tcp:80 - DOWN``), the same bodies, one SMTP conversation per alert
(HELO, MAIL FROM, one RCPT TO per address, DATA), bounded by ``smtp_connect_timeout``. Sending
never blocks the daemon: each alert is a task, and a server that does not answer only costs
that task its timeout (and a log line).

What this is not for: deciding when to alert (the VRRP driver and the health manager do), or
TLS/authentication (keepalived has neither).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
from dataclasses import dataclass

from pylvs.config.keepalived import GlobalDefs

log = logging.getLogger("pylvs.smtp")


def parse_server(text: str) -> tuple[str, int]:
    """``smtp_server HOST [PORT]`` (default port 25)."""
    parts = text.split()
    return parts[0], int(parts[1]) if len(parts) > 1 else 25


def _angle(addr: str) -> str:
    """keepalived's MAIL FROM / RCPT TO argument: ``<addr>``, or the <...> part already there."""
    addr = addr.strip()
    if addr.endswith(">") and "<" in addr:
        return addr[addr.rindex("<"):]
    return f"<{addr}>"


def message(mail_from: str, to: tuple[str, ...], subject: str, body: str) -> bytes:
    """The DATA part keepalived sends, dot-stuffed, ending with the lone dot."""
    lines = [
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"From: {mail_from}",
        f"Subject: {subject}",
        "X-Mailer: pylvs",
        "To: " + ",\r\n ".join(to),
        "",
        *body.splitlines(),
        "",
    ]
    text = "\r\n".join("." + ln if ln.startswith(".") else ln for ln in lines)
    return (text + "\r\n.\r\n").encode("utf-8", errors="replace")


@dataclass
class SmtpAlerter:
    server: tuple[str, int]
    mail_from: str
    to: tuple[str, ...]
    router_id: str
    helo: str
    timeout: float = 30.0
    sent: int = 0
    failed: int = 0

    @classmethod
    def from_config(cls, g: GlobalDefs) -> SmtpAlerter | None:
        """None when keepalived would not mail: no addresses or no server."""
        if not g.notification_email or not g.smtp_server:
            return None
        host = socket.gethostname()
        return cls(parse_server(g.smtp_server), g.notification_email_from or f"keepalived@{host}",
                   tuple(g.notification_email), g.router_id or host, g.smtp_helo_name or host,
                   float(g.smtp_connect_timeout))

    def alert(self, subject: str, body: str) -> asyncio.Task[bool]:
        """Send in the background; the task says whether the server took the mail."""
        return asyncio.get_running_loop().create_task(self.send(f"[{self.router_id}] {subject}", body))

    async def send(self, subject: str, body: str) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self._talk(subject, body)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            self.failed += 1
            log.warning("SMTP alert to %s:%d not sent (%s): %s", *self.server, subject, exc or type(exc).__name__)
            return False
        self.sent += 1
        log.info("SMTP alert sent: %s", subject)
        return True

    async def _talk(self, subject: str, body: str) -> None:
        reader, writer = await asyncio.open_connection(*self.server)
        try:
            async def expect(code: int) -> None:
                while True:
                    line = await reader.readline()
                    if not line:
                        raise ValueError("the server closed the connection")
                    if line[3:4] != b"-":  # the last line of a (multi-line) reply
                        break
                if line[:3] != str(code).encode():
                    raise ValueError(f"expected {code}, got {line[:60]!r}")

            async def cmd(text: str, code: int) -> None:
                writer.write(text.encode() + b"\r\n")
                await expect(code)

            await expect(220)
            await cmd(f"HELO {self.helo}", 250)
            await cmd(f"MAIL FROM:{_angle(self.mail_from)}", 250)
            for rcpt in self.to:
                await cmd(f"RCPT TO:{_angle(rcpt)}", 250)
            await cmd("DATA", 354)
            writer.write(message(self.mail_from, self.to, subject, body))
            await expect(250)
            writer.write(b"QUIT\r\n")
        finally:
            writer.close()
