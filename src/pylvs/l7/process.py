"""One serving process of ``pylvs http``: a master's worker, or the only process when
``master_process off``; and the error log lines the processes write about themselves.

Why apart from the master (``master``): a worker is an asyncio event loop answering requests
and the master is a plain loop waiting for signals; a worker's life is nginx's: open the logs
(as root, inherited rights), become the ``user``, tie itself to the master, serve, then stop as
told: QUIT (graceful: requests being answered finish, idle connections close), TERM or INT
(fast), USR1 reopens its logs; HUP, USR2 and WINCH are the master's and do nothing here.

Not for: starting workers, reloads, the pid file (``master``); answering requests (``listen``
and below).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from pylvs.l7.listen import L7Server
from pylvs.l7.mainconf import LEVELS
from pylvs.l7.model import Config
from pylvs.l7.privileges import Credentials, die_with_parent, drop
from pylvs.l7.stats import SharedStats
from pylvs.l7.syslogsink import LogSink, file_paths, open_error_log

WORKER_SIGNALS = (signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP,
                  signal.SIGUSR2, signal.SIGWINCH)
Bound = dict[tuple[str, int], socket.socket]


class ErrorLog:
    """nginx's error_log lines (``2026/12/07 02:44:51 [notice] PID#PID: text``) at or above a
    level, to a file (reopened on USR1), to stderr or to syslog (``syslogsink``: the same line
    after a syslog header; nothing to reopen)."""

    def __init__(self, path: str | None, level: str) -> None:
        self.path = path
        self.level = LEVELS.index(level)
        self.f: LogSink = open_error_log(path)

    def __call__(self, level: str, text: str) -> None:
        if LEVELS.index(level) < self.level:
            return
        pid = os.getpid()
        line = f"{time.strftime('%Y/%m/%d %H:%M:%S')} [{level}] {pid}#{pid}: {text}\n"
        with contextlib.suppress(OSError, ValueError):
            self.f.write(line)
            self.f.flush()

    def reopen(self) -> None:
        if not file_paths(self.path):
            return
        try:
            new = open_error_log(self.path)
        except OSError:
            return
        old, self.f = self.f, new
        with contextlib.suppress(OSError):
            old.close()

    def close(self) -> None:
        if self.f is not sys.stderr:
            with contextlib.suppress(OSError):
                self.f.close()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


async def serve(cfg: Config, bound: Bound, *, creds: Credentials | None, parent: int,
                reload: Callable[[], Config | None] | None = None,
                stats: SharedStats | None = None, slot: int = -1) -> int:
    """Serve ``cfg`` on the master's sockets ``bound`` until told to stop.

    ``parent``: the master's pid (0: this is the only process). ``reload``: with
    ``master_process off``, HUP re-reads the configuration here and this process swaps its
    server in place (new listeners on the same sockets, the old server stopped gracefully).
    """
    loop = asyncio.get_running_loop()
    log = ErrorLog(cfg.error_log, cfg.error_level)
    try:
        server = L7Server(cfg, loop)  # opens the logs while still root
    except OSError as e:
        log("emerg", f'open() "{e.filename}" failed ({e.errno}: {e.strerror})')
        return 1
    # stub_status counters: the master's slot for this worker; the single process takes its own
    # (one per configuration, as a reload swaps servers)
    if stats is not None:
        if not parent:
            slot = stats.take(cfg)
        server.use_stats(stats, slot)
    drop(creds)
    if parent and not die_with_parent(parent):
        return 1  # the master died before the tie was made
    # A worker gives its inherited sockets to its server (closed when it stops accepting);
    # the single process keeps them for the servers a reload starts.
    try:
        await server.start({k: s.dup() for k, s in bound.items()} if reload else bound)
    except OSError as e:
        await server.close()
        log("emerg", str(e.strerror))
        return 1
    stop: asyncio.Future[str] = loop.create_future()
    retiring: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        nonlocal server
        if not parent:
            log("notice", f"signal {signum} ({signal_name(signum)}) received")
        if signum == signal.SIGQUIT and not stop.done():
            stop.set_result("graceful")
        elif signum in (signal.SIGTERM, signal.SIGINT) and not stop.done():
            stop.set_result("fast")
        elif signum == signal.SIGUSR1:
            log("notice", "reopening logs")
            log.reopen()
            server.reopen_logs()
        elif signum == signal.SIGHUP and reload is not None and not stop.done():
            new = reload()
            if new is not None:
                retiring.append(loop.create_task(_swap(new)))
        elif signum in (signal.SIGUSR2, signal.SIGWINCH) and not parent:
            log("crit", "binary upgrade (USR2, WINCH) is not supported by pylvs http: "
                        "the signal is ignored; restart to run a new version")

    async def _swap(new: Config) -> None:
        nonlocal server, slot
        old = server
        try:
            fresh = L7Server(new, loop)
            fresh_slot = -1
            if stats is not None:
                fresh_slot = stats.take(new)
                fresh.use_stats(stats, fresh_slot)
            await fresh.start({k: s.dup() for k, s in bound.items()})
        except OSError as e:
            log("emerg", str(e.strerror))
            return
        server = fresh
        await old.shutdown()
        if stats is not None:
            stats.release(slot)  # the old server's counters stay in the totals
            slot = fresh_slot

    for sig in WORKER_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)

    def check_parent() -> None:
        # Besides the parent-death signal: a master gone means this worker is an orphan.
        if parent and os.getppid() != parent and not stop.done():
            stop.set_result("fast")
        loop.call_later(1.0, check_parent)

    check_parent()
    how = await stop
    if reload is not None:
        for s in bound.values():
            s.close()
    if how == "graceful":
        log("notice", "gracefully shutting down")
        await server.shutdown()
        log("notice", "exiting")
    else:
        await server.close()
    for t in retiring:
        t.cancel()
    log("notice", "exit")
    log.close()
    return 0
