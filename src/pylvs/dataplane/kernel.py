"""The ``kernel`` data plane: the director's table mirrored into the kernel's own IPVS.

What this is for: hosts whose kernel has IPVS. Packets never reach Python: the kernel forwards
them, and this plane only keeps the kernel's table equal to the director's, one netlink request
per table change (a weight change is one SET_DEST: live connections keep their real server, as
with ipvsadm, never a flush and reload). At start it adopts what the kernel already has:
services and real servers present only in the kernel join the director's table, timeouts are
taken from the kernel, and the director's own entries are added or edited in place; nothing is
deleted, so restarting the daemon does not cut traffic. Every two seconds it copies the kernel's
counters, rates and connection counts into the table, so ``pylvsadm -L --stats/--rate`` through
the daemon shows what the kernel forwarded, and ``-Lc`` lists the kernel's connections.

A request the kernel refuses (a scheduler it lacks, say) is logged, the kernel's entry for that
service is re-read, and the difference is kept in ``out_of_sync`` (and in ``describe()``), so
the daemon never believes in a kernel state that is not there.

The settings the kernel has too (``KERNEL_SYSCTLS``: the flood defences and ``sloppy_*``) are
the kernel's to apply, since it forwards: ``pylvs sysctl -w`` (and ``pylvsd --sysctl``) write
``/proc/sys/net/ipv4/vs/NAME`` as well, and at start the settings nobody gave are taken from the
kernel (as its timeouts are), so ``pylvs sysctl`` shows what the kernel does.

What this is not for: forwarding packets itself or deciding anything: the scheduler that picks
real servers here is the kernel's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from pylvs.core.api import IPVSError, ServiceStatus
from pylvs.core.compare import same_dest
from pylvs.core.model import (
    DestSpec,
    RealServer,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    VirtualService,
)
from pylvs.core.stats import Stats, StatsSnapshot
from pylvs.core.table import SysctlValue, TableListener
from pylvs.netlink import ipvs as nl

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Director

log = logging.getLogger(__name__)

# settings the kernel's IPVS has under /proc/sys/net/ipv4/vs with the same name and meaning
KERNEL_SYSCTLS = ("am_droprate", "amemthresh", "drop_entry", "drop_packet", "secure_tcp",
                  "sloppy_sctp", "sloppy_tcp")
PROC_DIR = "/proc/sys/net/ipv4/vs"


def _same_service(a: ServiceSpec, b: ServiceSpec) -> bool:
    strip = ~ServiceFlags.HASHED
    return (a.scheduler, a.flags & strip, a.timeout, a.pe_name) == (
        b.scheduler, b.flags & strip, b.timeout, b.pe_name,
    ) and (a.netmask == b.netmask or not a.flags & ServiceFlags.PERSISTENT)


def _copy_stats(dst: Stats, src: StatsSnapshot) -> None:
    dst.conns, dst.inpkts, dst.outpkts = src.conns, src.inpkts, src.outpkts
    dst.inbytes, dst.outbytes = src.inbytes, src.outbytes
    dst._cps, dst._inpps, dst._outpps = src.cps, src.inpps, src.outpps
    dst._inbps, dst._outbps = src.inbps, src.outbps


class _Mirror(TableListener):
    def __init__(self, plane: KernelDataPlane) -> None:
        self.plane = plane

    def service_added(self, svc: VirtualService) -> None:
        self.plane._send(nl.req_add_service(svc.spec()), svc.key)

    def service_changed(self, svc: VirtualService) -> None:
        self.plane._send(nl.req_edit_service(svc.spec()), svc.key)

    def service_deleted(self, svc: VirtualService) -> None:
        self.plane._send(nl.req_del_service(svc.key), svc.key)

    def dest_added(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane._send(nl.req_add_dest(svc.key, dest.spec()), svc.key)

    def dest_changed(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane._send(nl.req_edit_dest(svc.key, dest.spec()), svc.key)

    def sysctl_changed(self, values: dict[str, SysctlValue]) -> None:
        self.plane.write_sysctls(values)

    def dest_deleted(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane._send(nl.req_del_dest(svc.key, dest.addr, dest.port), svc.key)


class KernelDataPlane:
    """Keeps kernel IPVS equal to ``director.table``; the kernel does the forwarding."""

    name = "kernel"

    def __init__(
        self,
        director: Director,
        *,
        adopt: bool = True,
        flush_on_stop: bool = False,
        sync_interval: float = 2.0,
        kernel: nl.KernelIPVS | None = None,
        proc_dir: str = PROC_DIR,
    ) -> None:
        self.director = director
        self.adopt = adopt
        self.flush_on_stop = flush_on_stop
        self.sync_interval = sync_interval
        self.kernel = kernel
        self.requests_sent = 0
        self.refused: list[str] = []
        self.out_of_sync: dict[str, str] = {}
        self.adopted: list[str] = []
        self._mirror: _Mirror | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._last_conns: dict[int, int] = {}
        self._timeouts: Timeouts | None = None
        self.proc_dir = proc_dir
        self.sysctls_written: dict[str, int] = {}  # what this plane wrote to the kernel

    # ---- DataPlane -------------------------------------------------------------------------

    async def start(self) -> None:
        self.start_sync()
        if self.sync_interval > 0:
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop())

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            try:
                await self._sync_task
            except asyncio.CancelledError:
                pass
            self._sync_task = None
        self.stop_sync()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests_sent": self.requests_sent,
            "adopted": list(self.adopted),
            "refused": self.refused[-20:],
            "out_of_sync": dict(self.out_of_sync),
            "sysctls_written": dict(self.sysctls_written),
        }

    # ---- synchronous core (usable without an event loop) -----------------------------------

    def start_sync(self) -> None:
        """Open the kernel, adopt its table, push ours, then follow table changes."""
        if self._mirror is not None:
            return
        if self.kernel is None:
            self.kernel = nl.KernelIPVS()
        table = self.director.table
        kernel_now = {s.spec.key: s for s in self.kernel.get_services()}
        requests: list[tuple[tuple[int, bytes], ServiceKey]] = []
        if self.adopt:
            table.set_timeouts(self.kernel.get_timeouts())
            self.director._load_timeouts()
            for key, found in kernel_now.items():
                if table.lookup(key) is None:
                    self._adopt_service(found)
        else:
            self.kernel.set_timeouts(table.timeouts)
        self._timeouts = table.timeouts
        self._start_sysctls()
        for svc in list(table.services()):
            ks = kernel_now.get(svc.key)
            if ks is None:
                requests.append((nl.req_add_service(svc.spec()), svc.key))
                requests.extend(
                    (nl.req_add_dest(svc.key, d.spec()), svc.key)
                    for d in reversed(svc.destinations)
                )
                continue
            if not _same_service(svc.spec(), ks.spec):
                requests.append((nl.req_edit_service(svc.spec()), svc.key))
            have = {(d.spec.addr, d.spec.port): d.spec for d in ks.dests}
            for d in reversed(svc.destinations):
                k = have.get((d.addr, d.port))
                if k is None:
                    requests.append((nl.req_add_dest(svc.key, d.spec()), svc.key))
                elif not same_dest(d.spec(), k):
                    requests.append((nl.req_edit_dest(svc.key, d.spec()), svc.key))
            if self.adopt:
                for (addr, port), spec in have.items():
                    if svc.find_dest(addr, port) is None:
                        self._adopt_dest(svc.key, spec)
        if requests:
            failures = self.kernel.pipeline([r for r, _ in requests])
            self.requests_sent += len(requests)
            for f in failures:
                self._refused(requests[f.index][1], f.errno)
        self._mirror = _Mirror(self)
        table.listeners.append(self._mirror)
        table.connection_provider = self.kernel.get_connections

    # ---- the settings the kernel has too ------------------------------------------------------

    def _read_sysctl(self, name: str) -> int | None:
        try:
            with open(os.path.join(self.proc_dir, name)) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None  # a kernel without that setting (or without IPVS loaded)

    def _start_sysctls(self) -> None:
        """Settings given before the start (``pylvsd --sysctl``) go to the kernel; with
        ``adopt`` the others are taken from it, as the kernel's timeouts are."""
        table = self.director.table
        if table.sysctl_provider is None:
            return
        asked = table.sysctl_written
        self.write_sysctls(asked)  # (write_sysctls keeps to the names the kernel has)
        mine = table.get_sysctl()
        if not self.adopt:
            self.write_sysctls({n: v for n, v in mine.items() if n not in asked})
            return
        theirs = {}
        for name in KERNEL_SYSCTLS:
            value = None if name in asked else self._read_sysctl(name)
            if value is not None and value != mine.get(name):
                theirs[name] = value
        for name, value in theirs.items():
            try:  # past the table, so these count as the kernel's, not as asked for
                table.sysctl_provider.set_sysctl({name: value})
            except IPVSError as exc:
                log.warning("kernel setting %s=%s not taken: %s", name, value, exc)
        if theirs:
            log.info("settings taken from the kernel: %s",
                     " ".join(f"{k}={v}" for k, v in sorted(theirs.items())))

    def write_sysctls(self, values: dict[str, SysctlValue]) -> None:
        """Write the kernel's copy of each setting it has (``KERNEL_SYSCTLS``); one it
        refuses is logged and kept in ``out_of_sync``."""
        for name, value in values.items():
            if name not in KERNEL_SYSCTLS or isinstance(value, list):
                continue
            path = os.path.join(self.proc_dir, name)
            try:
                with open(path, "w") as f:
                    f.write(f"{value}\n")
            except OSError as exc:
                reason = exc.strerror or str(exc)
                log.warning("kernel setting %s=%s not written: %s", name, value, reason)
                self.out_of_sync[f"sysctl {name}"] = reason
                continue
            self.sysctls_written[name] = value
            self.out_of_sync.pop(f"sysctl {name}", None)

    def stop_sync(self) -> None:
        table = self.director.table
        if self._mirror is not None:
            table.listeners.remove(self._mirror)
            self._mirror = None
        if table.connection_provider is not None and self.kernel is not None and (
            table.connection_provider == self.kernel.get_connections
        ):
            table.connection_provider = self.director.connection_entries
        if self.kernel is not None:
            if self.flush_on_stop:
                self.kernel.flush()
            self.kernel.close()
            self.kernel = None

    def _adopt_service(self, ks: ServiceStatus) -> None:
        table = self.director.table
        muted, table.listeners = table.listeners, [x for x in table.listeners
                                                    if x is not self._mirror]
        try:
            spec = ks.spec
            table.add_service(ServiceSpec(spec.key, spec.scheduler,
                                          spec.flags & ~ServiceFlags.HASHED, spec.timeout,
                                          spec.netmask, spec.pe_name))
            for d in reversed(ks.dests):
                table.add_dest(spec.key, d.spec)
            self.adopted.append(str(spec.key))
        except IPVSError as e:
            # The kernel holds something our table refuses (a scheduler we lack): say so.
            self.out_of_sync[str(ks.spec.key)] = f"kept in the kernel only: {e}"
        finally:
            table.listeners = muted

    def _adopt_dest(self, key: ServiceKey, spec: DestSpec) -> None:
        table = self.director.table
        muted, table.listeners = table.listeners, [x for x in table.listeners
                                                    if x is not self._mirror]
        try:
            table.add_dest(key, spec)
            self.adopted.append(f"{key} -> {spec.addr}:{spec.port}")
        except IPVSError as e:
            self.out_of_sync[f"{key} -> {spec.addr}:{spec.port}"] = f"kernel only: {e}"
        finally:
            table.listeners = muted

    def _send(self, request: tuple[int, bytes], key: ServiceKey) -> None:
        assert self.kernel is not None
        self.requests_sent += 1
        failures = self.kernel.pipeline([request])
        if failures:
            self._refused(key, failures[0].errno)
        elif str(key) in self.out_of_sync:
            self._recheck(key)

    def _refused(self, key: ServiceKey, code: int) -> None:
        msg = f"kernel refused a change to {key}: {IPVSError(code)}"
        log.error("%s", msg)
        self.refused.append(msg)
        self._recheck(key)

    def _recheck(self, key: ServiceKey) -> None:
        """Compare the table's and the kernel's idea of one service; remember any difference."""
        assert self.kernel is not None
        name = str(key)
        svc = self.director.table.lookup(key)
        try:
            ks: ServiceStatus | None = self.kernel.get_service(key)
        except IPVSError:
            ks = None
        diff = ""
        if svc is None and ks is not None:
            diff = "in the kernel, deleted from the table"
        elif svc is not None and ks is None:
            diff = "in the table, missing from the kernel"
        elif svc is not None and ks is not None:
            if not _same_service(svc.spec(), ks.spec):
                diff = f"kernel has {ks.spec.scheduler} flags={int(ks.spec.flags)} " \
                       f"timeout={ks.spec.timeout}; table has {svc.scheduler_name}"
            else:
                theirs = {(d.spec.addr, d.spec.port): d.spec for d in ks.dests}
                ours = {(d.addr, d.port): d.spec() for d in svc.destinations}
                missing = sorted(f"{a}:{p}" for a, p in ours.keys() - theirs.keys())
                extra = sorted(f"{a}:{p}" for a, p in theirs.keys() - ours.keys())
                changed = sorted(f"{a}:{p}" for (a, p) in ours.keys() & theirs.keys()
                                 if not same_dest(ours[(a, p)], theirs[(a, p)]))
                parts = []
                if missing:
                    parts.append("missing from the kernel: " + ", ".join(missing))
                if extra:
                    parts.append("only in the kernel: " + ", ".join(extra))
                if changed:
                    parts.append("different in the kernel: " + ", ".join(changed))
                diff = "; ".join(parts)
        if diff:
            self.out_of_sync[name] = diff
            log.error("%s out of sync with the kernel: %s", name, diff)
        else:
            self.out_of_sync.pop(name, None)

    def sync_counters(self) -> None:
        """Copy the kernel's counters, rates and connection counts into the table (and push
        changed timeouts the other way).

        A counter lower than what was copied last time means someone zeroed it in the table
        (``pylvsadm -Z`` through the daemon): the kernel's is zeroed too.
        """
        if self.kernel is None:
            return
        table = self.director.table
        # Timeouts have no listener hook: ``pylvsadm --set`` through the daemon shows up here.
        if table.timeouts != self._timeouts:
            try:
                self.kernel.set_timeouts(table.timeouts)
                self._timeouts = table.timeouts
            except IPVSError as e:
                self.refused.append(f"kernel refused timeouts {table.timeouts}: {e}")
        zeroed: list[ServiceKey] = []
        for svc in table.services():
            last = self._last_conns.get(id(svc.stats))
            if last is not None and svc.stats.conns < last:
                zeroed.append(svc.key)
        for key in zeroed:
            try:
                self.kernel.zero(key)
            except IPVSError:
                pass
        for ks in self.kernel.get_services():
            live = table.lookup(ks.spec.key)
            if live is None:
                continue
            _copy_stats(live.stats, ks.stats)
            self._last_conns[id(live.stats)] = ks.stats.conns
            for kd in ks.dests:
                rs = live.find_dest(kd.spec.addr, kd.spec.port)
                if rs is None:
                    continue
                _copy_stats(rs.stats, kd.stats)
                rs.activeconns = kd.activeconns
                rs.inactconns = kd.inactconns
                rs.persistconns = kd.persistconns

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                self.sync_counters()
            except (IPVSError, OSError) as e:
                log.warning("reading kernel counters failed: %s", e)
