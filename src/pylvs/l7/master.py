"""nginx's master process for ``pylvs http``: it binds the listening sockets (as root), keeps
them for its whole life, starts ``worker_processes`` workers that inherit them, and acts on
signals as nginx 1.22's master does:

- HUP: re-read the configuration; if it is good, start new workers on the same sockets (plus
  any new ``listen``) and stop the old ones gracefully, so no connection is refused and every
  request in flight finishes; if it is bad, log nginx's ``[emerg]`` and keep the old one.
- QUIT: graceful stop; TERM, INT: fast stop (workers still running after a second are killed).
- USR1: reopen the log files (logrotate's ``postrotate``); the new files are created by the
  master and given to the workers' user, as nginx does, so workers that are no longer root can
  reopen them.
- USR2, WINCH (nginx's binary upgrade): not supported; logged (``[crit]``), never fatal.
- CHLD: reap; a worker that died of a signal is replaced, one that exited with an error is not.

The master waits for signals synchronously (``sigtimedwait`` with them blocked), which gives
the sender's pid for nginx's ``signal N (SIGX) received from PID`` lines and needs no event
loop: the master runs no request code, so a bug there cannot take it down.

``daemon on`` forks to the background after binding (so a busy port is still reported to the
terminal) and the pid file then names the background master. Unlike nginx, ``daemon`` defaults
to off: pylvs is run in the foreground by systemd (the unit says ``daemon off`` anyway), the lab
and the benches, and an operator's ``daemon on`` is honoured.

sd_notify: READY=1 once the workers are started, RELOADING=1 / READY=1 around a reload,
STOPPING=1 on QUIT/TERM/INT.

Not for: serving (``process``), the main-context directives (``mainconf``), who the workers run
as (``privileges``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pylvs.l7.listen import bind_listener, listen_groups
from pylvs.l7.mainconf import MainConf
from pylvs.l7.model import Config
from pylvs.l7.privileges import Credentials
from pylvs.l7.process import Bound, ErrorLog, serve, signal_name
from pylvs.l7.stats import STAT_SLOTS, SharedStats, exposition
from pylvs.l7.syntax import ConfigError
from pylvs.l7.syslogsink import file_paths
from pylvs.metrics.server import MetricsError, ObservabilityServer
from pylvs.metrics.sources import Sources
from pylvs.service.sdnotify import Notifier

MASTER_SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                  signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD)
# ``-s NAME`` -> the signal nginx sends for it
COMMANDS = {"stop": signal.SIGTERM, "quit": signal.SIGQUIT, "reopen": signal.SIGUSR1,
            "reload": signal.SIGHUP}
KILL_AFTER = 1.0  # a fast stop kills workers still running after this long


@dataclass(frozen=True)
class Loaded:
    """One reading of the configuration: what the workers serve and how processes run."""

    cfg: Config
    main: MainConf
    creds: Credentials | None


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        rc: int = uvloop.run(coro)
    except ImportError:
        rc = asyncio.run(coro)
    return rc


def bind_all(cfg: Config, keep: Bound) -> Bound:
    """Sockets for every ``listen`` of ``cfg``: kept ones reused, new ones bound (an error
    closes only the new ones and names the address as nginx's bind() message does)."""
    out: Bound = {}
    try:
        for addr in listen_groups(cfg):
            out[addr] = keep[addr] if addr in keep else bind_listener(*addr)
    except OSError:
        for addr, s in out.items():
            if addr not in keep:
                s.close()
        raise
    return out


def write_pid(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid(path: str) -> None:
    """Remove the pid file if it is still this process's (another master may have taken it)."""
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="ascii") as f:
            if int(f.read().strip()) != os.getpid():
                return
        os.unlink(path)


def send_signal(pid_path: str, command: str) -> tuple[str, str] | None:
    """``-s COMMAND``: signal the master named by the pid file; (level, nginx's message) when
    that fails."""
    signum = COMMANDS[command]
    try:
        with open(pid_path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError as e:
        return "error", f'open() "{pid_path}" failed ({e.errno}: {e.strerror})'
    word = text.strip()
    if not word.isdigit() or int(word) <= 0:
        return "error", f'invalid PID number "{word}" in "{pid_path}"'
    try:
        os.kill(int(word), signum)
    except OSError as e:
        return "alert", f"kill({int(word)}, {int(signum)}) failed ({e.errno}: {e.strerror})"
    return None


def daemonize(keep_stderr: bool) -> None:
    """nginx's ngx_daemon: the parent returns to the shell, the child leads a new session with
    stdin/stdout (and stderr when the error log is a file) on /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if not keep_stderr:
        os.dup2(null, 2)
    os.close(null)


def note_modules(log: Callable[[str, str], None], cfg: Config) -> None:
    """``load_module`` lines are accepted (Debian's nginx.conf has them) and load nothing: the
    modules pylvs http has are built in. Said once at start, not by ``-t``."""
    if cfg.modules:
        log("notice", "dynamic modules are not loaded by pylvs http (its modules are built "
                      f"in): {', '.join(cfg.modules)}")


class Master:
    """The master's state: its sockets, its workers (current and retiring) and its log."""

    def __init__(self, loader: Callable[[], Loaded], loaded: Loaded, bound: Bound,
                 notifier: Notifier, stats: SharedStats | None = None) -> None:
        self.stats = stats or SharedStats(STAT_SLOTS)
        self.slots: dict[int, int] = {}  # worker pid -> its stats slot
        self.loader = loader
        self.loaded = loaded
        self.bound = bound
        self.notifier = notifier
        self.log = ErrorLog(loaded.cfg.error_log, loaded.cfg.error_level)
        self.workers: dict[int, Loaded] = {}  # current generation
        self.retiring: set[int] = set()
        self.stopping = ""  # "", "graceful" or "fast"
        self.kill_at = 0.0
        self.failed = False

    # -- workers ------------------------------------------------------------------------

    def spawn(self, loaded: Loaded) -> int:
        master = os.getpid()
        slot = self.stats.take(loaded.cfg)
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                self.log.close()
                rc = run_loop(serve(loaded.cfg, self.bound_for(loaded.cfg), creds=loaded.creds,
                                    parent=master, stats=self.stats, slot=slot))
            except BaseException as e:  # a worker must end with a status, whatever happened
                with contextlib.suppress(Exception):
                    ErrorLog(loaded.cfg.error_log, "emerg")("alert", f"worker failed: {e!r}")
            finally:
                os._exit(rc)
        self.workers[pid] = loaded
        self.slots[pid] = slot
        self.log("notice", f"start worker process {pid}")
        return pid

    def bound_for(self, cfg: Config) -> Bound:
        return {a: s for a, s in self.bound.items() if a in listen_groups(cfg)}

    def start_workers(self, loaded: Loaded) -> None:
        self.log("notice", "start worker processes")
        for _ in range(max(1, loaded.cfg.worker_processes)):
            self.spawn(loaded)

    def tell(self, pids: list[int], signum: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if code >= 0:
                self.log("alert" if code else "notice", f"worker process {pid} exited with code {code}")
            else:
                self.log("alert", f"worker process {pid} exited on signal {-code}")
            self.retiring.discard(pid)
            self.stats.release(self.slots.pop(pid, -1))
            loaded = self.workers.pop(pid, None)
            if loaded is None or self.stopping:
                continue
            if code < 0:
                self.spawn(loaded)  # crashed or killed: replaced, as nginx respawns
            elif code != 0 and not self.workers:
                self.failed = True  # it could not start (e.g. a log it cannot open)

    # -- signals ------------------------------------------------------------------------

    def reload(self) -> None:
        self.log("notice", "reconfiguring")
        self.notifier.reloading()
        try:
            new = self.loader()
            bound = bind_all(new.cfg, self.bound)
        except ConfigError as e:
            self.log("emerg", str(e))
            self.notifier.ready("reload failed: the old configuration is kept")
            return
        except OSError as e:
            self.log("emerg", str(e.strerror or e))
            self.notifier.ready("reload failed: the old configuration is kept")
            return
        old_pid, old_cfg = self.loaded.main.pid, self.loaded.cfg
        gone = [s for a, s in self.bound.items() if a not in bound]
        self.bound, self.loaded = bound, new
        if (new.cfg.error_log, new.cfg.error_level) != (old_cfg.error_log, old_cfg.error_level):
            self.log.close()
            self.log = ErrorLog(new.cfg.error_log, new.cfg.error_level)
        for s in gone:
            s.close()  # before the fork: new workers must not inherit a dropped listen
        old = list(self.workers)
        self.start_workers(new)
        for pid in old:
            self.workers.pop(pid, None)
            self.retiring.add(pid)
        self.tell(old, signal.SIGQUIT)
        if new.main.pid != old_pid:
            with contextlib.suppress(OSError):
                write_pid(new.main.pid)
            remove_pid(old_pid)
        self.notifier.ready("configuration reloaded")

    def reopen(self) -> None:
        """Create each log file anew as root, give it to the workers' user, then tell them."""
        self.log("notice", "reopening logs")
        self.log.reopen()
        creds = self.loaded.creds
        for path in self._log_paths():
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                if creds is not None:
                    os.fchown(fd, creds.uid, -1)
                os.close(fd)
        self.tell([*self.workers, *self.retiring], signal.SIGUSR1)

    def _log_paths(self) -> list[str]:
        cfg = self.loaded.cfg
        paths = {al.path for srv in cfg.servers for loc in (*srv.locations, srv.fallback)
                 for al in loc.access_log}
        paths.update(file_paths(cfg.error_log))  # a syslog target has nothing to reopen
        return sorted(paths)

    def stop(self, how: str) -> None:
        if self.stopping == "fast" or self.stopping == how:
            return
        self.stopping = how
        self.notifier.stopping()
        pids = [*self.workers, *self.retiring]
        if how == "graceful":
            self.tell(pids, signal.SIGQUIT)
        else:
            self.kill_at = time.monotonic() + KILL_AFTER
            self.tell(pids, signal.SIGTERM)
        for s in self.bound.values():
            s.close()  # no new connection once the workers have closed theirs too

    def on_signal(self, signum: int, sender: int) -> None:
        name = signal_name(signum)
        action = {signal.SIGHUP: ", reconfiguring", signal.SIGQUIT: ", shutting down",
                  signal.SIGTERM: ", exiting", signal.SIGINT: ", exiting",
                  signal.SIGUSR1: ", reopening logs", signal.SIGUSR2: ", ignoring"}.get(
                      signal.Signals(signum), "")
        self.log("notice", f"signal {signum} ({name}) received from {sender}{action}")
        if signum == signal.SIGCHLD:
            self.reap()
        elif self.stopping:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stop("fast")
        elif signum == signal.SIGHUP:
            self.reload()
        elif signum == signal.SIGQUIT:
            self.stop("graceful")
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.stop("fast")
        elif signum == signal.SIGUSR1:
            self.reopen()
        elif signum in (signal.SIGUSR2, signal.SIGWINCH):
            self.log("crit", "binary upgrade (USR2, WINCH) is not supported by pylvs http: "
                             "the signal is ignored; restart to run a new version")

    def run(self) -> int:
        """Start the workers, then act on signals until the last worker has ended."""
        pid_path = self.loaded.main.pid
        try:
            write_pid(pid_path)
        except OSError as e:
            self.log("emerg", f'open() "{pid_path}" failed ({e.errno}: {e.strerror})')
            print(f'pylvs http: [emerg] open() "{pid_path}" failed ({e.errno}: {e.strerror})',
                  file=sys.stderr)
            return 1
        try:
            note_modules(self.log, self.loaded.cfg)
            self.start_workers(self.loaded)
            self.notifier.ready("serving")
            while self.workers or self.retiring:
                info = signal.sigtimedwait(MASTER_SIGNALS, 0.2)
                if info is not None:
                    self.on_signal(info.si_signo, info.si_pid)
                else:
                    self.reap()  # a CHLD merged with another may leave a zombie
                if self.failed:
                    self.log("alert", "no worker could start: exiting")
                    self.stop("fast")
                if self.stopping == "fast" and time.monotonic() >= self.kill_at:
                    self.tell([*self.workers, *self.retiring], signal.SIGKILL)
                    self.kill_at = time.monotonic() + KILL_AFTER
                if not self.stopping and not self.workers:
                    self.start_workers(self.loaded)
            self.log("notice", "exit")
            return 1 if self.failed else 0
        finally:
            for s in self.bound.values():
                s.close()
            remove_pid(self.loaded.main.pid)
            self.notifier.close()
            self.log.close()


def single(loader: Callable[[], Loaded], loaded: Loaded, bound: Bound,
           notifier: Notifier, stats: SharedStats | None = None) -> int:
    """``master_process off``: this one process serves, as nginx's single-process mode does
    (no user switch; HUP reloads in place)."""
    pid_path = loaded.main.pid
    try:
        write_pid(pid_path)
    except OSError as e:
        print(f'pylvs http: [emerg] open() "{pid_path}" failed ({e.errno}: {e.strerror})',
              file=sys.stderr)
        return 1
    log = ErrorLog(loaded.cfg.error_log, loaded.cfg.error_level)
    note_modules(log, loaded.cfg)

    def reload() -> Config | None:
        nonlocal bound
        notifier.reloading()
        try:
            new = loader()
            bound.update(bind_all(new.cfg, bound))
        except ConfigError as e:
            log("emerg", str(e))
            notifier.ready()
            return None
        except OSError as e:
            log("emerg", str(e.strerror or e))
            notifier.ready()
            return None
        notifier.ready()
        return new.cfg

    async def go() -> int:
        asyncio.get_running_loop().call_soon(notifier.ready, "serving")
        return await serve(loaded.cfg, bound, creds=None, parent=0, reload=reload,
                           stats=stats or SharedStats(2))

    try:
        return run_loop(go())
    finally:
        notifier.stopping()
        notifier.close()
        for s in bound.values():
            s.close()
        remove_pid(pid_path)
        log.close()


def start(loader: Callable[[], Loaded], loaded: Loaded,
          metrics: tuple[str, int] | None = None) -> int:
    """Bind (as root), go to the background if asked, then run the master (or the single
    process); errors before serving are one ``[emerg]`` line and status 1."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    try:
        bound = bind_all(loaded.cfg, {})
    except OSError as e:
        print(f"pylvs http: [emerg] {e.strerror}", file=sys.stderr)
        return 1
    stats = SharedStats(STAT_SLOTS if loaded.main.master_process else 2)
    stats.count_peers = metrics is not None  # only the exposition reads them
    observer = None
    if metrics is not None:
        try:
            observer = ObservabilityServer(
                Sources("pylvs http", text=lambda: exposition(stats)), metrics=metrics)
        except MetricsError as e:
            print(f"pylvs http: [emerg] --metrics-address: {e}", file=sys.stderr)
            for s in bound.values():
                s.close()
            return 1
    if loaded.main.daemon:
        daemonize(keep_stderr=loaded.cfg.error_log is None)
    if observer is not None:
        observer.start()  # its threads, in the process that stays (after daemon's fork)
    notifier = Notifier()
    try:
        if not loaded.main.master_process:
            return single(loader, loaded, bound, notifier, stats)
        return Master(loader, loaded, bound, notifier, stats).run()
    finally:
        if observer is not None:
            observer.close()
