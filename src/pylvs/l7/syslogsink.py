"""``error_log syslog:server=ADDR[:PORT][,facility=F][,severity=S][,tag=T][,nohostname]``:
nginx's syslog target, read with nginx's ``-t`` messages and written as nginx writes it.

Why a module of its own: the error log is opened in three places (the master's and a single
process's lines in ``process``, a worker's request lines in ``worker``), and ``worker`` sits
below ``process`` in the import order; each asks ``open_error_log`` for something with a file's
``write``/``flush``/``close``, and only this module knows that a target may be a socket.

The datagram is nginx 1.22's (compared field by field with Debian's nginx sending to a UDP and
a unix socket): ``<PRI>Mmm dd HH:MM:SS HOSTNAME TAG: `` followed by the whole error-log line
without its newline (nginx keeps its own ``YYYY/MM/DD HH:MM:SS [level] PID#TID:`` in it). PRI is
``facility * 8 + severity`` where the severity is the line's level (nginx ignores ``severity=``
for the error log: it is the access log's), the time is local with a space-padded day and English
month names, HOSTNAME is ``gethostname()`` in lower case (left out with ``nohostname``; nginx's
first few start-up lines have an empty one, which pylvs does not copy), the tag defaults to
``nginx``. Facility defaults to ``local7``, the port to 514; ``unix:PATH`` is a datagram socket
(``/dev/log``). Sockets are non-blocking and a datagram that cannot be sent is dropped, as
nginx's are: a slow or absent syslog daemon never stalls a worker's event loop.

Host names are resolved once, when the configuration is read (nginx: "host not found"); the
forked workers reuse the address the master resolved.

The access log's ``syslog:`` targets use the same writer (``accesslog``) with ``levels`` off:
every line has the target's ``severity=`` (default info), as nginx sends them.

Not for: what the lines say (``process``, ``worker``, ``accesslog``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import time
from dataclasses import dataclass
from typing import Protocol

PREFIX = "syslog:"
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news", "uucp",
              "clock", "authpriv", "ftp", "ntp", "audit", "alert", "cron", "local0", "local1",
              "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TAG_MAX = 32
DEFAULT_PORT = 514
MAX_LINE = 2047  # NGX_MAX_ERROR_STR (2048) less the newline nginx leaves out of the datagram
SUN_PATH = 108  # sizeof(sockaddr_un.sun_path), its terminating NUL included


@dataclass(frozen=True)
class SyslogPeer:
    """Where and how error-log lines go: ``family`` AF_INET/AF_INET6 with ``(host, port)``
    or AF_UNIX with a path."""

    family: int
    address: tuple[str, int] | str
    facility: int = FACILITIES.index("local7")
    severity: int = SEVERITIES.index("info")  # the access log's; error lines carry their own
    tag: str = "nginx"
    hostname: bool = True


class LogSink(Protocol):
    """What an error log is written through: a text file, stderr or a ``SyslogWriter``."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


_resolved: dict[str, SyslogPeer] = {}  # target -> peer: resolved once, inherited by workers


def is_syslog(target: str | None) -> bool:
    return target is not None and target.startswith(PREFIX)


def _server(url: str) -> tuple[int, tuple[str, int] | str]:
    """nginx's ``ngx_parse_url`` for a syslog server, with its messages."""
    where = f' in syslog server "{url}"'
    if url.startswith("unix:"):
        path = url[5:]
        if not path:
            raise ValueError("no path in the unix domain socket" + where)
        if len(path.encode()) + 1 > SUN_PATH:
            raise ValueError("too long path in the unix domain socket" + where)
        return socket.AF_UNIX, path
    if "/" in url or "?" in url:
        raise ValueError("invalid host" + where)
    port_text: str | None = None
    if url.startswith("["):
        end = url.find("]")
        if end < 0:
            raise ValueError("invalid host" + where)
        host, rest = url[1:end], url[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError("invalid host" + where)
        if rest:
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("invalid IPv6 address" + where) from None
    else:
        host, colon, rest = url.partition(":")
        if colon:
            port_text = rest
    port = DEFAULT_PORT
    if port_text is not None:
        port = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
        if not 1 <= port <= 65535:
            raise ValueError("invalid port" + where)
    if not host:
        raise ValueError("no host" + where)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        raise ValueError("host not found" + where) from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def parse_syslog(target: str) -> SyslogPeer:
    """``syslog:...``'s parameters in nginx's order of checks; raises ``ValueError`` with
    nginx's message (the caller adds the file and line)."""
    server: tuple[int, tuple[str, int] | str] | None = None
    facility = FACILITIES.index("local7")
    severity = SEVERITIES.index("info")
    tag = "nginx"
    hostname = True
    seen: set[str] = set()
    for param in target[len(PREFIX):].split(","):
        key, eq, value = param.partition("=")
        if eq and key in ("server", "facility", "severity", "tag"):
            if key in seen:
                raise ValueError(f'duplicate syslog "{key}"')
            seen.add(key)
            if key == "server":
                server = _server(value)
            elif key == "facility":
                if value not in FACILITIES:
                    raise ValueError(f'unknown syslog facility "{value}"')
                facility = FACILITIES.index(value)
            elif key == "severity":
                if value not in SEVERITIES:
                    raise ValueError(f'unknown syslog severity "{value}"')
                severity = SEVERITIES.index(value)
            else:
                if len(value) > TAG_MAX:
                    raise ValueError(f"syslog tag length exceeds {TAG_MAX}")
                if not all(c.isascii() and (c.isalnum() or c == "_") for c in value):
                    raise ValueError('syslog "tag" only allows alphanumeric characters '
                                     "and underscore")
                tag = value
        elif param == "nohostname":
            hostname = False
        else:
            raise ValueError(f'unknown syslog parameter "{param}"')
    if server is None:
        raise ValueError("no syslog server specified")
    peer = SyslogPeer(server[0], server[1], facility, severity, tag, hostname)
    _resolved[target] = peer
    return peer


def header(peer: SyslogPeer, severity: int, hostname: str, now: float | None = None) -> str:
    """``<PRI>Mmm dd HH:MM:SS HOSTNAME TAG: `` (RFC 3164 as nginx writes it)."""
    t = time.localtime(now)
    stamp = f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    host = f"{hostname} " if peer.hostname else ""
    return f"<{peer.facility * 8 + severity}>{stamp} {host}{peer.tag}: "


def line_severity(line: str, default: int) -> int:
    """The syslog severity of an error-log line: its ``[level]`` (after the 19-character
    time), nginx's ``error`` being syslog's ``err``."""
    if line[19:21] == " [":
        end = line.find("]", 21, 30)
        if end > 0 and line[21:end] in SEVERITIES:
            return SEVERITIES.index(line[21:end])
    return default


class SyslogWriter:
    """A write-only 'file' whose lines become syslog datagrams (one per line). ``levels``: an
    error log's lines carry their own severity (``[level]``); an access log's all have the
    target's ``severity=``."""

    def __init__(self, peer: SyslogPeer, levels: bool = True) -> None:
        self.peer = peer
        self.levels = levels
        self.hostname = socket.gethostname().lower()
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.socket(self.peer.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.peer.address)
        except OSError:
            sock.close()
            raise
        return sock

    def send(self, line: str) -> None:
        severity = line_severity(line, self.peer.severity) if self.levels \
            else self.peer.severity
        head = header(self.peer, severity, self.hostname)
        data = head.encode() + line.encode(errors="replace")[:MAX_LINE]
        try:
            if self.sock is None:
                self.sock = self._connect()
            self.sock.send(data)
        except BlockingIOError:
            pass  # the receiver is behind: this line is dropped, the socket kept
        except OSError:
            self.close()  # retried with a fresh socket on the next line (syslogd restarted)

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line:
                self.send(line)
        return len(text)

    def flush(self) -> None:
        """Datagrams are sent as they are written."""

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def syslog_writer(target: str, levels: bool = True) -> SyslogWriter:
    """A writer to the syslog ``target`` (resolved when the configuration was read; parsed
    again if not: ``OSError`` if it no longer parses)."""
    peer = _resolved.get(target)
    if peer is None:
        try:
            peer = parse_syslog(target)
        except ValueError as e:
            raise OSError(str(e)) from None
    return SyslogWriter(peer, levels)


def open_error_log(target: str | None) -> LogSink:
    """The error log ``target`` names: stderr (None), a syslog peer, or a file opened for
    appending (``OSError`` as ``open``'s, also for a syslog target that no longer parses)."""
    if target is None:
        return sys.stderr
    if is_syslog(target):
        return syslog_writer(target)
    return open(target, "a", buffering=1, encoding="utf-8")


def file_paths(target: str | None) -> list[str]:
    """The file ``target`` writes to, if it is one (what USR1 reopens and hands on)."""
    return [] if target is None or is_syslog(target) else [target]

