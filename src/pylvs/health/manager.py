"""The health-check driver: runs every checker on its own timer and keeps a table in step.

What this is for: the "checkers" half of keepalived. It programs the virtual services of a
keepalived.conf into any ``IPVSBackend`` (pylvs' own table, the daemon, or the kernel's IPVS),
runs the probes concurrently (each checker is one asyncio task; no probe can stall another or the
data plane), feeds results to the sans-IO state (``pylvs.health.state``), and reconciles the table
with what that state wants: only the real servers that differ are added, edited or removed, so the
live connections of every other server are untouched. ``reload`` does the same across a new
configuration, keeping the state of checkers that did not change. What it does is logged in
keepalived 2.2.7's words (``pylvs.health.wording``), so that greps and alerts written for
keepalived's log keep working.

What this is not for: deciding anything (``state``) or probing (``checkers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from pylvs.config.keepalived import LVSConfig, RealServerConfig, VirtualServerConfig
from pylvs.core.api import IPVSBackend, IPVSError
from pylvs.core.compare import same_dest
from pylvs.core.model import DestSpec, ServiceFlags, ServiceSpec
from pylvs.health import wording
from pylvs.health.checkers import KINDS, CheckResult, run_check
from pylvs.health.state import CheckerState, Notify, RealServerState, VirtualServerState

log = logging.getLogger("pylvs.health")

SCRIPT_TIMEOUT = 30.0


def _dest_key(d: DestSpec) -> tuple[str, int]:
    return (str(d.addr), d.port)


def _vips_are_local(config: VirtualServerConfig) -> bool:
    """Whether this host holds the virtual server's addresses: a socket can bind only to a
    local address (fwmark services have none and count as local)."""
    for spec in config.services:
        addr = spec.key.addr
        if addr is None:
            continue
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((str(addr), 0))
            except OSError:
                return False
    return True


class HealthManager:
    def __init__(
        self,
        backend: IPVSBackend,
        config: LVSConfig,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        probe: Callable[..., Any] = run_check,
    ) -> None:
        self.backend = backend
        self.config = config
        # told of every real server (None: the virtual server's quorum) that goes up or down
        self.on_event: Callable[[VirtualServerConfig, RealServerConfig | None, bool], None] | None = None
        self.clock = clock
        self.rng = rng
        self.probe = probe
        self.states: list[VirtualServerState] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._scripts: set[asyncio.Task[None]] = set()
        self.changes = 0  # table operations made, for tests and the status API

    # ---- table ---------------------------------------------------------------------------

    def _program_service(self, spec: ServiceSpec) -> None:
        try:
            current = self.backend.get_service(spec.key)
        except IPVSError:
            self.backend.add_service(spec)
            self.changes += 1
            return
        # HASHED is the table's own bookkeeping bit, never part of what was asked for
        have = dataclasses.replace(current.spec, flags=current.spec.flags & ~ServiceFlags.HASHED)
        if have != spec:
            self.backend.edit_service(spec)
            self.changes += 1

    def reconcile(self, vs: VirtualServerState) -> None:
        """Make the table's real servers for ``vs`` what its state wants, touching only differences."""
        desired = {_dest_key(d): d for d in vs.desired_dests()}
        for spec in vs.config.services:
            try:
                current = {_dest_key(d.spec): d.spec for d in self.backend.get_service(spec.key).dests}
            except IPVSError:
                continue
            for key, want in desired.items():
                have = current.get(key)
                try:
                    if have is None:
                        self.backend.add_dest(spec.key, want)
                        self.changes += 1
                    elif not same_dest(have, want):
                        self.backend.edit_dest(spec.key, want)
                        self.changes += 1
                except IPVSError as exc:
                    log.error("%s: cannot set real server %s:%d: %s", spec.key, want.addr, want.port, exc)
            for key, have in current.items():
                if key not in desired:
                    try:
                        self.backend.del_dest(spec.key, have.addr, have.port)
                        self.changes += 1
                    except IPVSError as exc:
                        log.error("%s: cannot remove real server %s: %s", spec.key, key, exc)

    # ---- life cycle ----------------------------------------------------------------------

    def _build(self, vs_config: VirtualServerConfig, previous: VirtualServerState | None) -> VirtualServerState:
        now = self.clock()
        fractions = [self.rng() for _ in range(8)]
        st = VirtualServerState.start(vs_config, now, fractions)
        if previous is not None:
            # keep what we know of servers and checkers whose configuration did not change
            old = {(s.config.dest.addr, s.config.dest.port): s for s in previous.servers}
            for i, s in enumerate(st.servers):
                prev = old.get((s.config.dest.addr, s.config.dest.port))
                if prev is not None and [c.config for c in prev.checkers] == [c.config for c in s.checkers]:
                    prev.config = s.config
                    st.servers[i] = prev
            st.quorum_up = previous.quorum_up
            st.update_quorum()
        return st

    async def start(self) -> None:
        for vs_config in self.config.virtual_servers:
            st = self._build(vs_config, None)
            self.states.append(st)
            for spec in vs_config.services:
                self._program_service(spec)
            self.reconcile(st)
            st.startup_lines()
            self._log_lines(st)
        # as keepalived's register_checkers_thread: one line per checker, after the table is set
        for st in self.states:
            local = not st.config.ha_suspend or _vips_are_local(st.config)
            for rs in st.servers:
                for chk in rs.checkers:
                    chk.suspended = not local
                    log.info("%s", wording.activating(rs.config.dest, st.config, local))
        self._spawn_all()

    @staticmethod
    def _log_lines(vs: VirtualServerState) -> None:
        lines, vs.lines = vs.lines, []
        for line in lines:
            log.info("%s", line)

    def _spawn_all(self) -> None:
        for st in self.states:
            for rs in st.servers:
                for chk in rs.checkers:
                    self._tasks.append(asyncio.create_task(self._run_checker(st, rs, chk)))

    async def _cancel_all(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:  # (asyncio.wait: a cancellation of this call itself is not swallowed)
            await asyncio.wait(self._tasks)
        self._tasks.clear()

    async def stop(self, remove_services: bool = False, announce: bool = False) -> None:
        """Stop checking; with ``omega`` set, run quorum_down and notify_down as keepalived does.
        ``announce`` logs keepalived's "Shutting down service ..." for every real server (it
        does so whenever it takes its services down one by one, not with lvs_flush_on_stop)."""
        await self._cancel_all()
        for st in self.states:
            if announce:
                for rs in st.servers:
                    log.info("%s", wording.shutting_down(rs.config.dest, st.config))
            if st.config.omega:
                for rs in st.servers:
                    if rs.alive and rs.config.notify_down:
                        self._notify([Notify(rs.config.notify_down, "shutdown")])
                if st.quorum_up and st.config.quorum_down:
                    self._notify([Notify(st.config.quorum_down, "shutdown")])
            if remove_services:
                for spec in st.config.services:
                    with contextlib.suppress(IPVSError):
                        self.backend.del_service(spec.key)
        for t in list(self._scripts):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SCRIPT_TIMEOUT):
                    await t

    async def reload(self, config: LVSConfig) -> None:
        """Apply a new configuration: only what differs changes in the table."""
        await self._cancel_all()
        previous = {spec.key: st for st in self.states for spec in st.config.services}
        new_keys = {spec.key for vs in config.virtual_servers for spec in vs.services}
        for old in self.states:
            if not any(spec.key in new_keys for spec in old.config.services):
                words = old.config.name.split()
                log.info("%s", f"Removing Virtual Server Group [{words[1]}]"
                         if len(words) > 1 and words[0] == "group"
                         else f"Removing Virtual Server {wording.vs_text(old.config)}")
        for key in list(previous):
            if key not in new_keys:
                with contextlib.suppress(IPVSError):
                    self.backend.del_service(key)
                    self.changes += 1
        self.states = []
        for vs_config in config.virtual_servers:
            prev = next((previous[s.key] for s in vs_config.services if s.key in previous), None)
            if prev is not None:
                kept = {_dest_key(rs.dest) for rs in vs_config.real_servers}
                for gone in prev.servers:
                    if _dest_key(gone.config.dest) not in kept:
                        log.info("service %s no longer exist", wording.rs_text(gone.config.dest, prev.config))
                        inhibited = "(inhibited) " if gone.config.inhibit_on_failure and not gone.alive else ""
                        log.info("Removing %sservice %s from VS %s", inhibited,
                                 wording.rs_text(gone.config.dest, prev.config), wording.vs_text(prev.config))
            st = self._build(vs_config, prev)
            self.states.append(st)
            for spec in vs_config.services:
                self._program_service(spec)
            self.reconcile(st)
        self.config = config
        self._spawn_all()

    # ---- checking ------------------------------------------------------------------------

    async def _run_checker(self, vs: VirtualServerState, rs: RealServerState, chk: CheckerState) -> None:
        while True:
            delay = chk.next_due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if vs.config.ha_suspend:
                local = _vips_are_local(vs.config)
                if local == chk.suspended:
                    chk.suspended = not local
                    log.info("%s", wording.activating(rs.config.dest, vs.config, local, change=True))
                if not local:
                    # ha_suspend: a backup director (no VIP) does not check; its view stays as it was
                    chk.next_due = self.clock() + chk.config.delay_loop
                    chk.last_result = "suspended: the VIP is not on this host (ha_suspend)"
                    continue
            try:
                res: CheckResult = await self.probe(chk.config)
            except Exception as exc:  # a probe bug must not kill the checker loop
                log.exception("checker %s crashed", chk.config.where)
                res = CheckResult(False, f"internal error: {exc!r}")
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # stop or reload cancelled this checker while its probe finished, and the probe
                # dropped the cancellation (as Python 3.11's asyncio.wait_for does; pylvs's own
                # probes time out with asyncio.timeout, which does not): without this the loop
                # would go on for ever (a stop that never ends)
                raise asyncio.CancelledError
            old_weight = rs.weight
            first = chk.last_run is None
            changed = chk.result(res.ok, self.clock(), res.detail, res.weight)
            self._log_result(vs, rs, chk, res, changed, first)
            if rs.weight != old_weight:
                log.info("%s", wording.weight_changed(rs.config.dest, vs.config, old_weight, rs.weight,
                                                      rs.alive))
            if changed or rs.weight != old_weight:
                notes = vs.on_checker_change(rs)
                self._log_lines(vs)
                self.reconcile(vs)
                self._notify(notes)
                self._fifo_lines(vs)

    @staticmethod
    def _log_result(vs: VirtualServerState, rs: RealServerState, chk: CheckerState,
                    res: CheckResult, changed: bool, first: bool) -> None:
        """The checker's own line, when keepalived writes one: a success that brings it up (or
        its first run), a failure that takes it down once its retries are spent (or a first
        run with no retries)."""
        kind = KINDS.get(chk.config.kind)
        if kind is None:
            return
        rs_name = wording.rs_text(rs.config.dest, vs.config)
        vs_name = wording.vs_text(vs.config)
        line: str | None = None
        if res.ok and (changed or first):
            line = kind.success_line(chk.config, rs_name, vs_name, res)
        elif not res.ok and (changed or (first and chk.config.retry == 0)):
            line = kind.failure_line(chk.config, rs_name, vs_name, chk.config.retry, res)
        if line:
            log.info("%s", line)

    def _fifo_lines(self, vs: VirtualServerState) -> None:
        """Hand what just changed to ``on_event`` (notify FIFOs, SMTP alerts)."""
        events, vs.events = vs.events, []
        if self.on_event is None or not vs.config.services:
            return
        for server, up in events:
            self.on_event(vs.config, server.config if server is not None else None, up)

    def _notify(self, notes: list[Notify]) -> None:
        for n in notes:
            log.info("running %r (%s)", n.command, n.reason)
            task = asyncio.create_task(self._run_script(n.command))
            self._scripts.add(task)
            task.add_done_callback(self._scripts.discard)

    @staticmethod
    async def _run_script(command: str) -> None:
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        try:
            async with asyncio.timeout(SCRIPT_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    # ---- reporting -----------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every virtual server, real server and checker with its state and last result."""
        out = []
        for st in self.states:
            out.append({
                "virtual_server": st.config.name,
                "quorum_up": st.quorum_up,
                "real_servers": [
                    {
                        "address": rs.config.name,
                        "alive": rs.alive,
                        "weight": rs.weight,
                        "checkers": [
                            {
                                "kind": c.config.kind, "where": c.config.where, "up": c.up,
                                "last_result": c.last_result, "last_run": c.last_run,
                                "failures": c.failures, "successes": c.successes,
                            }
                            for c in rs.checkers
                        ],
                    }
                    for rs in st.servers
                ],
            })
        return out
