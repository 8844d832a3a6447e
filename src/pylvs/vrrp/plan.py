"""Instance planning: from a parsed keepalived.conf to what each VRRP router runs on this host.

Why a module of its own: turning a ``vrrp_instance`` into a :class:`RouterConfig` applies
keepalived's defaults and its global_defs inheritance, and resolves the names the file uses
(interfaces, source addresses, VIP devices) against the host once, before anything starts. A
reload plans the whole new file first, so a file that cannot run here is refused without
touching the running instances. Not for: running the instances (``pylvs.keepalived.instances``)
or protocol decisions (:mod:`pylvs.vrrp.router`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from dataclasses import dataclass
from typing import TypeVar

from pylvs.config import keepalived as K
from pylvs.vrrp import netio
from pylvs.vrrp import packet as pkt
from pylvs.vrrp.router import RouterConfig, State

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
    """One plan per vrrp_instance, in file order; :class:`HostError` when one cannot run here."""
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
