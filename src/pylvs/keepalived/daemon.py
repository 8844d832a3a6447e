"""The asyncio driver of ``pylvs keepalived``: builds one :class:`VRRPRouter` per vrrp_instance
from keepalived.conf, feeds it packets and timers, and carries out its actions (sockets, VIPs,
gratuitous ARP, notify scripts), plus vrrp_script / track_interface tracking, the arbitrator
check and split-brain evidence from ARP. The file's virtual servers run beside it in the same
process (``pylvs.keepalived.lvs_runtime``), as in keepalived.

Signals as keepalived: SIGHUP reloads atomically (a bad file keeps the running configuration),
SIGTERM resigns mastership (priority 0) and removes the VIPs. Not for: protocol decisions, which
all live in :mod:`pylvs.vrrp.router`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import shlex
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pylvs.config import keepalived as K
from pylvs.config.grammar import ConfigError
from pylvs.config.lvs import RealServerConfig, VirtualServerConfig
from pylvs.keepalived.notify_fifo import Fifos, NotifyFifo, dest_text, service_text
from pylvs.keepalived.smtp_alert import SmtpAlerter
from pylvs.trackers.trackfile import FAULT, TrackFileWatcher
from pylvs.trackers.trackprocess import ProcessTracker, scan_proc
from pylvs.vrrp import netio
from pylvs.vrrp import packet as pkt
from pylvs.vrrp.router import (
    Action,
    AddVIPs,
    Dispatcher,
    Log,
    Notify,
    Received,
    RemoveVIPs,
    RouterConfig,
    RxLowerPriority,
    SendAdvert,
    SendGARP,
    SplitBrain,
    State,
    VRRPRouter,
)

if TYPE_CHECKING:
    from pylvs.config.lvs import LVSConfig
    from pylvs.keepalived.lvs_runtime import LVSRuntime

log = logging.getLogger("pylvs.vrrp")
T = TypeVar("T")


class HostError(Exception):
    """The configuration cannot run on this host (missing interface, no source address)."""


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """Everything needed to run one vrrp_instance, resolved against the host."""

    instance: K.VRRPInstance
    router: RouterConfig
    ifname: str
    vips: tuple[netio.VIPSpec, ...]
    mcast_group: bytes | None
    notify: tuple[str | None, str | None, str | None, str | None, str | None]  # notify, master, backup, fault, stop
    group_notify: tuple[str, str | None, str | None, str | None, str | None, str | None] | None
    group_track_script: tuple[K.TrackScript, ...] = ()  # a sync group's tracking applies to every member
    group_track_interface: tuple[K.TrackInterface, ...] = ()
    group_track_file: tuple[K.TrackFileRef, ...] = ()
    group_track_process: tuple[K.TrackFileRef, ...] = ()
    vmac: str | None = None  # use_vmac: the macvlan the VIPs live on (and adverts leave from)


def plan_instances(cfg: K.KeepalivedConfig) -> list[InstancePlan]:
    g = cfg.global_defs
    groups = {n: sg for sg in cfg.vrrp_sync_groups for n in sg.group}
    plans = []
    for inst in cfg.vrrp_instances:
        if not inst.interface:
            raise HostError(f"{inst.file}:{inst.line}: ({inst.name}) no interface (pylvs needs one)")
        try:
            netio.ifindex(inst.interface)
        except OSError as exc:
            raise HostError(f"{inst.file}:{inst.line}: ({inst.name}) interface {inst.interface} doesn't exist") from exc
        fam = inst.family
        src = inst.unicast_src_ip or inst.mcast_src_ip or netio.primary_address(inst.interface, fam)
        if not src:
            raise HostError(f"{inst.file}:{inst.line}: ({inst.name}) no IPv{fam} address on {inst.interface}")
        version = inst.effective_version(g)
        auth = pkt.AUTH_NONE
        if version == 2 and inst.auth_type == "PASS" and inst.auth_pass:
            auth = pkt.AUTH_PASS
        rc = RouterConfig(
            name=inst.name, vrid=inst.virtual_router_id, priority=inst.priority,
            primary_address=ipaddress.ip_address(src).packed,
            vips=tuple(v.address for v in inst.virtual_ipaddress),
            version=version, adver_int=inst.advert_int if version == 3 else max(1.0, round(inst.advert_int)),
            initial_state=State.MASTER if inst.state == "MASTER" else State.BACKUP,
            preempt=not inst.nopreempt, preempt_delay=inst.preempt_delay,
            auth_type=auth, auth_pass=(inst.auth_pass or "").encode()[:8],
            unicast_peers=tuple(ipaddress.ip_address(p).packed for p in inst.unicast_peer),
            garp_master_delay=_pick(inst.garp_master_delay, g.vrrp_garp_master_delay),
            garp_master_repeat=_pick(inst.garp_master_repeat, g.vrrp_garp_master_repeat),
            garp_master_refresh=_pick(inst.garp_master_refresh, g.vrrp_garp_master_refresh),
            garp_master_refresh_repeat=_pick(inst.garp_master_refresh_repeat, g.vrrp_garp_master_refresh_repeat),
            garp_lower_prio_repeat=_pick(inst.garp_lower_prio_repeat, g.vrrp_garp_lower_prio_repeat),
            lower_prio_no_advert=_pick(inst.lower_prio_no_advert, g.vrrp_lower_prio_no_advert),
            higher_prio_send_advert=_pick(inst.higher_prio_send_advert, g.vrrp_higher_prio_send_advert),
            check_vips=not (g.vrrp_skip_check_adv_addr or inst.skip_check_adv_addr),
        )
        vmac = inst.vmac if fam == 4 else None
        if inst.use_vmac and fam != 4:
            log.warning("%s:%d: (%s) use_vmac is supported for IPv4 only; the VIPs go on %s",
                        inst.file, inst.line, inst.name, inst.interface)
        vips = []
        for v in inst.virtual_ipaddress:
            iface = ipaddress.ip_interface(v.address)
            dev = v.dev or vmac or inst.interface
            try:
                if dev != vmac:  # the VMAC is made when the instance starts
                    netio.ifindex(dev)
            except OSError as exc:
                raise HostError(f"{inst.file}:{v.line}: ({inst.name}) VIP device {dev} doesn't exist") from exc
            vips.append(netio.VIPSpec(str(iface.ip), iface.network.prefixlen, dev, v.label, v.broadcast, v.scope))
        mcast = None
        if not inst.unicast_peer:
            mcast = ipaddress.ip_address(g.vrrp_mcast_group4 if fam == 4 else g.vrrp_mcast_group6).packed
            rc = dataclasses.replace(rc, mcast_group=mcast)
        sg = groups.get(inst.name)
        gn = (sg.name, sg.notify, sg.notify_master, sg.notify_backup, sg.notify_fault, sg.notify_stop) if sg else None
        plans.append(InstancePlan(inst, rc, inst.interface, tuple(vips), mcast,
                                  (inst.notify, inst.notify_master, inst.notify_backup, inst.notify_fault, inst.notify_stop), gn,
                                  sg.track_script if sg else (), sg.track_interface if sg else (),
                                  sg.track_file if sg else (), sg.track_process if sg else (), vmac))
    return plans


def _pick(v: T | None, default: T) -> T:
    """An instance setting, else the global_defs one (keepalived's inheritance)."""
    return default if v is None else v


@dataclass(slots=True)
class ScriptState:
    script: K.VRRPScript
    ok: bool = True
    streak: int = 0
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class Runtime:
    plan: InstancePlan
    router: VRRPRouter
    sock: netio.VRRPSocket
    link: netio.LinkSocket | None
    timer: asyncio.TimerHandle | None = None
    silent_probe: tuple[bytes, float] | None = None
    silent_peer: str | None = None  # last master that went silent yet answered a probe


class KeepalivedDaemon:
    def __init__(self, path: str, config_id: str | None = None, state_file: str | None = None,
                 arbitrator: str | None = None, arbitrator_interval: float = 1.0, arbitrator_fall: int = 3,
                 arbitrator_rise: int = 2, notify_split_brain: str | None = None,
                 split_brain_probe: bool = True, metrics_port: int | None = None,
                 control_socket: str | None = None, dataplane: str = "proxy") -> None:
        self.path = path
        self.config_id = config_id
        self.state_file = state_file
        self.arbitrator = arbitrator
        self.arbitrator_interval = arbitrator_interval
        self.arbitrator_fall = arbitrator_fall
        self.arbitrator_rise = arbitrator_rise
        self.notify_split_brain = notify_split_brain
        self.split_brain_probe = split_brain_probe
        self.metrics_port = metrics_port
        self.control_socket = control_socket
        self.dataplane = dataplane
        self.lvs: LVSRuntime | None = None
        self.cfg: K.KeepalivedConfig | None = None
        self.runtimes: dict[str, Runtime] = {}
        self.sockets: dict[tuple[str, int], tuple[netio.VRRPSocket, Dispatcher]] = {}
        self.links: dict[str, netio.LinkSocket] = {}
        self.scripts: dict[str, ScriptState] = {}
        self.fifos = Fifos()
        self.mailer: SmtpAlerter | None = None
        self._mailed: dict[str, State] = {}  # the last state each instance/group was mailed about
        self.track_files = TrackFileWatcher()
        self.processes = ProcessTracker()
        self.vmacs: dict[str, netio.VMAC] = {}
        self.addrs = netio.AddressManager()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Event | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.arbitrator_ok = True
        self._children: set[asyncio.Task[None]] = set()
        self._metrics = _Metrics(metrics_port)
        self._last_state = ""
        self._group_state: dict[str, State] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        try:
            cfg, lvs = K.load_full(self.path, self.config_id)
        except ConfigError as exc:
            for d in exc.diagnostics:
                (log.error if d.severity == "error" else log.warning)("%s", d)
            return 1
        for d in [*cfg.diagnostics, *lvs.diagnostics]:
            log.warning("%s", d)
        try:
            plans = plan_instances(cfg)
        except HostError as exc:
            log.error("%s", exc)
            return 1
        self.cfg = cfg
        self.fifos = _fifos(cfg.global_defs)
        self.fifos.open()
        self.mailer = SmtpAlerter.from_config(cfg.global_defs)
        if lvs.virtual_servers and not await self._start_lvs(lvs):
            return 1
        _process_priority(cfg.global_defs)
        self._start_scripts(cfg)
        # Startup event (RFC 3768 6.4.1) at the process's own start, not after Python has loaded:
        # the wait for Master_Down_Interval then ends when a C daemon's would. At most half an
        # advertisement interval is taken back, so a backup still hears the master's adverts
        # (which restart its timer) well before the interval runs out.
        age = process_age()
        for p in plans:
            back = min(age, 0.5 * p.router.adver_int)
            self._start_instance(p, started=self.loop.time() - back)
        self.loop.add_signal_handler(signal.SIGHUP, self._reload)
        self.loop.add_signal_handler(signal.SIGTERM, self.done.set)
        self.loop.add_signal_handler(signal.SIGINT, self.done.set)
        self.loop.add_signal_handler(signal.SIGUSR1, lambda: self.write_state())
        self.tasks.append(asyncio.create_task(self._track_interfaces()))
        if self.arbitrator:
            self.tasks.append(asyncio.create_task(self._arbitrate()))
        control = None
        if self.control_socket and self.lvs is None:
            # VRRP only: the control API every pylvs daemon speaks, with an empty table
            # (with virtual servers, the LVS half serves the socket and vrrp_status is added there)
            from pylvs.control.server import ControlServer
            from pylvs.core.table import IPVSTable

            control = ControlServer(IPVSTable(), self.control_socket, extra=self._control_extra())
            try:
                await control.start()
            except Exception as exc:
                log.error("control socket %s: %s", self.control_socket, exc)
                control = None
        log.info("Startup complete")
        await self.done.wait()
        if control is not None:
            await control.stop()
        self.shutdown()  # VRRP first: resign and drop the VIPs before the services go
        if self._children:  # notify_stop scripts run to completion before we exit
            await asyncio.wait(set(self._children), timeout=10)
        if self.lvs is not None:
            await self.lvs.stop()
        return 0

    # -- the virtual_server half (pylvs.keepalived.lvs_runtime) --------------------------------

    def _control_extra(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"vrrp_status": lambda _args: self.status()}

    async def _start_lvs(self, lvs: LVSConfig) -> bool:
        """Program and check the virtual servers, served on the control socket with VRRP's state."""
        from pylvs.control.client import default_socket_path
        from pylvs.keepalived.lvs_runtime import LVSRuntime

        rt = LVSRuntime(lvs, self.control_socket or default_socket_path(), dataplane=self.dataplane,
                        global_defs=self.cfg.global_defs if self.cfg is not None else None)
        try:
            await rt.start()
        except Exception as exc:
            log.error("virtual servers cannot start: %s", exc)
            return False
        server = rt.director.server if rt.director is not None else rt.server
        if server is not None:
            server.extra.update(self._control_extra())
        rt.health.on_event = self._lvs_event
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

    def shutdown(self) -> None:
        for name in list(self.runtimes):
            self._stop_instance(name)
        for t in self.tasks:
            t.cancel()
        for s in self.scripts.values():
            if s.task:
                s.task.cancel()
        self.write_state()
        self.addrs.close()
        self.fifos.close()
        log.info("Stopped")

    def _reload(self) -> None:
        """SIGHUP: parse and resolve the new file first; only a fully good one replaces the old."""
        log.info("Reloading")
        try:
            cfg, lvs = K.load_full(self.path, self.config_id)
            plans = plan_instances(cfg)
        except ConfigError as exc:
            for d in exc.diagnostics:
                if d.severity == "error":
                    log.error("reload rejected, keeping the running configuration: %s", d)
            return
        except HostError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            return
        for d in [*cfg.diagnostics, *lvs.diagnostics]:
            log.warning("%s", d)
        task = asyncio.ensure_future(self._reload_lvs(lvs))
        self._children.add(task)
        task.add_done_callback(self._children.discard)
        new = {p.instance.name: p for p in plans}
        assert self.loop is not None
        for name, rt in list(self.runtimes.items()):
            p = new.get(name)
            if p is None or p.ifname != rt.plan.ifname or not rt.router.same_group(p.router) \
                    or p.vmac != rt.plan.vmac:
                self._stop_instance(name)  # gone, or another group on the wire: resign and restart
                continue
            del new[name]
            old_plan = rt.plan
            rt.plan = p
            old_i, new_i = old_plan.instance, p.instance
            if rt.router.state is State.MASTER and (old_i.virtual_routes, old_i.virtual_rules) != (
                    new_i.virtual_routes, new_i.virtual_rules):
                for route in old_i.virtual_routes:
                    if route not in new_i.virtual_routes:
                        with contextlib.suppress(Exception):
                            self.addrs.remove_route(route)
                for rule in old_i.virtual_rules:
                    if rule not in new_i.virtual_rules:
                        with contextlib.suppress(Exception):
                            self.addrs.remove_rule(rule)
                self._virtual_routes(rt, State.MASTER)
            if p.router == old_plan.router and p.vips == old_plan.vips:
                continue  # scripts/notify may change without disturbing anything
            acts = rt.router.reconfigure(p.router, self.loop.time())
            if rt.router.state is State.MASTER:
                # VIPs whose options changed (label, device) are put back with the new ones
                for v in old_plan.vips:
                    if v not in p.vips:
                        with contextlib.suppress(Exception):
                            self.addrs.remove(v)
                acts.insert(0, AddVIPs(tuple(f"{v.address}/{v.prefixlen}" for v in p.vips if v not in old_plan.vips)))
            self._apply(rt, acts)
        for s in self.scripts.values():
            if s.task:
                s.task.cancel()
        self.scripts.clear()
        self.cfg = cfg
        self._start_scripts(cfg)
        for p in new.values():
            self._start_instance(p)
        self.write_state()
        log.info("Reload complete")

    def _start_instance(self, plan: InstancePlan, started: float | None = None) -> None:
        assert self.loop is not None
        if plan.vmac is not None:
            vmac = netio.VMAC(plan.vmac, plan.ifname, netio.vmac_address(plan.router.vrid))
            vmac.create()
            self.vmacs[plan.instance.name] = vmac
        key = (plan.ifname, plan.router.family)
        entry = self.sockets.get(key)
        if entry is None:
            sock = netio.VRRPSocket(plan.ifname, plan.router.family, plan.mcast_group)
            entry = (sock, Dispatcher())
            self.sockets[key] = entry
            self.loop.add_reader(sock.fileno(), self._on_vrrp_readable, key)
        elif plan.mcast_group and plan.router.family == 4:
            with contextlib.suppress(OSError):
                mreqn = plan.mcast_group + b"\0\0\0\0" + struct.pack("@i", entry[0].ifindex)
                entry[0].rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock, disp = entry
        link = None
        if plan.router.family == 4:
            link = self.links.get(plan.ifname)
            if link is None:
                try:
                    link = netio.LinkSocket(plan.ifname)
                except OSError as exc:
                    log.warning("(%s) no ARP socket on %s: %s", plan.instance.name, plan.ifname, exc)
                else:
                    self.links[plan.ifname] = link
                    self.loop.add_reader(link.fileno(), self._on_arp_readable, plan.ifname)
        router = VRRPRouter(plan.router)
        if plan.group_notify is not None:
            router.sync_gate = self._sync_gate_for(plan.group_notify[0])
        rt = Runtime(plan, router, sock, link)
        disp.routers[plan.router.vrid] = router
        if plan.vmac is not None:
            # Adverts sent from another router's VMAC carry our VMAC's MAC as their source, and
            # the kernel hands such multicast frames to our macvlan only: listen there too.
            vkey = (plan.vmac, plan.router.family)
            if vkey not in self.sockets:
                vsock = netio.VRRPSocket(plan.vmac, plan.router.family, plan.mcast_group)
                self.sockets[vkey] = (vsock, Dispatcher())
                self.loop.add_reader(vsock.fileno(), self._on_vrrp_readable, vkey)
            self.sockets[vkey][1].routers[plan.router.vrid] = router
        self.runtimes[plan.instance.name] = rt
        self._update_tracking(rt, self.loop.time(), initial=True)
        self._apply(rt, router.start(self.loop.time() if started is None else started))

    def _stop_instance(self, name: str) -> None:
        assert self.loop is not None
        rt = self.runtimes.pop(name)
        if rt.timer:
            rt.timer.cancel()
        self._apply(rt, rt.router.stop(self.loop.time()))
        keys = [(rt.plan.ifname, rt.plan.router.family)]
        if rt.plan.vmac is not None:
            keys.append((rt.plan.vmac, rt.plan.router.family))
        for key in keys:
            entry = self.sockets.get(key)
            if entry is None:
                continue
            sock, disp = entry
            disp.routers.pop(rt.plan.router.vrid, None)
            if not disp.routers:
                self.loop.remove_reader(sock.fileno())
                sock.close()
                del self.sockets[key]
        if rt.link and not any(r.link is rt.link for r in self.runtimes.values()):
            self.loop.remove_reader(rt.link.fileno())
            rt.link.close()
            self.links.pop(rt.plan.ifname, None)
        vmac = self.vmacs.pop(name, None)
        if vmac is not None:
            link = self.links.pop(vmac.name, None)
            if link is not None:
                link.close()
            try:
                vmac.delete()
            except Exception as exc:
                log.warning("(%s) VMAC %s not removed: %s", name, vmac.name, exc)

    # -- events ----------------------------------------------------------------------------

    def _on_vrrp_readable(self, key: tuple[str, int]) -> None:
        assert self.loop is not None
        sock, disp = self.sockets[key]
        for _ in range(64):
            try:
                got = sock.recv()
            except pkt.DecodeError:
                disp.malformed += 1
                continue
            except OSError as exc:
                log.warning("VRRP receive on %s: %s", sock.ifname, exc)
                return
            if got is None:
                return
            payload, src, dst, ttl = got
            now = self.loop.time()
            for router, actions in disp.receive(Received(payload, src, dst, ttl), now):
                rt = self.runtimes.get(router.config.name)
                if rt is not None:
                    self._apply(rt, actions)

    def _on_arp_readable(self, ifname: str) -> None:
        assert self.loop is not None
        link = self.links.get(ifname)
        if link is None:
            return
        for _ in range(64):
            try:
                seen = link.recv()
            except OSError:
                return
            if seen is None:
                return
            if seen.sender_mac == link.mac or seen.sender_ip == b"\0\0\0\0" or any(
                    seen.sender_mac == v.mac for v in self.vmacs.values()):
                continue  # our own frames (the base's or a VMAC's on it)
            now = self.loop.time()
            for rt in self.runtimes.values():
                probe = rt.silent_probe
                if probe and seen.op == 2 and seen.sender_ip == probe[0] and now <= probe[1]:
                    rt.silent_probe = None
                    rt.silent_peer = _ntop(probe[0])
                    log.warning("(%s) peer %s stopped advertising but still answers ARP: VRRP between us is "
                                "blocked, or its VRRP daemon died; a split brain follows if it keeps the VIP",
                                rt.plan.instance.name, rt.silent_peer)
                    self.write_state()
            for rt in self.runtimes.values():
                if rt.link is link and rt.router.state is State.MASTER and seen.sender_ip in rt.router._vip_packed:
                    mac = seen.sender_mac.hex(":")
                    why = f"another host ({mac}) answers ARP for VIP {socket.inet_ntoa(seen.sender_ip)}"
                    self._apply(rt, rt.router.report_split_brain(seen.sender_ip, why, self.loop.time()))

    def _on_timer(self, name: str) -> None:
        assert self.loop is not None
        rt = self.runtimes.get(name)
        if rt is None:
            return
        rt.timer = None
        self._apply(rt, rt.router.tick(self.loop.time()))

    # -- actions ---------------------------------------------------------------------------

    def _apply(self, rt: Runtime, actions: list[Action]) -> None:
        assert self.loop is not None
        name = rt.plan.instance.name
        changed = False
        for a in actions:
            if isinstance(a, SendAdvert):
                for dst, payload in a.frames:
                    try:
                        via = rt.plan.vmac if not rt.plan.instance.vmac_xmit_base else None
                        rt.sock.send(rt.plan.router.primary_address, dst, payload, via)
                    except OSError as exc:
                        log.warning("(%s) advert send failed: %s", name, exc)
                if self.split_brain_probe and rt.link and rt.router.state is State.MASTER and a.priority > 0 and rt.plan.vips:
                    with contextlib.suppress(OSError):
                        rt.link.probe(rt.plan.router.primary_address, socket.inet_aton(rt.plan.vips[0].address))
            elif isinstance(a, AddVIPs):
                t_add = time.monotonic()
                for v in _specs(rt.plan, a.addresses):
                    try:
                        self.addrs.add(v)
                    except Exception as exc:
                        log.error("(%s) cannot add VIP %s/%s on %s: %s", name, v.address, v.prefixlen, v.dev, exc)
                log.debug("(%s) VIPs added in %.1f ms", name, 1000 * (time.monotonic() - t_add))
            elif isinstance(a, RemoveVIPs):
                for v in _specs(rt.plan, a.addresses):
                    try:
                        self.addrs.remove(v)
                    except Exception as exc:
                        log.error("(%s) cannot remove VIP %s on %s: %s", name, v.address, v.dev, exc)
            elif isinstance(a, SendGARP):
                self._garp(rt, a.repeat, a.addresses)
            elif isinstance(a, Notify):
                changed = True
                self._notify(rt, a)
                self._virtual_routes(rt, a.state)
                self._lvs_sync_follow(rt, a.state)
                self._sync_group_follow(rt, a.state)
                self._group_notify(rt, a.state)
                if a.state is State.MASTER and rt.link and len(rt.router.previous_master) == 4:
                    # its adverts stopped: does the old master still answer on the wire?
                    rt.silent_probe = (rt.router.previous_master, self.loop.time() + 1.0)
                    with contextlib.suppress(OSError):
                        rt.link.probe(rt.plan.router.primary_address, rt.router.previous_master)
            elif isinstance(a, SplitBrain):
                changed = True
                self._metrics.split_brain(name, a.active)
                if self.notify_split_brain:
                    peer = _ntop(a.peer)
                    self._spawn([*shlex.split(self.notify_split_brain), name, "SPLIT_BRAIN" if a.active else "SPLIT_BRAIN_RESOLVED", peer, a.reason])
            elif isinstance(a, RxLowerPriority):
                script = rt.plan.instance.notify_master_rx_lower_pri
                if script:
                    self._spawn(shlex.split(script))
                self.fifos.vrrp(f'INSTANCE "{name}" MASTER_RX_LOWER_PRI {a.priority}')
            elif isinstance(a, Log):
                log.info("%s", a.message)
                if a.message.endswith("held in BACKUP by its sync group"):
                    self._release_sync_group(rt)
        if changed:
            self._metrics.state(name, rt.router.state)
            self.write_state()
        if rt.timer:
            rt.timer.cancel()
            rt.timer = None
        deadline = rt.router.next_deadline()
        if deadline is not None and name in self.runtimes:
            rt.timer = self.loop.call_at(deadline, self._on_timer, name)

    def _release_sync_group(self, rt: Runtime) -> None:
        """When every member of a group wants MASTER, the held ones go together."""
        assert self.loop is not None and rt.plan.group_notify is not None
        members = self._group_members(rt.plan.group_notify[0])
        if all(m.router.state is State.MASTER or m.router.wants_master for m in members):
            for m in members:
                if m.router.wants_master and m.router.state is State.BACKUP:
                    m.router.sync_gate = None
                    try:
                        self._apply(m, m.router.follow(State.MASTER, self.loop.time()))
                    finally:
                        m.router.sync_gate = self._sync_gate_for(rt.plan.group_notify[0])

    def _group_members(self, group: str) -> list[Runtime]:
        return [r for r in self.runtimes.values() if r.plan.group_notify and r.plan.group_notify[0] == group]

    def _sync_gate_for(self, group: str) -> Callable[[VRRPRouter], bool]:
        def gate(router: VRRPRouter) -> bool:
            return all(m.router is router or m.router.state is State.MASTER or m.router.wants_master
                       for m in self._group_members(group))
        return gate

    def _sync_group_follow(self, rt: Runtime, state: State) -> None:
        if rt.plan.group_notify is None or state not in (State.MASTER, State.BACKUP, State.FAULT):
            return
        assert self.loop is not None
        for other in self._group_members(rt.plan.group_notify[0]):
            if other is not rt:
                acts = other.router.follow(state, self.loop.time())
                if acts:
                    self._apply(other, acts)

    def _garp(self, rt: Runtime, repeat: int, addresses: tuple[str, ...]) -> None:
        """A burst of ``repeat`` gratuitous ARPs (unsolicited NAs for IPv6) per VIP, the first at
        once and the others vrrp_garp_interval / vrrp_gna_interval apart (back to back when 0)."""
        g = self.cfg.global_defs if self.cfg is not None else K.GlobalDefs()
        for v in _specs(rt.plan, addresses):
            gap = g.vrrp_gna_interval if ":" in v.address else g.vrrp_garp_interval
            for i in range(max(repeat, 0)):
                if gap and i:
                    assert self.loop is not None
                    self.loop.call_later(gap * i, self._garp_later, rt, v)
                elif not self._garp_one(rt, v):
                    break

    def _garp_later(self, rt: Runtime, v: netio.VIPSpec) -> None:
        # only while this router still holds the VIP
        if self.runtimes.get(rt.plan.instance.name) is rt and rt.router.state is State.MASTER:
            self._garp_one(rt, v)

    def _garp_one(self, rt: Runtime, v: netio.VIPSpec) -> bool:
        try:
            if ":" in v.address:
                netio.unsolicited_na(v.dev, ipaddress.IPv6Address(v.address).packed)
            else:
                link = self.links.get(v.dev) if v.dev != rt.plan.ifname else rt.link
                if link is None:
                    link = netio.LinkSocket(v.dev)
                    self.links[v.dev] = link
                link.garp(socket.inet_aton(v.address))
        except OSError as exc:
            log.warning("(%s) gratuitous ARP for %s failed: %s", rt.plan.instance.name, v.address, exc)
            return False
        return True

    def _notify(self, rt: Runtime, n: Notify) -> None:
        """keepalived's conventions: notify_<state> runs as written; ``notify`` gets
        INSTANCE <name> <STATE> <priority> appended (GROUP <name> <STATE> for sync groups, below)."""
        generic, master, backup, fault, stop = rt.plan.notify
        specific = {State.MASTER: master, State.BACKUP: backup, State.FAULT: fault, State.STOP: stop}.get(n.state)
        if specific:
            self._spawn(shlex.split(specific))
        if generic:
            self._spawn([*shlex.split(generic), "INSTANCE", rt.plan.instance.name, n.state.value, str(n.priority)])
        self.fifos.vrrp(f'INSTANCE "{rt.plan.instance.name}" {n.state.value} {n.priority}')
        self._mail_vrrp("Instance", rt.plan.instance.name, rt.plan.instance.smtp_alert, n.state)

    # -- e-mail alerts and the health checks' events ---------------------------------------

    _VRRP_MAIL = {
        State.MASTER: ("Entering MASTER state", "=> VRRP Instance is now owning VRRP VIPs <="),
        State.BACKUP: ("Entering BACKUP state", "=> VRRP Instance is no longer owning VRRP VIPs <="),
        State.FAULT: ("Entering FAULT state", "=> VRRP Instance is no longer owning VRRP VIPs <="),
        State.STOP: ("Stopping", "=> VRRP Instance stopping <="),
    }

    def _mail_vrrp(self, kind: str, name: str, wanted: bool | None, state: State) -> None:
        """keepalived's smtp_alert for an instance or sync group: once per state reached."""
        if self.mailer is None or self.cfg is None:
            return
        g = self.cfg.global_defs
        on = wanted if wanted is not None else (
            g.smtp_alert_vrrp if g.smtp_alert_vrrp is not None else bool(g.smtp_alert))
        what = self._VRRP_MAIL.get(state)
        key = f"{kind}:{name}"
        if not on or what is None or self._mailed.get(key) is state or (
                state is State.FAULT and g.no_email_faults):
            return
        self._mailed[key] = state
        subject, body = what
        if kind == "Group":
            body = f"=> All VRRP group instances are now in {state.value} state <="
        self.mailer.alert(f"VRRP {kind} {name} - {subject}", body)

    def _lvs_event(self, vs: VirtualServerConfig, rs: RealServerConfig | None, up: bool) -> None:
        key = vs.services[0].key
        self.fifos.lvs_event(key, rs.dest if rs is not None else None, up)
        if self.mailer is None or self.cfg is None:
            return
        g = self.cfg.global_defs
        wanted = rs.smtp_alert if rs is not None and rs.smtp_alert is not None else vs.smtp_alert
        on = wanted if wanted is not None else (
            g.smtp_alert_checker if g.smtp_alert_checker is not None else bool(g.smtp_alert))
        if not on:
            return
        word = "UP" if up else "DOWN"
        if rs is None:
            self.mailer.alert(f"Virtualserver {service_text(key)} - {word}",
                              f"=> {'Gained' if up else 'Lost'} quorum <=")
        else:
            self.mailer.alert(
                f"Realserver {dest_text(rs.dest, key)} of virtual server {service_text(key)} - {word}",
                "=> CHECK succeed on service <=" if up else "=> CHECK failed on service <=")

    def _virtual_routes(self, rt: Runtime, state: State) -> None:
        """virtual_routes and virtual_rules are installed while the instance is MASTER, as its
        VIPs are."""
        master = state is State.MASTER
        for route in rt.plan.instance.virtual_routes:
            try:
                (self.addrs.add_route if master else self.addrs.remove_route)(route)
            except Exception as exc:
                log.error("(%s) virtual route %s (line %d): %s", rt.plan.instance.name,
                          route.dst, route.line, exc)
        for rule in rt.plan.instance.virtual_rules:
            try:
                (self.addrs.add_rule if master else self.addrs.remove_rule)(rule)
            except Exception as exc:
                log.error("(%s) virtual rule at line %d: %s", rt.plan.instance.name, rule.line, exc)

    def _lvs_sync_follow(self, rt: Runtime, state: State) -> None:
        """lvs_sync_daemon: the connection sync daemon is master while its instance is."""
        sd = self.cfg.global_defs.lvs_sync_daemon if self.cfg is not None else None
        if sd is None or self.lvs is None or sd.instance != rt.plan.instance.name:
            return
        if state is State.MASTER:
            self.lvs.sync_daemon("master", sd)
        elif state in (State.BACKUP, State.FAULT):
            self.lvs.sync_daemon("backup", sd)

    def _group_notify(self, rt: Runtime, state: State) -> None:
        """A sync group's scripts run once per group transition, when every member has made it."""
        if rt.plan.group_notify is None:
            return
        gname, g_generic, g_master, g_backup, g_fault, g_stop = rt.plan.group_notify
        if any(m.router.state is not state for m in self._group_members(gname) if m is not rt) or \
                self._group_state.get(gname) is state:
            return
        self._group_state[gname] = state
        g_specific = {State.MASTER: g_master, State.BACKUP: g_backup, State.FAULT: g_fault, State.STOP: g_stop}.get(state)
        if g_specific:
            self._spawn(shlex.split(g_specific))
        if g_generic:
            self._spawn([*shlex.split(g_generic), "GROUP", gname, state.value])
        self.fifos.vrrp(f'GROUP "{gname}" {state.value} 0')
        sg = next((g for g in self.cfg.vrrp_sync_groups if g.name == gname), None) if self.cfg else None
        self._mail_vrrp("Group", gname, sg.smtp_alert if sg else None, state)

    def _spawn(self, argv: list[str]) -> None:
        async def run() -> None:
            try:
                proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
                await proc.wait()
            except OSError as exc:
                log.warning("notify %s failed: %s", argv[0], exc)

        task = asyncio.ensure_future(run())
        self._children.add(task)
        task.add_done_callback(self._children.discard)

    # -- tracking: vrrp_script, track_interface, arbitrator ---------------------------------

    def _start_scripts(self, cfg: K.KeepalivedConfig) -> None:
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
                    ok = await asyncio.wait_for(proc.wait(), timeout) == 0
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
                    self._retrack()
            await asyncio.sleep(sc.interval)

    def _retrack(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        for rt in list(self.runtimes.values()):
            self._update_tracking(rt, now)

    def _update_tracking(self, rt: Runtime, now: float, initial: bool = False) -> None:
        inst = rt.plan.instance
        offset = 0
        faults: set[str] = set()
        # (what, weight, fine now) of every script, process and interface tracked, under
        # keepalived's one rule: weight 0 puts the instance in FAULT while it is not fine; a
        # positive weight is added while it is fine, a negative one while it is not
        checks: list[tuple[str, int, bool]] = []
        for ts in (*inst.track_script, *rt.plan.group_track_script):
            st = self.scripts.get(ts.name)
            if st is not None:
                weight = st.script.weight if ts.weight is None else ts.weight
                checks.append((f"script {ts.name}", weight, st.ok))
        for ref in (*inst.track_process, *rt.plan.group_track_process):
            up = self.processes.up(ref.name)
            if up is None:
                continue
            if ref.weight is None:
                weight, reverse = self.processes.weight(ref.name), self.processes.reverse(ref.name)
            else:
                weight, reverse = ref.weight, ref.reverse
            checks.append((f"process {ref.name}", weight, up != reverse))
        track = [*inst.track_interface, *rt.plan.group_track_interface]
        if not inst.dont_track_primary:
            track.append(K.TrackInterface(rt.plan.ifname, 0))
        for ti in track:
            checks.append((f"interface {ti.name} down", ti.weight, netio.oper_up(ti.name)))
        for what, weight, fine in checks:
            if weight == 0:
                if not fine:
                    faults.add(what)
            elif (weight > 0) == fine:
                offset += weight
        for ref in (*inst.track_file, *rt.plan.group_track_file):
            effect = self.track_files.status(ref)
            if effect is FAULT:
                faults.add(f"track_file {ref.name}")
            else:
                offset += effect
        if not self.arbitrator_ok:
            faults.add(f"arbitrator {self.arbitrator} unreachable")
        acts: list[Action] = []
        if initial:
            rt.router.priority_offset = offset
            rt.router.faults = set(faults)
            return
        acts += rt.router.set_priority_offset(offset, now)
        for f in sorted(faults - rt.router.faults):
            acts += rt.router.set_fault(f, now)
        for f in sorted(rt.router.faults - faults):
            acts += rt.router.clear_fault(f, now)
        if acts:
            self._apply(rt, acts)

    async def _track_interfaces(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for name in self.track_files.poll():
                log.info("Track file %s now %d", name, self.track_files.values()[name])
            if self.processes.states:
                for name in self.processes.update(scan_proc(), time.monotonic()):
                    log.info("Track process %s now %s", name,
                             "up" if self.processes.up(name) else "down")
            self._retrack()
            self.write_state(only_if_changed=True)

    async def _arbitrate(self) -> None:
        """Demote this node while it cannot reach the arbitrator (gateway): a node cut off from
        the network must not hold the VIP, which is what turns a partition into a split brain."""
        assert self.arbitrator is not None
        fails = oks = 0
        seq = 0
        while True:
            seq += 1
            ok = await _ping(self.arbitrator, seq, timeout=min(1.0, self.arbitrator_interval))
            if ok:
                oks, fails = oks + 1, 0
                if not self.arbitrator_ok and oks >= self.arbitrator_rise:
                    log.info("arbitrator %s reachable again", self.arbitrator)
                    self.arbitrator_ok = True
                    self._retrack()
            else:
                fails, oks = fails + 1, 0
                if self.arbitrator_ok and fails >= self.arbitrator_fall:
                    log.warning("arbitrator %s unreachable: leaving MASTER/BACKUP for FAULT", self.arbitrator)
                    self.arbitrator_ok = False
                    self._retrack()
            await asyncio.sleep(self.arbitrator_interval)

    # -- state -----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"pid": os.getpid(), "time": time.time(), "config": self.path, "instances": {}}
        inst: dict[str, object] = {}
        for name, rt in self.runtimes.items():
            r = rt.router
            inst[name] = {
                "state": r.state.value, "vrid": r.config.vrid, "interface": rt.plan.ifname,
                "version": r.config.version, "priority": r.base_priority,
                "effective_priority": r.effective_priority,
                "master": _ntop(r.master_address) if r.master_address else None,
                "vips": list(r.config.vips), "faults": sorted(r.faults),
                "split_brain": _ntop(r.split_brain_peer) if r.split_brain_peer else None,
                "silent_peer_alive": rt.silent_peer,
                "stats": dataclasses.asdict(r.stats),
            }
        out["instances"] = inst
        out["arbitrator"] = {"address": self.arbitrator, "reachable": self.arbitrator_ok} if self.arbitrator else None
        return out

    def write_state(self, only_if_changed: bool = False) -> None:
        """The state file is how tests, scripts and operators see the daemon: written atomically."""
        if not self.state_file:
            return
        status = self.status()
        key = json.dumps([status["instances"], status["arbitrator"]], sort_keys=True)
        if only_if_changed and key == self._last_state:
            return
        self._last_state = key
        tmp = f"{self.state_file}.tmp{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(status, fh, indent=1)
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.warning("cannot write state file %s: %s", self.state_file, exc)


def _specs(plan: InstancePlan, addresses: tuple[str, ...]) -> list[netio.VIPSpec]:
    """The netlink specs of the VIPs an action names ("ip/prefix" as configured)."""
    wanted = set(addresses)
    return [v for v in plan.vips if f"{v.address}/{v.prefixlen}" in wanted]


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


def process_age() -> float:
    """Seconds since this process started (from /proc/self/stat), 0 when it cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, age)


def _fifos(g: K.GlobalDefs) -> Fifos:
    def make(path: str | None, script: str | None) -> NotifyFifo | None:
        return NotifyFifo(path, script) if path else None

    return Fifos(make(g.notify_fifo, g.notify_fifo_script),
                 make(g.vrrp_notify_fifo, g.vrrp_notify_fifo_script),
                 make(g.lvs_notify_fifo, g.lvs_notify_fifo_script))


def _ntop(a: bytes) -> str:
    return str(ipaddress.ip_address(a))


async def _ping(host: str, seq: int, timeout: float) -> bool:
    """One ICMP echo over a raw socket; True when the matching reply arrives in time."""
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"pylvs-arbitrator"
    csum = pkt.inet_checksum(body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError:
        return False
    s.setblocking(False)
    fut: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        while True:
            try:
                data, addr = s.recvfrom(2048)
            except BlockingIOError:
                return
            ihl = (data[0] & 0x0F) * 4
            if addr[0] == host and len(data) >= ihl + 8 and data[ihl] == 0:
                _, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
                if rid == ident and rseq == seq and not fut.done():
                    fut.set_result(True)

    loop.add_reader(s.fileno(), readable)
    try:
        s.sendto(body, (host, 0))
        return await asyncio.wait_for(fut, timeout)
    except (TimeoutError, OSError):
        return False
    finally:
        loop.remove_reader(s.fileno())
        s.close()


class _Metrics:
    """Prometheus metrics for state and split brain, on their own registry (served only when a
    port is given)."""

    STATES = {State.INIT: 0, State.BACKUP: 1, State.MASTER: 2, State.FAULT: 3, State.STOP: 4}

    def __init__(self, port: int | None) -> None:
        self.enabled = bool(port)
        if not port:
            return  # prometheus_client is slow to import: only when metrics are served
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.g_state = Gauge("pylvs_vrrp_state", "VRRP state (0 init, 1 backup, 2 master, 3 fault, 4 stop)",
                             ["instance"], registry=self.registry)
        self.g_split = Gauge("pylvs_vrrp_split_brain", "1 while another master of our VRID is seen",
                             ["instance"], registry=self.registry)
        self.c_split = Counter("pylvs_vrrp_split_brain_events", "split brains detected",
                               ["instance"], registry=self.registry)
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def state(self, name: str, state: State) -> None:
        if not self.enabled:
            return
        self.g_state.labels(name).set(self.STATES[state])

    def split_brain(self, name: str, active: bool) -> None:
        if not self.enabled:
            return
        self.g_split.labels(name).set(1 if active else 0)
        if active:
            self.c_split.labels(name).inc()
