"""What moves an instance's priority or puts it in FAULT: vrrp_script (track_script),
track_process, track_file and track_interface, under keepalived's one weight rule.

Why a module of its own: these are the daemon's inputs from the host (scripts it runs, /proc,
files, link state), polled or run on their own timers; the instances only ask "what is this
instance's offset and which faults does it carry now" (:meth:`Tracking.evaluate`) and are told
when to ask again. Not for: the priority arithmetic inside the router (:mod:`pylvs.vrrp.router`).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

from pylvs.config import keepalived as K
from pylvs.trackers.trackfile import FAULT, TrackFileWatcher
from pylvs.trackers.trackprocess import ProcessTracker, scan_proc
from pylvs.vrrp import netio
from pylvs.vrrp.plan import InstancePlan

log = logging.getLogger("pylvs.vrrp")


@dataclass(slots=True)
class ScriptState:
    script: K.VRRPScript
    ok: bool = True
    streak: int = 0
    task: asyncio.Task[None] | None = None


class Tracking:
    """The tracked scripts, processes and files of one configuration.

    ``on_change`` is called when a script's result flips; :meth:`poll` (every half second)
    re-reads files and processes and then calls ``on_tick``, after which the instances
    re-evaluate (interfaces are read at that moment)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.scripts: dict[str, ScriptState] = {}
        self.track_files = TrackFileWatcher()
        self.processes = ProcessTracker()

    def start(self, cfg: K.KeepalivedConfig) -> None:
        """Start tracking what ``cfg``'s instances and sync groups use (and nothing else)."""
        files = {r.name for i in cfg.vrrp_instances for r in i.track_file}
        files |= {r.name for g in cfg.vrrp_sync_groups for r in g.track_file}
        self.track_files = TrackFileWatcher.start(cfg.track_files, files)
        procs = {r.name for i in cfg.vrrp_instances for r in i.track_process}
        procs |= {r.name for g in cfg.vrrp_sync_groups for r in g.track_process}
        self.processes = ProcessTracker.start(cfg.track_processes, procs,
                                              scan_proc() if procs else [], time.monotonic())
        used = {ts.name for i in cfg.vrrp_instances for ts in i.track_script}
        used |= {ts.name for g in cfg.vrrp_sync_groups for ts in g.track_script}
        for sc in cfg.vrrp_scripts:
            if sc.name in used:
                # keepalived: a script counts as succeeding until it has failed `fall` times
                st = ScriptState(sc, ok=not sc.init_fail)
                st.task = asyncio.create_task(self._run_script(st))
                self.scripts[sc.name] = st

    def stop(self) -> None:
        """Stop every script's timer (a reload then starts the new file's)."""
        for s in self.scripts.values():
            if s.task:
                s.task.cancel()
        self.scripts.clear()

    async def _run_script(self, st: ScriptState) -> None:
        sc = st.script
        timeout = sc.timeout or sc.interval
        while True:
            ok = False
            try:
                proc = await asyncio.create_subprocess_exec(
                    *shlex.split(sc.script), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                try:
                    async with asyncio.timeout(timeout):
                        ok = await proc.wait() == 0
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            except OSError:
                ok = False
            if ok == st.ok:
                st.streak = 0
            else:
                st.streak += 1
                if st.streak >= (sc.rise if ok else sc.fall):
                    st.ok = ok
                    st.streak = 0
                    log.info("VRRP_Script(%s) %s", sc.name, "succeeded" if ok else "failed")
                    self.on_change()
            await asyncio.sleep(sc.interval)

    async def poll(self, on_tick: Callable[[], None]) -> None:
        """Files and processes are read every half second; interfaces when evaluated."""
        while True:
            await asyncio.sleep(0.5)
            for name in self.track_files.poll():
                log.info("Track file %s now %d", name, self.track_files.values()[name])
            if self.processes.states:
                for name in self.processes.update(scan_proc(), time.monotonic()):
                    log.info("Track process %s now %s", name,
                             "up" if self.processes.up(name) else "down")
            on_tick()

    def evaluate(self, plan: InstancePlan, extra_fault: str | None = None) -> tuple[int, set[str]]:
        """The instance's priority offset and the faults it carries now (``extra_fault``: one
        from outside, e.g. the arbitrator's)."""
        inst = plan.instance
        offset = 0
        faults: set[str] = set()
        # (what, weight, fine now) of every script, process and interface tracked, under
        # keepalived's one rule: weight 0 puts the instance in FAULT while it is not fine; a
        # positive weight is added while it is fine, a negative one while it is not
        checks: list[tuple[str, int, bool]] = []
        for ts in (*inst.track_script, *plan.group_track_script):
            st = self.scripts.get(ts.name)
            if st is not None:
                weight = st.script.weight if ts.weight is None else ts.weight
                checks.append((f"script {ts.name}", weight, st.ok))
        for ref in (*inst.track_process, *plan.group_track_process):
            up = self.processes.up(ref.name)
            if up is None:
                continue
            if ref.weight is None:
                weight, reverse = self.processes.weight(ref.name), self.processes.reverse(ref.name)
            else:
                weight, reverse = ref.weight, ref.reverse
            checks.append((f"process {ref.name}", weight, up != reverse))
        track = [*inst.track_interface, *plan.group_track_interface]
        if not inst.dont_track_primary:
            track.append(K.TrackInterface(plan.ifname, 0))
        for ti in track:
            checks.append((f"interface {ti.name} down", ti.weight, netio.oper_up(ti.name)))
        for what, weight, fine in checks:
            if weight == 0:
                if not fine:
                    faults.add(what)
            elif (weight > 0) == fine:
                offset += weight
        for ref in (*inst.track_file, *plan.group_track_file):
            effect = self.track_files.status(ref)
            if effect is FAULT:
                faults.add(f"track_file {ref.name}")
            else:
                offset += effect
        if extra_fault:
            faults.add(extra_fault)
        return offset, faults
