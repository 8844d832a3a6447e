"""nginx's ``access_log``: one line per request in its ``log_format``, written in batches.

Why its own module: a log line is built for every request, so each format is compiled once into
(literal, variable getter) pairs and each file is flushed once per event-loop pass rather than
per line; the rest of the server only says "log this request".

A ``syslog:`` target gets each line as a datagram at once (``SyslogLog``, ``syslogsink``).

Not for: the error log (``worker.Worker.error``) or the variables' values (``request``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import IO

from pylvs.l7.config import AccessLog, Server
from pylvs.l7.request import Request, getter
from pylvs.l7.syslogsink import is_syslog, syslog_writer
from pylvs.l7.variables import Template


class LogFile:
    """One access log file, written in batches at the end of each event-loop pass."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.loop = loop
        self.f: IO[str] = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
        self._scheduled = False

    def write(self, line: str) -> None:
        self.f.write(line)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        with contextlib.suppress(OSError, ValueError):
            self.f.flush()

    def reopen(self) -> None:
        """After a rotation (USR1): lines go to a new file at ``path``; the old one is closed."""
        self.flush()
        try:
            new: IO[str] = open(self.path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
        except OSError:
            return  # keep writing to the old file rather than lose lines
        old, self.f = self.f, new
        with contextlib.suppress(OSError):
            old.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()


class SyslogLog:
    """An access log sent to syslog: one datagram per line, at once, without its newline
    (nginx's own: such a log cannot be buffered), with the target's severity."""

    def __init__(self, target: str) -> None:
        self.writer = syslog_writer(target, levels=False)

    def write(self, line: str) -> None:
        self.writer.send(line.rstrip("\n"))

    def flush(self) -> None:
        """Datagrams leave as they are written."""

    def reopen(self) -> None:
        """Nothing to reopen: the socket is kept (a failed send makes a new one)."""

    def close(self) -> None:
        self.writer.close()


class LogPlan:
    """A log_format as (literal, variable getter) pairs and a tail: a line is then one pass."""

    __slots__ = ("pairs", "tail")

    def __init__(self, tmpl: Template) -> None:
        self.pairs: list[tuple[str, Callable[[Request], str]]] = []
        lit: list[str] = []
        for part in tmpl:
            if isinstance(part, str):
                lit.append(part)
            else:
                self.pairs.append(("".join(lit), getter(part[0])))
                lit = []
        self.tail = "".join(lit) + "\n"


_LOG_PLANS: dict[int, tuple[AccessLog, LogPlan]] = {}


def log_line(al: AccessLog, req: Request) -> str:
    """One access log line; a variable without value shows as "-", as in nginx."""
    got = _LOG_PLANS.get(id(al))
    if got is None or got[0] is not al:
        got = _LOG_PLANS[id(al)] = (al, LogPlan(al.format))
    plan = got[1]
    out: list[str] = []
    for lit, get in plan.pairs:
        out.append(lit)
        out.append(get(req) or "-")
    out.append(plan.tail)
    return "".join(out)


class AccessLogs:
    """The worker's open access log files, by path (several locations may share one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._files: dict[str, LogFile | SyslogLog] = {}

    def file_for(self, al: AccessLog) -> LogFile | SyslogLog:
        log = self._files.get(al.path)
        if log is None:
            log = self._files[al.path] = (SyslogLog(al.path) if is_syslog(al.path)
                                          else LogFile(al.path, self.loop))
        return log

    def request(self, req: Request) -> None:
        """Log a request in its location's logs."""
        loc = req.location
        if loc is None or not loc.access_log:
            return
        for al in loc.access_log:
            self.file_for(al).write(log_line(al, req))

    def unrouted(self, server: Server, req: Request) -> None:
        """Log a request that never got a location (bad or timed-out head): server level."""
        for al in server.fallback.access_log:
            self.file_for(al).write(log_line(al, req))

    @property
    def paths(self) -> list[str]:
        """The files (what USR1 reopens and a binary upgrade hands on), not syslog targets."""
        return [p for p in self._files if not is_syslog(p)]

    def reopen(self) -> None:
        for log in self._files.values():
            log.reopen()

    def close(self) -> None:
        for log in self._files.values():
            log.flush()
            log.close()
