"""keepalived's on-signal dumps: ``keepalived.data`` (SIGUSR1), ``keepalived.stats`` (SIGUSR2, and
``STATS_CLEAR``) and ``keepalived.json`` (``keepalived --signum=JSON``), in ``$TMPDIR`` (``/tmp``
when unset), as keepalived 2.2.7 writes them.

Why: monitoring agents (keepalived-exporter, check_keepalived) send these signals and parse the
files; the layouts here follow keepalived 2.2.7's own output (section banners, ``Name = value``
lines with keepalived's indentation, the JSON keys and state numbers), restricted to what pylvs
has. The files are written whole (temporary file and rename, mode 0600 as keepalived's umask
0177 gives), so a reader never sees half a dump and a failed write leaves no temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields

from pylvs.config import keepalived as K
from pylvs.keepalived.notify_fifo import dest_text, service_text
from pylvs.keepalived.tracking import ScriptState
from pylvs.vrrp import packet as pkt
from pylvs.vrrp.plan import InstancePlan
from pylvs.vrrp.router import State, VRRPRouter

# keepalived's VRRP_STATE_* numbers (vrrp.h), as its JSON dump shows them
STATE_NUMBER = {State.INIT: 0, State.BACKUP: 1, State.MASTER: 2, State.FAULT: 3, State.STOP: 98}

_STATS_LAYOUT = (  # keepalived's .stats lines: (indent, label, Stats field or None for a heading)
    (2, "Advertisements:", None), (4, "Received", "advert_rcvd"), (4, "Sent", "advert_sent"),
    (2, "Became master", "become_master"), (2, "Released master", "release_master"),
    (2, "Packet Errors:", None), (4, "Length", "packet_len_err"), (4, "TTL", "ip_ttl_err"),
    (4, "Invalid Type", "invalid_type_rcvd"), (4, "Advertisement Interval", "advert_interval_err"),
    (4, "Address List", "addr_list_err"),
    (2, "Authentication Errors:", None), (4, "Invalid Type", "invalid_authtype"),
    (4, "Type Mismatch", "authtype_mismatch"), (4, "Failure", "auth_failure"),
    (2, "Priority Zero:", None), (4, "Received", "pri_zero_rcvd"), (4, "Sent", "pri_zero_sent"),
)
_JSON_STATS = ("advert_rcvd", "advert_sent", "become_master", "release_master", "packet_len_err",
               "advert_interval_err", "ip_ttl_err", "invalid_type_rcvd", "addr_list_err",
               "invalid_authtype", "authtype_mismatch", "auth_failure", "pri_zero_rcvd", "pri_zero_sent")


@dataclass(frozen=True, slots=True)
class Running:
    """One running instance as the dumps see it."""

    plan: InstancePlan
    router: VRRPRouter
    last_transition: float  # wall-clock time of its last state change


def dump_dir() -> str:
    """keepalived writes its dumps to $TMPDIR, /tmp when unset."""
    return os.environ.get("TMPDIR") or "/tmp"


def write_dump(name: str, text: str) -> str:
    """Write ``text`` to ``dump_dir()/name`` atomically (mode 0600); returns the path."""
    directory = dump_dir()
    path = os.path.join(directory, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _when(t: float) -> str:
    frac = f"{t % 1:.6f}"[1:]
    return f"{t:.6f} ({time.strftime('%a %b %e %H:%M:%S', time.localtime(t))}{frac} {time.localtime(t).tm_year})"


def _vip_text(plan: InstancePlan, i: int, installed: bool) -> str:
    v = plan.vips[i]
    out = f"{v.address}/{v.prefixlen} dev {v.dev} scope {v.scope or 'global'}"
    if v.label:
        out += f" label {v.label}"
    return out + (" set" if installed else "")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def data_text(g: K.GlobalDefs, running: Iterable[Running], scripts: dict[str, ScriptState],
              lvs_lines: Iterable[str] = ()) -> str:
    """keepalived.data: global definitions, VRRP topology, scripts (and the LVS topology)."""
    out = ["------< Global definitions >------",
           " Network namespace = (default)",
           f" Router ID = {g.router_id or os.uname().nodename}"]
    if g.smtp_server:
        out.append(f" Smtp server = {g.smtp_server}")
        out.append(f" Smtp server connection timeout = {g.smtp_connect_timeout}")
    if g.notification_email_from:
        out.append(f" Email notification from = {g.notification_email_from}")
    for addr in g.notification_email:
        out.append(f" Email notification = {addr}")
    for label, val in (("Default smtp_alert", g.smtp_alert), ("Default smtp_alert_vrrp", g.smtp_alert_vrrp),
                       ("Default smtp_alert_checker", g.smtp_alert_checker)):
        out.append(f" {label} = {'unset' if val is None else _bool(val)}")
    out += [f" LVS flush = {_bool(g.lvs_flush)}",
            f" LVS flush on stop = {g.lvs_flush_on_stop or 'disabled'}",
            f" VRRP IPv4 mcast group = {g.vrrp_mcast_group4}",
            f" VRRP IPv6 mcast group = {g.vrrp_mcast_group6}",
            f" Gratuitous ARP delay = {_num(g.vrrp_garp_master_delay)}",
            f" Gratuitous ARP repeat = {g.vrrp_garp_master_repeat}",
            f" Gratuitous ARP refresh timer = {_num(g.vrrp_garp_master_refresh)}",
            f" Gratuitous ARP refresh repeat = {g.vrrp_garp_master_refresh_repeat}",
            f" Gratuitous ARP lower priority repeat = {g.vrrp_garp_lower_prio_repeat}",
            f" Send advert after receive lower priority advert = {_bool(not g.vrrp_lower_prio_no_advert)}",
            f" Send advert after receive higher priority advert = {_bool(g.vrrp_higher_prio_send_advert)}",
            f" Gratuitous ARP interval = {g.vrrp_garp_interval:.6f}",
            f" Gratuitous NA interval = {g.vrrp_gna_interval:.6f}",
            f" VRRP default protocol version = {g.vrrp_version}",
            f" VRRP skip check advert addresses = {_bool(g.vrrp_skip_check_adv_addr)}",
            f" VRRP strict mode = {_bool(g.vrrp_strict)}",
            f" Script security {'enabled' if g.enable_script_security else 'disabled'}"]
    out.append("------< VRRP Topology >------")
    for r in running:
        out += _instance_lines(r)
    if scripts:
        out.append("------< VRRP Scripts >------")
        for name, st in scripts.items():
            sc = st.script
            out += [f" VRRP Script = {name}", f"   Command = {sc.script}",
                    f"   Interval = {_num(sc.interval)} sec", f"   Timeout = {_num(sc.timeout or 0)} sec",
                    f"   Weight = {sc.weight}", f"   Rise = {sc.rise}", f"   Fall = {sc.fall}",
                    f"   Status = {'GOOD' if st.ok else 'BAD'}"]
    out += list(lvs_lines)
    return "\n".join(out) + "\n"


def _instance_lines(r: Running) -> list[str]:
    p, rt = r.plan, r.router
    rc, inst = rt.config, p.instance
    master = rt.state is State.MASTER
    want = State.MASTER if rt.wants_master else rt.state
    out = [f" VRRP Instance = {inst.name}",
           f"   VRRP Version = {rc.version}",
           f"   State = {rt.state.value}",
           f"   Wantstate = {want.value}",
           f"   Number of interface and track script faults = {len(rt.faults)}",
           f"   Last transition = {_when(r.last_transition)}",
           f"   Master down timer = {round(rt.master_down_interval() * 1e6)} usecs",
           f"   Interface = {p.ifname}"]
    if p.vmac:
        out.append(f"   Use VMAC, i/f {p.vmac}")
    out.append(f"   Using src_ip = {_ntop(rc.primary_address)}")
    if rc.unicast_peers:
        out.append("   Unicast Peer :")
        out += [f"     {_ntop(a)}" for a in rc.unicast_peers]
    elif p.mcast_group:
        out.append(f"   Multicast address {_ntop(p.mcast_group)}")
    out += [f"   Gratuitous ARP delay = {_num(rc.garp_master_delay)}",
            f"   Gratuitous ARP repeat = {rc.garp_master_repeat}",
            f"   Gratuitous ARP refresh = {_num(rc.garp_master_refresh)}",
            f"   Gratuitous ARP refresh repeat = {rc.garp_master_refresh_repeat}",
            f"   Gratuitous ARP lower priority repeat = {rc.garp_lower_prio_repeat}",
            f"   Send advert after receive lower priority advert = {_bool(not rc.lower_prio_no_advert)}",
            f"   Send advert after receive higher priority advert = {_bool(rc.higher_prio_send_advert)}",
            f"   Virtual Router ID = {rc.vrid}",
            f"   Priority = {rt.base_priority}",
            f"   Effective priority = {rt.effective_priority}",
            f"   Total priority = {rt.effective_priority}",
            f"   Advert interval = {_num(rc.adver_int)} sec",
            f"   Preempt = {'enabled' if rc.preempt else 'disabled'}"]
    if rc.preempt_delay:
        out.append(f"   Preempt delay = {_num(rc.preempt_delay)} secs")
    if rc.auth_type == pkt.AUTH_PASS:
        out += ["   Authentication type = SIMPLE_PASSWORD", f"   Password = {rc.auth_pass.decode(errors='replace')}"]
    out.append(f"   Virtual IP ({len(p.vips)}):")
    out += [f"     {_vip_text(p, i, master)}" for i in range(len(p.vips))]
    if inst.track_script or p.group_track_script:
        out.append("   Tracked scripts :")
        out += [f"     {ts.name}" + (f" weight {ts.weight}" if ts.weight is not None else "")
                for ts in (*inst.track_script, *p.group_track_script)]
    if rt.faults:
        out.append("   Faults :")
        out += [f"     {f}" for f in sorted(rt.faults)]
    notify = [("Generic", p.notify[0]), ("Master", p.notify[1]), ("Backup", p.notify[2]),
              ("Fault", p.notify[3]), ("Stop", p.notify[4])]
    out += [f"   {label} state transition script = {cmd}" for label, cmd in notify if cmd]
    out.append(f"   Using smtp notification = {'yes' if inst.smtp_alert else 'no'}")
    return out


def stats_text(running: Iterable[Running]) -> str:
    """keepalived.stats: each instance's counters under keepalived's headings."""
    out: list[str] = []
    for r in running:
        out.append(f"VRRP Instance: {r.plan.instance.name}")
        for indent, label, field in _STATS_LAYOUT:
            pad = " " * indent
            out.append(f"{pad}{label}" if field is None else f"{pad}{label}: {getattr(r.router.stats, field)}")
    return "".join(f"{line}\n" for line in out)


def json_text(running: Iterable[Running]) -> str:
    """keepalived.json: a list of {"data": ..., "stats": ...}, one line, '/' escaped as keepalived's
    JSON writer does."""
    items = []
    for r in running:
        p, rt = r.plan, r.router
        rc, inst = rt.config, p.instance
        data = {
            "iname": inst.name, "dont_track_primary": int(inst.dont_track_primary),
            "skip_check_adv_addr": int(not rc.check_vips), "strict_mode": 0,
            "vmac_ifname": p.vmac or "", "ifp_ifname": p.ifname,
            "master_priority": rt.master_priority, "last_transition": round(r.last_transition, 6),
            "garp_delay": rc.garp_master_delay, "garp_refresh": rc.garp_master_refresh,
            "garp_rep": rc.garp_master_repeat, "garp_refresh_rep": rc.garp_master_refresh_repeat,
            "garp_lower_prio_delay": rc.garp_master_delay, "garp_lower_prio_rep": rc.garp_lower_prio_repeat,
            "lower_prio_no_advert": int(rc.lower_prio_no_advert),
            "higher_prio_send_advert": int(rc.higher_prio_send_advert),
            "vrid": rc.vrid, "base_priority": rt.base_priority, "effective_priority": rt.effective_priority,
            "vipset": rt.state is State.MASTER, "promote_secondaries": False,
            "adver_int": rc.adver_int, "master_adver_int": rt.master_adver_int, "accept": 1,
            "nopreempt": not rc.preempt, "preempt_delay": rc.preempt_delay,
            "state": STATE_NUMBER[rt.state],
            "wantstate": STATE_NUMBER[State.MASTER if rt.wants_master else rt.state],
            "version": rc.version, "smtp_alert": bool(inst.smtp_alert), "notify_deleted": False,
            "vips": [_vip_text(p, i, rt.state is State.MASTER) for i in range(len(p.vips))],
            "track_script": [ts.name for ts in (*inst.track_script, *p.group_track_script)],
            "auth_type": rc.auth_type,
        }
        if rc.auth_type == pkt.AUTH_PASS:
            data["auth_data"] = rc.auth_pass.decode(errors="replace")
        for k, v in list(data.items()):
            if isinstance(v, float) and v.is_integer() and k != "last_transition":
                data[k] = int(v)
        stats = {name: getattr(rt.stats, name) for name in _JSON_STATS}
        items.append({"data": data, "stats": stats})
    return json.dumps(items, separators=(",", ":")).replace("/", "\\/") + "\n"


def lvs_lines(config: K.LVSConfig) -> list[str]:
    """The checker half of keepalived.data: virtual servers, their real servers and checkers."""
    out = ["------< LVS Topology >------"]
    for vs in config.virtual_servers:
        out.append(" ------< Virtual server >------")
        out += [f"   VS = {service_text(svc.key)}" for svc in vs.services]
        out += [f"   delay_loop = {_num(vs.delay_loop)}", f"   quorum = {vs.quorum}, hysteresis = {vs.hysteresis}"]
        for rs in vs.real_servers:
            out.append("   ------< Real server >------")
            out.append(f"     RS = {dest_text(rs.dest, vs.services[0].key)}")
            out += [f"     Checker = {c.kind}" for c in rs.checkers]
        if vs.sorry_server is not None:
            out.append(f"   sorry server = {dest_text(vs.sorry_server.dest, vs.services[0].key)}")
    return out


def clear_stats(routers: Iterable[VRRPRouter]) -> None:
    """STATS_CLEAR: every counter back to zero, after the dump."""
    for rt in routers:
        for f in fields(rt.stats):
            setattr(rt.stats, f.name, 0)


def _ntop(a: bytes) -> str:
    import ipaddress

    return str(ipaddress.ip_address(a))
