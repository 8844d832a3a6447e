"""The orchestration of ``pylvs keepalived``: start, reload and stop, wiring the parts together.

Why it is thin: each part lives in a module of its own (VRRP instances in ``instances``, tracked
scripts/processes/files in ``tracking``, notify scripts/FIFOs/mail in ``scripts``, the arbitrator,
split-brain evidence, metrics, and the virtual servers in ``lvs_runtime``); this module only
decides in which order they start, how a reload replaces them and how they stop.

Signals as keepalived 2.2 (``keepalived --signum=NAME`` gives the numbers, see ``signals``):
HUP reloads; TERM and INT stop cleanly (resign with priority 0, VIPs removed); USR1 writes
keepalived.data, USR2 keepalived.stats, SIGRTMIN+2 (JSON) keepalived.json and SIGRTMAX-1
(STATS_CLEAR) the stats then clears them, and the daemon keeps running; PIPE is ignored. Every
signal acted on is logged.

Reloads cannot overlap or stall: SIGHUPs are serialised by one reloader task (a HUP during a
reload makes exactly one more reload after it), and the new file is read, checked and planned in
a worker thread, so adverts, checkers and the control socket keep their timing while it is
parsed; only a fully good file replaces the running one. Not for: protocol decisions, which all
live in :mod:`pylvs.vrrp.router`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pylvs.config import keepalived as K
from pylvs.config.grammar import ConfigError, Diagnostic
from pylvs.health import checkers as _checkers  # noqa: F401  (the checker kinds K.load_full reads)
from pylvs.keepalived import dumps
from pylvs.keepalived import signals as sigs
from pylvs.keepalived.arbitrator import Arbitrator, ArbitratorSettings
from pylvs.keepalived.instances import Instances, Runtime, process_age
from pylvs.keepalived.metrics import Metrics
from pylvs.keepalived.scripts import Notifier
from pylvs.keepalived.split_brain import SplitBrainWatch
from pylvs.keepalived.tracking import Tracking
from pylvs.service.sdnotify import Notifier as ServiceNotifier
from pylvs.vrrp.plan import HostError, InstancePlan, plan_instances
from pylvs.vrrp.router import State

if TYPE_CHECKING:
    from pylvs.config.keepalived import LVSConfig
    from pylvs.dataplane.proxy.settings import ProxySettings
    from pylvs.keepalived.lvs_runtime import LVSRuntime

log = logging.getLogger("pylvs.vrrp")
T = TypeVar("T")

__all__ = ["DaemonSettings", "HostError", "KeepalivedDaemon", "plan_instances", "process_age"]


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """What the command line decides for one daemon (the file decides everything else)."""

    path: str  # keepalived.conf
    config_id: str | None = None  # -i: which @ID conditional lines apply
    state_file: str | None = None  # JSON state, rewritten on every change and on SIGUSR1
    arbitrator: ArbitratorSettings | None = None
    notify_split_brain: str | None = None
    split_brain_probe: bool = True
    metrics_port: int | None = None
    metrics_address: str | None = None  # pylvs.metrics: --metrics-address HOST:PORT
    status_address: str | None = None  # the status page
    status_admin_secret_file: str | None = None  # its POST /admin secret
    control_socket: str | None = None
    dataplane: str = "proxy"
    run_vrrp: bool = True  # -C alone turns VRRP off
    run_checkers: bool = True  # -P alone turns the virtual servers and their checkers off
    release_vrrp: bool = True  # -V: keep VIPs and virtual routes when stopping
    release_ipvs: bool = True  # -I: keep the virtual servers in the kernel's table when stopping
    all_config: bool = False  # -e: a missing include is an error
    dump_conf: bool = False  # -d: log the configuration (keepalived.data's text) at start
    proxy_settings: ProxySettings | None = None  # --proxy-timeouts (proxy data plane only)


class _Rejected(Exception):
    """A reload's file cannot replace the running one: the lines to log."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


class KeepalivedDaemon:
    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.early_signals: list[int] = []  # SIGTERM/SIGINT before the loop ran (``cli``)
        self.path = settings.path
        self.lvs: LVSRuntime | None = None
        self.cfg: K.KeepalivedConfig | None = None
        self.notifier = Notifier(settings.notify_split_brain)
        self.tracking = Tracking(on_change=self._retrack)
        self.arbitrator = Arbitrator(settings.arbitrator, self._retrack) if settings.arbitrator else None
        self.metrics = Metrics(settings, self)  # metrics, status page, observe
        self.watch = SplitBrainWatch(settings.split_brain_probe)
        self.instances: Instances | None = None
        self.done: asyncio.Event | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self._last_state = ""
        self.service = ServiceNotifier()
        self.reloads = 0  # completed reloads (good or rejected), for tests and the state file
        self.reload_failures = 0  # rejected ones: the running configuration stayed
        self.last_reload_success: float | None = None  # wall clock of the last applied one
        self._reload_wanted: asyncio.Event | None = None
        self._reload_idle: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        # Signals are handled from the start (the pid files exist already): a SIGTERM while the
        # file is read or the first VIPs go up is a clean stop once the loop runs, not a kill
        # by the default action; a SIGHUP then waits for the reloader.
        self._reload_wanted, self._reload_idle = asyncio.Event(), asyncio.Event()
        self._reload_idle.set()
        self._install_signals(loop)
        if self.early_signals:  # a stop asked before the loop ran (``cli``)
            log.info("Received signal %s before startup", self.early_signals[0])
            self.done.set()
        s = self.settings
        try:
            cfg, lvs = load(s.path, s.config_id, s.all_config)
        except ConfigError as exc:
            for d in exc.diagnostics:
                (log.error if d.severity == "error" else log.warning)("%s", d)
            return 1
        for d in [*cfg.diagnostics, *lvs.diagnostics]:
            log.warning("%s", d)
        try:
            plans = plan_instances(cfg) if s.run_vrrp else []
        except HostError as exc:
            log.error("%s", exc)
            return 1
        if not s.run_checkers:
            lvs = K.LVSConfig()
        self.cfg = cfg
        self.instances = Instances(loop, self.notifier, self.metrics, self.watch, self._evaluate,
                                   on_state=self.write_state, on_role=self._lvs_sync_follow)
        self.instances.cfg = cfg
        self.instances.release_on_stop = s.release_vrrp
        self.notifier.open(cfg.global_defs)
        if lvs.virtual_servers and not await self._start_lvs(lvs):
            return 1
        _process_priority(cfg.global_defs)
        self.tracking.start(cfg)
        # Startup event (RFC 3768 6.4.1) at the process's own start, not after Python has loaded:
        # the wait for Master_Down_Interval then ends when a C daemon's would. At most half an
        # advertisement interval is taken back, so a backup still hears the master's adverts
        # (which restart its timer) well before the interval runs out.
        age = process_age()
        for p in plans:
            back = min(age, 0.5 * p.router.adver_int)
            self.instances.start(p, started=loop.time() - back)
        reloader = asyncio.create_task(self._reloader())
        self.tasks.append(asyncio.create_task(self.tracking.poll(self._tracking_tick)))
        if self.arbitrator is not None:
            self.tasks.append(asyncio.create_task(self.arbitrator.run()))
        control = None
        if s.control_socket and self.lvs is None:
            # VRRP only: the control API every pylvs daemon speaks, with an empty table
            # (with virtual servers, the LVS half serves the socket and vrrp_status is added there)
            from pylvs.control.server import ControlServer
            from pylvs.core.table import IPVSTable

            control = ControlServer(IPVSTable(), s.control_socket, extra=self._control_extra())
            try:
                await control.start()
            except Exception as exc:
                log.error("control socket %s: %s", s.control_socket, exc)
                control = None
        if s.dump_conf:
            for line in self._data_text().splitlines():
                log.info("%s", line)
        log.info("Startup complete")
        self.service.ready()
        self.service.start_watchdog()
        await self.done.wait()
        self.service.stopping()
        log.info("Stopping")
        # a reload under way finishes first: a half-applied file would leave checkers behind
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                await self._reload_idle.wait()
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader
        if control is not None:
            await control.stop()
        self.shutdown()  # VRRP first: resign and drop the VIPs before the services go
        await self.notifier.wait_children(timeout=10)  # notify_stop scripts run to completion
        if self.lvs is not None:
            await self.lvs.stop(release=s.release_ipvs)
        self.service.close()
        return 0

    def shutdown(self) -> None:
        if self.instances is not None:
            self.instances.stop_all()
        for t in self.tasks:
            t.cancel()
        self.tracking.stop()
        self.write_state()
        if self.instances is not None:
            self.instances.close()
        self.notifier.close()
        self.metrics.close()
        log.info("Stopped")

    # -- signals -------------------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.done is not None
        done = self.done
        actions: dict[int, Callable[[], None]] = {
            signal.SIGHUP: self._on_hup,
            signal.SIGTERM: done.set,
            signal.SIGINT: done.set,
            sigs.SIGDATA: self._dump_data,
            sigs.SIGSTATS: lambda: self._dump_stats(clear=False),
            sigs.SIGSTATS_CLEAR: lambda: self._dump_stats(clear=True),
            sigs.SIGJSON: self._dump_json,
        }
        for signum, action in actions.items():
            loop.add_signal_handler(signum, self._logged, signum, action)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a closed pipe is an error return, not an exit

    @staticmethod
    def _logged(signum: int, action: Callable[[], None]) -> None:
        log.info("Received signal %s (%s)", sigs.describe(signum), signum)
        action()

    def _dump_data(self) -> None:
        log.info("Printing VRRP data for process(%d) on signal", os.getpid())
        self._write_dump("keepalived.data", self._data_text())
        self.write_state()  # pylvs' own state file is rewritten too, as before

    def _dump_stats(self, clear: bool) -> None:
        log.info("Printing %sVRRP stats for process(%d) on signal", "and clearing " if clear else "", os.getpid())
        self._write_dump("keepalived.stats", dumps.stats_text(self._running()))
        if clear:
            dumps.clear_stats(r.router for r in self._running())

    def _dump_json(self) -> None:
        log.info("Printing VRRP as json for process(%d) on signal", os.getpid())
        self._write_dump("keepalived.json", dumps.json_text(self._running()))

    @staticmethod
    def _write_dump(name: str, text: str) -> None:
        try:
            dumps.write_dump(name, text)
        except OSError as exc:
            log.error("cannot write %s in %s: %s", name, dumps.dump_dir(), exc.strerror or exc)

    def _running(self) -> list[dumps.Running]:
        if self.instances is None:
            return []
        return [dumps.Running(rt.plan, rt.router, self.instances.transitions.get(name, 0.0))
                for name, rt in self.instances.runtimes.items()]

    def _data_text(self) -> str:
        g = self.cfg.global_defs if self.cfg is not None else K.GlobalDefs()
        return dumps.data_text(g, self._running(), self.tracking.scripts,
                               dumps.lvs_lines(self.lvs.config) if self.lvs is not None else ())

    # -- reload ------------------------------------------------------------------------------

    def _on_hup(self) -> None:
        assert self._reload_wanted is not None and self._reload_idle is not None
        if not self._reload_idle.is_set():
            log.info("A reload is under way: one more follows it")
        self._reload_wanted.set()

    async def _reloader(self) -> None:
        """The only place reloads run: one at a time, HUPs during one coalesced into the next."""
        assert self._reload_wanted is not None and self._reload_idle is not None
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            self._reload_idle.clear()
            try:
                await self._reload_once()
            finally:
                self.reloads += 1
                self._reload_idle.set()

    def _load_checked(self) -> tuple[K.KeepalivedConfig, K.LVSConfig, list[InstancePlan]]:
        """Read, check and plan the file (runs in a worker thread: nothing here touches the
        running daemon); :class:`_Rejected` when it cannot replace the running one."""
        s = self.settings
        try:
            cfg, lvs = load(s.path, s.config_id, s.all_config)
            plans = plan_instances(cfg) if s.run_vrrp else []
        except ConfigError as exc:
            raise _Rejected([str(d) for d in exc.diagnostics if d.severity == "error"]) from None
        except HostError as exc:
            raise _Rejected([str(exc)]) from None
        return cfg, lvs, plans

    async def _reload_once(self) -> None:
        """SIGHUP: parse and resolve the new file first; only a fully good one replaces the old."""
        log.info("Reloading")
        self.service.reloading()
        try:
            try:
                cfg, lvs, plans = await _off_loop(self._load_checked)
            except _Rejected as exc:
                self.reload_failures += 1
                for line in exc.lines:
                    log.error("reload rejected, keeping the running configuration: %s", line)
                return
            for d in [*cfg.diagnostics, *lvs.diagnostics]:
                log.warning("%s", d)
            if self.settings.run_vrrp:
                self._apply_vrrp(cfg, plans)
            else:
                self.cfg = cfg
                self.notifier.configure(cfg.global_defs)
            if self.settings.run_checkers:
                await self._reload_lvs(lvs)
            self.write_state()
            self.last_reload_success = time.time()
            log.info("Reload complete")
        finally:
            self.service.ready()

    def _apply_vrrp(self, cfg: K.KeepalivedConfig, plans: list[InstancePlan]) -> None:
        """The VRRP half of a reload, from a new file already checked."""
        assert self.instances is not None
        started = self.instances.reload(plans)
        self.tracking.stop()
        self.cfg = self.instances.cfg = cfg
        self.notifier.configure(cfg.global_defs)
        self.tracking.start(cfg)
        for p in started:
            self.instances.start(p)

    # -- the virtual_server half (pylvs.keepalived.lvs_runtime) --------------------------------

    def _control_extra(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"vrrp_status": lambda _args: self.status(), "observe": self.metrics.observe}

    async def _start_lvs(self, lvs: LVSConfig) -> bool:
        """Program and check the virtual servers, served on the control socket with VRRP's state."""
        from pylvs.control.client import default_socket_path
        from pylvs.keepalived.lvs_runtime import LVSRuntime

        rt = LVSRuntime(lvs, self.settings.control_socket or default_socket_path(),
                        dataplane=self.settings.dataplane,
                        global_defs=self.cfg.global_defs if self.cfg is not None else None)
        if self.settings.proxy_settings is not None and rt.director is not None:
            # --proxy-timeouts: the proxy plane is built by rt.start() with these settings
            rt.director.dataplane_options["settings"] = self.settings.proxy_settings
        try:
            await rt.start()
        except Exception as exc:
            log.error("virtual servers cannot start: %s", exc)
            return False
        server = rt.director.server if rt.director is not None else rt.server
        if server is not None:
            server.extra.update(self._control_extra())
        rt.health.on_event = self.notifier.lvs_event
        self.lvs = rt
        sd = self.cfg.global_defs.lvs_sync_daemon if self.cfg is not None else None
        if sd is not None:
            rt.sync_daemon("backup", sd)  # until its instance becomes MASTER, as keepalived does
        return True

    async def _reload_lvs(self, lvs: LVSConfig) -> None:
        try:
            if self.lvs is not None and lvs.virtual_servers:
                await self.lvs.reload(lvs)
            elif self.lvs is not None:
                await self.lvs.stop()
                self.lvs = None
            elif lvs.virtual_servers:
                await self._start_lvs(lvs)
        except Exception as exc:
            log.error("virtual servers reload failed: %s", exc)

    def _lvs_sync_follow(self, rt: Runtime, state: State) -> None:
        """lvs_sync_daemon: the connection sync daemon is master while its instance is."""
        sd = self.cfg.global_defs.lvs_sync_daemon if self.cfg is not None else None
        if sd is None or self.lvs is None or sd.instance != rt.plan.instance.name:
            return
        if state is State.MASTER:
            self.lvs.sync_daemon("master", sd)
        elif state in (State.BACKUP, State.FAULT):
            self.lvs.sync_daemon("backup", sd)

    # -- tracking ------------------------------------------------------------------------------

    def _evaluate(self, plan: InstancePlan) -> tuple[int, set[str]]:
        return self.tracking.evaluate(plan, self.arbitrator.fault if self.arbitrator else None)

    def _retrack(self) -> None:
        if self.instances is not None:
            self.instances.retrack_all()

    def _tracking_tick(self) -> None:
        self._retrack()
        self.write_state(only_if_changed=True)

    # -- state -----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"pid": os.getpid(), "time": time.time(), "config": self.path,
                                  "reloads": self.reloads, "reload_failures": self.reload_failures}
        out["instances"] = self.instances.status() if self.instances is not None else {}
        out["arbitrator"] = self.arbitrator.status() if self.arbitrator is not None else None
        return out

    def write_state(self, only_if_changed: bool = False) -> None:
        """The state file is how tests, scripts and operators see the daemon: written atomically."""
        state_file = self.settings.state_file
        if not state_file:
            return
        status = self.status()
        key = json.dumps([status["instances"], status["arbitrator"]], sort_keys=True)
        if only_if_changed and key == self._last_state:
            return
        self._last_state = key
        tmp = f"{state_file}.tmp{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(status, fh, indent=1)
            os.replace(tmp, state_file)
        except OSError as exc:
            log.warning("cannot write state file %s: %s", state_file, exc)


def _process_priority(g: K.GlobalDefs) -> None:
    """global_defs vrrp_priority (nice, -20..19) and vrrp_rt_priority (SCHED_RR 1..99), as
    keepalived applies them to its VRRP process: timers stay punctual on a loaded director."""
    for st in g.other:
        try:
            if st.keyword == "vrrp_priority" and st.args:
                os.setpriority(os.PRIO_PROCESS, 0, max(-20, min(19, int(st.args[0]))))
            elif st.keyword == "vrrp_rt_priority" and st.args:
                os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(max(1, min(99, int(st.args[0])))))
        except (ValueError, OSError) as exc:
            log.warning("%s: %s %s: %s", st.where, st.keyword, " ".join(st.args), exc)


def load(path: str, config_id: str | None, all_config: bool = False) -> tuple[K.KeepalivedConfig, K.LVSConfig]:
    """The whole file; with ``all_config`` (keepalived's -e) an include that matches no file is an
    error instead of a warning."""
    cfg, lvs = K.load_full(path, config_id)
    if all_config:
        missing = [Diagnostic("error", d.file, d.line, d.message) for d in [*cfg.diagnostics, *lvs.diagnostics]
                   if d.severity == "warning" and d.message.startswith("include ") and "no file matches" in d.message]
        if missing:
            raise ConfigError(missing)
    return cfg, lvs


async def _off_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread while the loop keeps its timing: the interpreter switches
    threads every 0.5 ms instead of 5, and the cyclic garbage collector (whose full passes over
    a large new configuration stall every thread for 100 ms and more) waits until it is done."""
    interval = sys.getswitchinterval()
    collecting = gc.isenabled()
    sys.setswitchinterval(0.0005)
    gc.disable()
    try:
        return await asyncio.to_thread(fn)
    finally:
        sys.setswitchinterval(interval)
        if collecting:
            gc.enable()
