"""``pylvsd`` / ``pylvs run``: the director daemon.

What this is for: one long-lived process that owns the IPVS table and the connection table
(``Director``), serves ``pylvsadm`` on the control socket, drives the chosen data plane, and
ticks the clock-driven parts of the core (connection expiry, rate estimator). Table changes made
through the socket act on the same objects the data plane reads: live, with no restart.

Its table survives any death of the process: with a state file (``--state-file PATH``; by
default ``/var/lib/pylvs/ipvsadm.rules`` for root, else under ``$XDG_STATE_HOME``, when it serves
the default control socket) every change is on disk before ``pylvsadm`` hears it succeeded
(``pylvs.director.state``), and a restart restores it. ``--restore FILE`` (an ipvsadm rule file,
checked whole before anything is applied, errors as ``FILE:LINE: ...``) is the table to start
with when there is no state yet, and the one SIGHUP re-reads; ``--save-on-exit FILE`` writes the
table on a clean stop. Signals: ``pylvs.director.signals``.

``--restore FILE`` must exist (a mistyped path is an error, not an empty table);
``--restore-if-exists FILE`` is the same file read only when it is there, as Debian's ipvsadm
init script restores ``/etc/ipvsadm.rules`` (what ``pylvsd.service`` passes). Either way the
precedence at start is the same: the state file when it exists (the last acknowledged table),
else the restore file, else an empty table; SIGHUP re-reads the restore file.

Live connections across a planned restart (the ``packet`` and ``xdp`` planes): a clean stop
writes the connection table beside the state file and the next start takes it back before the
data plane starts, then deletes it; after a crash there is no such file
(``pylvs.director.conntable``).

What this is not for: VRRP and health checks (``pylvs keepalived``), layer 7 (``pylvs http``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pylvs import __version__
from pylvs.control import protocol as P
from pylvs.control.cli import setting as sysctl_setting
from pylvs.control.client import default_socket_path
from pylvs.control.server import ControlServer, ControlSocketBusy
from pylvs.core.api import IPVSError
from pylvs.core.director import Director
from pylvs.core.table import IPVSTable
from pylvs.dataplane import registry
from pylvs.dataplane.base import DataPlane
from pylvs.dataplane.proxy.settings import ProxySettings, SettingsError
from pylvs.director import conntable, signals
from pylvs.director.proxyopts import (
    DirectiveError,
    Directives,
    after_reload,
    apply_directives,
    format_lines,
    live_directives,
    parse_directives,
)
from pylvs.director.state import (
    DurableTable,
    StateError,
    default_state_path,
    read_rules_file,
    sync_table,
    write_atomically,
)
from pylvs.director.sync import SyncDaemons
from pylvs.ipvsadm.rules import RestoreError, apply_commands, parse_restore, save_rules, table_rules
from pylvs.metrics import wiring as metrics
from pylvs.metrics.server import MetricsError
from pylvs.metrics.server import add_arguments as add_metrics_arguments
from pylvs.service.sdnotify import Notifier

log = logging.getLogger("pylvs.director")

TICK_INTERVAL = 1.0  # seconds between Director.tick() calls (expiry and the 2 s estimator)


class StartupError(Exception):
    """The daemon cannot start: bad restore or state file, busy socket, unknown data plane."""


# What a data plane raises when it cannot start on this host (no privilege, no XDP, a missing
# interface, a bad option): said as pylvsd's one-line error, never a traceback.
PLANE_ERRORS = (OSError, ValueError, RuntimeError)


def plane_error(name: str, exc: BaseException) -> str:
    """``data plane xdp cannot start: ...`` in one line, with the hint an EPERM asks for."""
    if isinstance(exc, OSError) and exc.strerror and type(exc).__str__ is OSError.__str__:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
        if exc.errno in (errno.EPERM, errno.EACCES):
            text += " (needs root, or CAP_NET_RAW and CAP_NET_ADMIN)"
    else:
        text = str(exc) or type(exc).__name__
    return f"data plane {name} cannot start: {' '.join(text.split())}"


def load_restore(path: str) -> tuple[IPVSTable, Directives] | None:
    """The table a rule file describes, built apart from any live table, and its
    ``# pylvs-proxy:`` timeouts; None if the file does not exist. ``StateError``,
    ``RestoreError`` or ``DirectiveError`` (``FILE:LINE: ...``) if it is not usable."""
    text = read_rules_file(path)
    if text is None:
        return None
    table = IPVSTable()
    apply_commands(table, parse_restore(text, path), path)
    return table, parse_directives(text, path)


def load_rules(path: str) -> IPVSTable | None:
    """The table a rule file describes (``load_restore`` without the proxy timeouts)."""
    loaded = load_restore(path)
    return None if loaded is None else loaded[0]


class DirectorDaemon:
    """Wires a Director, a data plane and the control socket together on one event loop."""

    def __init__(
        self,
        control_socket: str,
        dataplane: str = "proxy",
        restore: str | None = None,
        save_on_exit: str | None = None,
        dataplane_options: dict[str, Any] | None = None,
        state_file: str | None = None,
        restore_if_exists: bool = False,
        sysctls: dict[str, int | list[int]] | None = None,
    ) -> None:
        """``restore_if_exists``: a missing ``restore`` file is an empty start, not an error;
        ``sysctls``: the core's settings (flood defences, ...) as the control socket's
        ``set_sysctl`` takes them, set here: ``IPVSError`` for a bad one, before anything runs."""
        self.sysctls = dict(sysctls or {})
        self.control_socket = control_socket
        self.dataplane_name = registry.resolve(dataplane)
        self.restore_path = restore
        self.restore_optional = restore_if_exists
        self.save_path = save_on_exit
        self.dataplane_options = dataplane_options or {}
        self.director = Director(IPVSTable())
        self.sync = SyncDaemons(self.director)  # first: it adds the sync_* settings
        if self.sysctls:  # every one checked before any is set (the core's own rule)
            self.director.table.set_sysctl(dict(self.sysctls))
        self.dataplane: DataPlane | None = None
        # SIGHUP re-reads of the --restore file, for the metrics (pylvs_config_reloads...)
        self.reloads = 0  # completed: applied or rejected
        self.reload_failures = 0  # rejected: the running table was kept
        self.last_reload_success: float | None = None  # wall clock of the last table loaded
        # With a state file, the control socket changes the table only through DurableTable.
        self.durable = DurableTable(self.director.table, state_file) if state_file else None
        # The per-service proxy timeouts the restore or state file gave (pylvs.director.proxyopts)
        self.file_timeouts: Directives = {}
        if self.durable is not None:
            self.durable.extra = self._timeout_lines
        self.server = ControlServer(
            self.durable if self.durable is not None else self.director.table, control_socket,
            extra={
                "status": self._status,
                "get_connections": self._get_connections,
                "get_daemons": self._get_daemons,
                "start_daemon": self._start_daemon,
                "stop_daemon": self._stop_daemon,
            },
        )
        # The connection table across a planned restart (pylvs.director.conntable): next to
        # the state file, written on a clean stop of a plane whose connections are entries.
        self.connections_path = conntable.connections_path(state_file) if state_file else None
        self.connections_restored: conntable.Restored | None = None
        self.connections_saved: int | None = None
        self._clean_stop = False
        self.started_at = time.time()
        self.service = Notifier()  # systemd's NOTIFY_SOCKET, when started by a Type=notify unit
        self._stop = asyncio.Event()
        self._ticker_task: asyncio.Task[None] | None = None

    # ipvsadm --start-daemon / --stop-daemon: this process's sync daemons, or the kernel's when
    # the kernel forwards (its connections are in the kernel's table, not in the Director's).
    def _sync_backend(self) -> Any:
        kernel = getattr(self.dataplane, "kernel", None)
        return kernel if kernel is not None else self.sync

    def _get_connections(self, args: dict[str, Any]) -> Any:
        """``-Lnc``: what the data plane forwarded on its own since it last reported (a
        handshake's ACK) entered first, so the listing is the table as of the request."""
        refresh = getattr(self.dataplane, "refresh_table", None)
        if refresh is not None:
            refresh()
        return P.OPERATIONS["get_connections"](self.server.backend, args)

    def _get_daemons(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [P.daemon_to_wire(d) for d in self._sync_backend().get_daemons()]

    def _start_daemon(self, args: dict[str, Any]) -> None:
        self._sync_backend().start_daemon(P.daemons_from_wire([args["daemon"]])[0])

    def _stop_daemon(self, args: dict[str, Any]) -> None:
        self._sync_backend().stop_daemon(str(args["state"]))

    def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        table = self.director.table
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1),
            "control_socket": self.control_socket,
            "dataplane": self.dataplane.describe() if self.dataplane else {"name": "none"},
            "services": len(list(table.services())),
            "connections": self.director.connection_count,
            "sync": self.sync.counters(),
            "state_file": None if self.durable is None else {
                "path": self.durable.path, "writes": self.durable.writes,
                "write_failures": self.durable.write_failures,
            },
            "connections_file": None if self.connections_path is None else {
                "path": self.connections_path,
                "restored": (None if self.connections_restored is None
                             else self.connections_restored.restored),
            },
        }

    def _restore(self) -> None:
        """The state file if there is one, else ``--restore``; then the state file is written
        (so a state path that cannot be written stops the start, not a later change).

        A ``--restore`` file (not ``--restore-if-exists``) must exist even when the state file
        wins: a wrong path is said at start, not at the first SIGHUP."""
        if self.restore_path and not self.restore_optional:
            try:
                os.stat(self.restore_path)
            except FileNotFoundError:
                raise StartupError(f"{self.restore_path}: No such file or directory") from None
            except OSError:
                pass  # said in its own words when it is read
        sources = [self.durable.path] if self.durable is not None else []
        sources += [self.restore_path] if self.restore_path else []
        for path in sources:
            try:
                loaded = load_restore(path)
            except (StateError, RestoreError, DirectiveError) as exc:
                raise StartupError(str(exc)) from None
            if loaded is None:
                log.info("%s does not exist yet", path)
                continue
            table, self.file_timeouts = loaded
            changes = sync_table(self.director.table, table)
            log.info("restored the table from %s (%d changes)", path, changes)
            self.last_reload_success = time.time()
            break
        if self.durable is not None:
            try:
                os.makedirs(os.path.dirname(self.durable.path) or ".", mode=0o755, exist_ok=True)
                self.durable.save()
            except OSError as exc:
                raise StartupError(
                    f"{self.durable.path}: cannot write the state file: {exc.strerror or exc}"
                ) from None

    def _restore_connections(self) -> None:
        """At start, after the table: the entries a clean stop saved, for a plane whose
        connections are entries; the file is deleted either way (never read twice)."""
        path = self.connections_path
        if path is None:
            return
        if self.dataplane_name not in conntable.KEEPS_CONNECTIONS:
            if conntable.discard(path):
                log.info("%s removed unread: the %s data plane keeps no connection entries "
                         "across a restart", path, self.dataplane_name)
            return
        try:
            restored = conntable.restore(self.director, path, time.time())
        except conntable.ConnTableError as exc:
            log.error("connection table not restored: %s", exc)
            return
        if restored is not None:
            self.connections_restored = restored
            log.info("%s: %s", path, restored.summary())

    def _save_connections(self) -> None:
        """On a clean stop, once the data plane has stopped (its flows' counters and timers are
        back in the entries): write the connection table for the next start."""
        path = self.connections_path
        if path is None or self.dataplane_name not in conntable.KEEPS_CONNECTIONS:
            return
        try:
            self.connections_saved = conntable.save(self.director, path, time.time())
        except OSError as exc:
            log.error("cannot save the connection table to %s: %s", path, exc.strerror or exc)
            return
        log.info("saved %d connection entries to %s for the next start",
                 self.connections_saved, path)

    def reload(self) -> None:
        """SIGHUP: make the table what the ``--restore`` file says, if the whole file is good."""
        path = self.restore_path
        if not path:
            log.info("SIGHUP: no --restore file was given; nothing to re-read, still running")
            return
        applied = self._reload_from(path)
        self.reloads += 1
        if applied:
            self.last_reload_success = time.time()
        else:
            self.reload_failures += 1

    def _reload_from(self, path: str) -> bool:
        """The table becomes the file's; False (logged) when it is refused and kept as it was."""
        try:
            loaded = load_restore(path)
        except (StateError, RestoreError, DirectiveError) as exc:
            log.error("SIGHUP: %s; the running table is kept", exc)
            return False
        if loaded is None:
            log.error("SIGHUP: %s does not exist; the running table is kept", path)
            return False
        table, timeouts = loaded
        if self.durable is not None:
            live = live_directives(self.dataplane)
            after = timeouts if live is None else after_reload(live, self.file_timeouts, timeouts)
            try:
                self.durable.save(table, format_lines(after))
            except OSError as exc:
                log.error("SIGHUP: cannot save the table to %s: %s; the running table is kept",
                          self.durable.path, exc.strerror or exc)
                return False
        changes = sync_table(self.director.table, table)
        changes += apply_directives(self.dataplane, timeouts, self.file_timeouts)
        self.file_timeouts = timeouts
        log.info("SIGHUP: re-read %s: %d changes", path, changes)
        return True

    def _timeout_lines(self) -> list[str]:
        """The ``# pylvs-proxy:`` lines saved with the table: the proxy plane's live per-service
        timeouts, or (any other plane, or before the plane is built) the file's, kept as given."""
        live = live_directives(self.dataplane)
        return format_lines(self.file_timeouts if live is None else live)

    def dump_table(self) -> None:
        """SIGUSR1: the table in ipvsadm-save form and the connection count, to the log."""
        rules = table_rules(self.director.table)
        log.info("table (%d connections):\n%s", self.director.connection_count,
                 rules.rstrip("\n") or "(empty)")

    def dump_counters(self) -> None:
        """SIGUSR2: the daemon's counters, to the log."""
        log.info("status: %s", json.dumps(self._status({}), sort_keys=True, default=str))

    def _save(self) -> None:
        if not self.save_path:
            return
        try:
            lines = "".join(f"{line}\n" for line in self._timeout_lines())
            write_atomically(self.save_path, save_rules(self.director.table, numeric=True) + lines)
        except OSError as exc:
            log.error("cannot save the table to %s: %s", self.save_path, exc.strerror or exc)
            return
        log.info("saved the table to %s", self.save_path)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            self.director.tick()

    def request_stop(self) -> None:
        """A clean stop (SIGTERM, SIGINT, SIGQUIT): the connection table is kept for the next
        start. Any other end of ``run`` (an error) keeps none."""
        self._clean_stop = True
        self._stop.set()

    async def start(self) -> None:
        """Restore, build the data plane, open the control socket, start forwarding."""
        self._restore()
        self._restore_connections()
        if self.sysctls:
            log.info("settings from the command line: %s",
                     " ".join(f"{k}={' '.join(map(str, v))!r}" if isinstance(v, list) else f"{k}={v}"
                              for k, v in sorted(self.sysctls.items())))
        try:
            options = {**registry.UNDER_DAEMON.get(self.dataplane_name, {}), **self.dataplane_options}
            self.dataplane = registry.create(self.dataplane_name, self.director, **options)
        except KeyError:
            raise StartupError(
                f"unknown data plane {self.dataplane_name!r} (available: {', '.join(registry.available())})"
            ) from None
        except PLANE_ERRORS as exc:
            raise StartupError(plane_error(self.dataplane_name, exc)) from None
        if apply_directives(self.dataplane, self.file_timeouts, {}):
            log.info("proxy timeouts of %d service(s) from the restored file",
                     len(self.file_timeouts))
        try:
            await self.server.start()
        except ControlSocketBusy as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:  # a directory that is not there or not ours
            raise StartupError(
                f"{self.control_socket}: cannot open the control socket: {exc.strerror or exc}"
            ) from None
        self._ticker_task = asyncio.create_task(self._ticker())
        try:
            if self.dataplane is not None:
                await self.dataplane.start()
        except PLANE_ERRORS as exc:
            # not allowed (no root), XDP unavailable, an interface gone: one line, exit 1
            with contextlib.suppress(*PLANE_ERRORS):
                await self.stop()
            raise StartupError(plane_error(self.dataplane_name, exc)) from None
        except BaseException:
            await self.stop()
            raise
        log.info(
            "director ready: data plane %s, control socket %s",
            self.dataplane_name, self.control_socket,
        )

    async def stop(self) -> None:
        """Save the table if asked, stop forwarding, close the socket. Safe to call twice."""
        task, self._ticker_task = self._ticker_task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.sync.close()
        try:
            self._save()
        finally:
            try:
                if self.dataplane is not None:
                    if (self._clean_stop and self.connections_path is not None
                            and self.dataplane_name in conntable.KEEPS_CONNECTIONS
                            and hasattr(self.dataplane, "keep_firewall")):
                        self.dataplane.keep_firewall = True  # a planned restart: see the plane
                    await self.dataplane.stop()
                if self._clean_stop:
                    self._save_connections()
            finally:
                await self.server.stop()
        log.info("director stopped")

    def _reload_notified(self) -> None:
        """SIGHUP under systemd: RELOADING=1, the reload, READY=1 (``systemctl reload`` waits)."""
        self.service.reloading()
        try:
            self.reload()
        finally:
            self.service.ready()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT/SIGQUIT, stop (signals: ``pylvs.director.signals``).

        Under systemd (``$NOTIFY_SOCKET``): READY=1 once the control socket and the data plane
        are up, RELOADING=1/READY=1 around a SIGHUP, STOPPING=1 when a stop begins, and
        WATCHDOG=1 every half ``$WATCHDOG_USEC`` from this loop (``pylvs.service.sdnotify``).
        """
        # The handlers go in before the start (restoring a large table, opening a data plane
        # can take seconds), so that a stop sent meanwhile (a supervisor's restart) is a clean
        # stop once started rather than the default action's death, and a HUP or a dump asked
        # meanwhile is done once started, not on a half-built daemon.
        starting = True
        deferred: list[Callable[[], None]] = []

        def once_started(action: Callable[[], None]) -> Callable[[], None]:
            def act() -> None:
                if not starting:
                    action()
                elif action not in deferred:
                    log.info("still starting: done once started")
                    deferred.append(action)

            return act

        actions = {sig: self.request_stop for sig in signals.STOP_SIGNALS}
        actions[signal.SIGHUP] = once_started(self._reload_notified)
        actions[signal.SIGUSR1] = once_started(self.dump_table)
        actions[signal.SIGUSR2] = once_started(self.dump_counters)
        signals.install(asyncio.get_running_loop(), actions)
        await self.start()
        starting = False
        try:
            self.service.ready(f"data plane {self.dataplane_name}, control socket {self.control_socket}")
            for action in deferred:
                action()
            self.service.start_watchdog()
            await self._stop.wait()
        finally:
            self.service.stopping()
            try:
                await self.stop()
            finally:
                self.service.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--control-socket", metavar="PATH",
        help="control socket for pylvsadm (default $PYLVS_CONTROL_SOCKET or /run/pylvs/pylvs.sock)",
    )
    p.add_argument(
        "--dataplane", default="auto", choices=registry.available(),
        help="how traffic is forwarded; auto: kernel IPVS where the kernel has it, else proxy",
    )
    restore = p.add_mutually_exclusive_group()
    restore.add_argument("--restore", metavar="FILE",
                         help="ipvsadm rule file: the table at start when there is no state yet "
                              "(the file must exist); SIGHUP re-reads it")
    restore.add_argument("--restore-if-exists", metavar="FILE",
                         help="as --restore, but a missing file is an empty table (Debian's "
                              "ipvsadm init: /etc/ipvsadm.rules)")
    p.add_argument("--save-on-exit", metavar="FILE", help="write the table here (ipvsadm-save -n format) on exit")
    state = p.add_mutually_exclusive_group()
    state.add_argument(
        "--state-file", metavar="PATH",
        help="keep the table here, written before each change is acknowledged and restored at start "
             "(default with the default control socket: /var/lib/pylvs/ipvsadm.rules as root, "
             "else $XDG_STATE_HOME/pylvs/ipvsadm.rules)",
    )
    state.add_argument("--no-state-file", action="store_true", help="keep no state file")
    p.add_argument(
        "--proxy-timeouts", metavar="WORDS",
        help="the proxy data plane's timeouts and limits, HAProxy's meanings, e.g. "
             "'server=30 client=60 tunnel=0 connect=3 maxconn=100000 queue=1 retries=1' "
             "(replaces $PYLVS_PROXY_TIMEOUTS; per service: '# pylvs-proxy: -t VIP:PORT server=5' "
             "lines in the restore file)",
    )
    p.add_argument(
        "--sysctl", action="append", default=[], metavar="NAME=VALUE",
        help="a setting of the core at start, as 'pylvs sysctl -w' sets it later (repeatable): "
             "drop_entry, drop_packet, secure_tcp, amemthresh, am_droprate, max_connections, "
             "sloppy_tcp, sync_threshold='3 50', sync_refresh_period, ... (see 'pylvs sysctl "
             "-a'); the net.ipv4.vs. prefix is optional",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_metrics_arguments(p)  # --metrics-address, --status-address (pylvs.metrics)


def state_file_for(args: argparse.Namespace, control_socket: str) -> str | None:
    """``--state-file``, else the default path for the one system director (the one serving the
    default control socket). A director on another socket (a test, a lab, a second instance)
    keeps no state unless told where: two of them must never share one file."""
    if getattr(args, "no_state_file", False):
        return None
    if getattr(args, "state_file", None):
        return str(args.state_file)
    return default_state_path() if control_socket == P.DEFAULT_SOCKET else None


def proxy_settings(text: str | None, dataplane: str) -> ProxySettings | None:
    """``--proxy-timeouts``'s settings (None when not given); ``SettingsError`` in one line
    for a bad word or a data plane that has no such timeouts."""
    if text is None:
        return None
    try:
        settings = ProxySettings.parse(text)
    except SettingsError as exc:
        raise SettingsError(f"--proxy-timeouts: {exc}") from None
    plane = registry.resolve(dataplane)
    if plane != "proxy":
        raise SettingsError(f"--proxy-timeouts: only the proxy data plane has them (here: {plane})")
    return settings


def parse_sysctls(words: Sequence[str]) -> dict[str, int | list[int]]:
    """``--sysctl NAME=VALUE`` words read as ``pylvs sysctl -w`` reads them (``net.ipv4.vs.``
    optional; a vector's integers separated by blanks: ``sync_threshold=3 50``); ``ValueError``
    in one line for one that is not. Names and ranges are the core's to check
    (``DirectorDaemon`` sets them through the table, as ``pylvs sysctl -w`` does)."""
    out: dict[str, int | list[int]] = {}
    for word in words:
        try:
            name, value = sysctl_setting(word)
        except ValueError as exc:
            raise ValueError(f"--sysctl {word}: {exc}") from None
        out[name] = value
    return out


def dataplane_options(args: argparse.Namespace) -> dict[str, Any]:
    """What the command line gives the data plane's constructor."""
    settings = proxy_settings(args.proxy_timeouts, args.dataplane)
    return {} if settings is None else {"settings": settings}


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        options = dataplane_options(args)
        sysctls = parse_sysctls(args.sysctl)
    except ValueError as exc:  # SettingsError too
        print(f"pylvsd: {exc}", file=sys.stderr)
        return 2
    control_socket = default_socket_path(args.control_socket)
    try:
        daemon = DirectorDaemon(
            control_socket,
            dataplane=args.dataplane,
            dataplane_options=options,
            restore=args.restore or args.restore_if_exists,
            restore_if_exists=args.restore_if_exists is not None,
            sysctls=sysctls,
            save_on_exit=args.save_on_exit,
            state_file=state_file_for(args, control_socket),
        )
    except IPVSError as exc:  # a --sysctl name or value the core refuses; nothing has run
        print(f"pylvsd: --sysctl: {exc}", file=sys.stderr)
        return 2
    try:  # metrics and status page, served from their own threads (pylvs.metrics)
        observe = metrics.observe_director(daemon, args)
    except MetricsError as exc:
        print(f"pylvsd: {exc}", file=sys.stderr)
        return 1
    try:
        with observe if observe is not None else contextlib.nullcontext():
            asyncio.run(daemon.run())
    except StartupError as exc:
        print(f"pylvsd: {exc}", file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the director daemon (same as pylvsd)")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pylvsd", description="pylvs director daemon")
    p.add_argument("-V", "--version", action="version", version=f"pylvsd (pylvs) {__version__}")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
