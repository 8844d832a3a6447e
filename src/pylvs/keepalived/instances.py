"""The running VRRP instances of ``pylvs keepalived``: one :class:`VRRPRouter` per vrrp_instance,
with its sockets, timer, VIPs, gratuitous ARPs, virtual routes and sync group.

Why a module of its own: this is the only place where the sans-IO router meets the host. It feeds
each router the packets, timers and tracking results it needs and carries out the actions it
returns, in order; everything it must tell the outside goes through the notifier
(``pylvs.keepalived.scripts``). Not for: protocol decisions (:mod:`pylvs.vrrp.router`), planning
(:mod:`pylvs.vrrp.plan`) or the daemon's start/stop/reload sequence (``pylvs.keepalived.daemon``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pylvs.config import keepalived as K
from pylvs.keepalived.metrics import Metrics
from pylvs.keepalived.scripts import Notifier
from pylvs.keepalived.split_brain import SplitBrainWatch, Watched
from pylvs.vrrp import netio
from pylvs.vrrp import packet as pkt
from pylvs.vrrp.plan import InstancePlan
from pylvs.vrrp.router import (
    Action,
    AddVIPs,
    Dispatcher,
    Log,
    Notify,
    Received,
    RemoveVIPs,
    RxLowerPriority,
    SendAdvert,
    SendGARP,
    SplitBrain,
    State,
    VRRPRouter,
)

log = logging.getLogger("pylvs.vrrp")


@dataclass(slots=True)
class Runtime:
    plan: InstancePlan
    router: VRRPRouter
    sock: netio.VRRPSocket
    link: netio.LinkSocket | None
    timer: asyncio.TimerHandle | None = None

    def watched(self) -> Watched:
        return Watched(self.plan.instance.name, self.plan, self.router, self.link)


class Instances:
    """Every running instance, keyed by name, and the sockets they share (one VRRP socket per
    interface and family, one ARP socket per interface).

    ``tracking(plan)`` gives an instance's priority offset and faults; ``on_state`` is called
    after a state or split-brain change (the daemon rewrites its state file); ``on_role`` when an
    instance changes state (the lvs_sync_daemon follows it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, notifier: Notifier, metrics: Metrics,
                 watch: SplitBrainWatch, tracking: Callable[[InstancePlan], tuple[int, set[str]]],
                 on_state: Callable[[], None], on_role: Callable[[Runtime, State], None]) -> None:
        self.loop = loop
        self.notifier = notifier
        self.metrics = metrics
        self.watch = watch
        self.tracking = tracking
        self.on_state = on_state
        self.on_role = on_role
        self.cfg: K.KeepalivedConfig | None = None
        self.runtimes: dict[str, Runtime] = {}
        self.sockets: dict[tuple[str, int], tuple[netio.VRRPSocket, Dispatcher]] = {}
        self.links: dict[str, netio.LinkSocket] = {}
        self.vmacs: dict[str, netio.VMAC] = {}
        self.addrs = netio.AddressManager()
        self._group_state: dict[str, State] = {}
        self.transitions: dict[str, float] = {}  # wall-clock time of each instance's last state change
        self.release_on_stop = True  # keepalived -V turns it off: VIPs and routes stay on stop
        self._stopping = False

    # -- start, stop, reload -----------------------------------------------------------------

    def start(self, plan: InstancePlan, started: float | None = None) -> None:
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
        self.retrack(rt, initial=True)
        self.apply(rt, router.start(self.loop.time() if started is None else started))

    def stop(self, name: str) -> None:
        """Resign (priority 0 advert, VIPs removed) and release the instance's sockets."""
        rt = self.runtimes.pop(name)
        if rt.timer:
            rt.timer.cancel()
        self._stopping = True
        try:
            self.apply(rt, rt.router.stop(self.loop.time()))
        finally:
            self._stopping = False
        self.watch.forget(name)
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

    def stop_all(self) -> None:
        for name in list(self.runtimes):
            self.stop(name)

    def close(self) -> None:
        self.addrs.close()

    def reload(self, plans: list[InstancePlan]) -> list[InstancePlan]:
        """A new file's plans: instances gone or moved to another group on the wire are stopped,
        the others reconfigured in place; returns the new instances, which the caller starts once
        the new file's tracking runs."""
        new = {p.instance.name: p for p in plans}
        for name, rt in list(self.runtimes.items()):
            p = new.get(name)
            if p is None or p.ifname != rt.plan.ifname or not rt.router.same_group(p.router) \
                    or p.vmac != rt.plan.vmac:
                self.stop(name)  # gone, or another group on the wire: resign and restart
                continue
            del new[name]
            self._reconfigure(rt, p)
        return list(new.values())

    def _reconfigure(self, rt: Runtime, p: InstancePlan) -> None:
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
            return  # scripts/notify may change without disturbing anything
        acts = rt.router.reconfigure(p.router, self.loop.time())
        if rt.router.state is State.MASTER:
            # VIPs whose options changed (label, device) are put back with the new ones
            for v in old_plan.vips:
                if v not in p.vips:
                    with contextlib.suppress(Exception):
                        self.addrs.remove(v)
            acts.insert(0, AddVIPs(tuple(f"{v.address}/{v.prefixlen}" for v in p.vips if v not in old_plan.vips)))
        self.apply(rt, acts)

    # -- tracking ----------------------------------------------------------------------------

    def retrack_all(self) -> None:
        for rt in list(self.runtimes.values()):
            self.retrack(rt)

    def retrack(self, rt: Runtime, initial: bool = False) -> None:
        offset, faults = self.tracking(rt.plan)
        if initial:
            rt.router.priority_offset = offset
            rt.router.faults = set(faults)
            return
        now = self.loop.time()
        acts: list[Action] = []
        acts += rt.router.set_priority_offset(offset, now)
        for f in sorted(faults - rt.router.faults):
            acts += rt.router.set_fault(f, now)
        for f in sorted(rt.router.faults - faults):
            acts += rt.router.clear_fault(f, now)
        if acts:
            self.apply(rt, acts)

    # -- events ------------------------------------------------------------------------------

    def _on_vrrp_readable(self, key: tuple[str, int]) -> None:
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
                    self.apply(rt, actions)

    def _on_arp_readable(self, ifname: str) -> None:
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
            found, changed = self.watch.arp_seen(
                seen, link, [rt.watched() for rt in self.runtimes.values()], self.loop.time())
            if changed:
                self.on_state()
            for name, acts in found:
                rt = self.runtimes.get(name)
                if rt is not None:
                    self.apply(rt, acts)

    def _on_timer(self, name: str) -> None:
        rt = self.runtimes.get(name)
        if rt is None:
            return
        rt.timer = None
        self.apply(rt, rt.router.tick(self.loop.time()))

    # -- actions -----------------------------------------------------------------------------

    def apply(self, rt: Runtime, actions: list[Action]) -> None:
        """Carry out a router's actions in order, then arm its timer for the next deadline."""
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
                self.watch.after_advert(rt.watched(), a.priority)
            elif isinstance(a, AddVIPs):
                t_add = time.monotonic()
                for v in _specs(rt.plan, a.addresses):
                    try:
                        self.addrs.add(v)
                    except Exception as exc:
                        log.error("(%s) cannot add VIP %s/%s on %s: %s", name, v.address, v.prefixlen, v.dev, exc)
                log.debug("(%s) VIPs added in %.1f ms", name, 1000 * (time.monotonic() - t_add))
            elif isinstance(a, RemoveVIPs):
                if self._stopping and not self.release_on_stop:
                    continue
                for v in _specs(rt.plan, a.addresses):
                    try:
                        self.addrs.remove(v)
                    except Exception as exc:
                        log.error("(%s) cannot remove VIP %s on %s: %s", name, v.address, v.dev, exc)
            elif isinstance(a, SendGARP):
                self._garp(rt, a.repeat, a.addresses)
            elif isinstance(a, Notify):
                changed = True
                self.transitions[name] = time.time()
                self.notifier.instance(rt.plan, a.state, a.priority)
                if not (self._stopping and not self.release_on_stop):
                    self._virtual_routes(rt, a.state)
                self.on_role(rt, a.state)
                self._sync_group_follow(rt, a.state)
                self._group_notify(rt, a.state)
                if a.state is State.MASTER:
                    self.watch.became_master(rt.watched(), self.loop.time())
            elif isinstance(a, SplitBrain):
                changed = True
                self.metrics.split_brain(name, a.active)
                self.notifier.split_brain(name, a.active, str(ipaddress.ip_address(a.peer)), a.reason)
            elif isinstance(a, RxLowerPriority):
                self.notifier.rx_lower_priority(rt.plan, a.priority)
            elif isinstance(a, Log):
                log.info("%s", a.message)
                if a.message.endswith("held in BACKUP by its sync group"):
                    self._release_sync_group(rt)
        if changed:
            self.metrics.state(name, rt.router.state)
            self.on_state()
        if rt.timer:
            rt.timer.cancel()
            rt.timer = None
        deadline = rt.router.next_deadline()
        if deadline is not None and name in self.runtimes:
            rt.timer = self.loop.call_at(deadline, self._on_timer, name)

    # -- sync groups -------------------------------------------------------------------------

    def _release_sync_group(self, rt: Runtime) -> None:
        """When every member of a group wants MASTER, the held ones go together."""
        assert rt.plan.group_notify is not None
        members = self._group_members(rt.plan.group_notify[0])
        if all(m.router.state is State.MASTER or m.router.wants_master for m in members):
            for m in members:
                if m.router.wants_master and m.router.state is State.BACKUP:
                    m.router.sync_gate = None
                    try:
                        self.apply(m, m.router.follow(State.MASTER, self.loop.time()))
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
        for other in self._group_members(rt.plan.group_notify[0]):
            if other is not rt:
                acts = other.router.follow(state, self.loop.time())
                if acts:
                    self.apply(other, acts)

    def _group_notify(self, rt: Runtime, state: State) -> None:
        """A sync group's scripts run once per group transition, when every member has made it."""
        if rt.plan.group_notify is None:
            return
        gname = rt.plan.group_notify[0]
        if any(m.router.state is not state for m in self._group_members(gname) if m is not rt) or \
                self._group_state.get(gname) is state:
            return
        self._group_state[gname] = state
        sg = next((g for g in self.cfg.vrrp_sync_groups if g.name == gname), None) if self.cfg else None
        self.notifier.group(rt.plan, state, sg.smtp_alert if sg else None)

    # -- gratuitous ARP, virtual routes --------------------------------------------------------

    def _garp(self, rt: Runtime, repeat: int, addresses: tuple[str, ...]) -> None:
        """A burst of ``repeat`` gratuitous ARPs (unsolicited NAs for IPv6) per VIP, the first at
        once and the others vrrp_garp_interval / vrrp_gna_interval apart (back to back when 0)."""
        g = self.cfg.global_defs if self.cfg is not None else K.GlobalDefs()
        for v in _specs(rt.plan, addresses):
            gap = g.vrrp_gna_interval if ":" in v.address else g.vrrp_garp_interval
            for i in range(max(repeat, 0)):
                if gap and i:
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

    # -- state -------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """Each instance as the state file and ``vrrp_status`` show it."""
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
                "silent_peer_alive": self.watch.silent_peer.get(name),
                "stats": dataclasses.asdict(r.stats),
            }
        return inst


def _specs(plan: InstancePlan, addresses: tuple[str, ...]) -> list[netio.VIPSpec]:
    """The netlink specs of the VIPs an action names ("ip/prefix" as configured)."""
    wanted = set(addresses)
    return [v for v in plan.vips if f"{v.address}/{v.prefixlen}" in wanted]


def _ntop(a: bytes) -> str:
    return str(ipaddress.ip_address(a))


def process_age() -> float:
    """Seconds since this process started (from /proc/self/stat), 0 when it cannot be read.

    The RFC 3768 startup event is dated at the process's own start, so a restarted master waits
    for Master_Down_Interval from when a C daemon's wait would have begun."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, age)
