"""keepalived.conf's ``vrrp_instance`` and ``vrrp_sync_group`` blocks: the virtual router, its
addresses, routes and rules, what it tracks and whom it notifies.

Not for: running the protocol (``pylvs.vrrp``) or checking the host (``pylvs.keepalived``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.globals import UNSUPPORTED, GlobalDefs
from pylvs.config.keepalived.tracks import (
    TrackFileRef,
    TrackInterface,
    TrackScript,
    file_refs,
    interface_refs,
    script_refs,
)
from pylvs.config.values import (
    VRRP_WORDING,
    Invalid,
    Report,
    address,
    arg,
    command,
    integer,
    is_address,
    number,
)

__all__ = ["VRRPInstance", "VRRPSyncGroup", "VirtualIP", "VirtualRoute", "VirtualRule",
           "sync_group", "vrrp_instance"]


@dataclass(frozen=True, slots=True)
class VirtualIP:
    """One line of virtual_ipaddress: ``<ip>[/<prefix>] [brd X] [dev IF] [scope S] [label L]``."""

    address: str  # "ip/prefix"
    dev: str | None = None
    label: str | None = None
    scope: str | None = None
    broadcast: str | None = None
    line: int = 0

    @property
    def family(self) -> int:
        return ipaddress.ip_interface(self.address).version


@dataclass(frozen=True, slots=True)
class VirtualRoute:
    """One line of ``virtual_routes``: a route the instance installs while it is MASTER, e.g.
    ``src 10.0.0.1 to 10.9.0.0/24 via 10.0.0.254 dev eth1 metric 5 table 100`` or
    ``blackhole 10.8.0.0/24``."""

    dst: str  # prefix, "default" allowed
    kind: str = "unicast"  # unicast | blackhole | unreachable | prohibit
    via: str | None = None
    dev: str | None = None
    src: str | None = None
    metric: int | None = None
    table: int | None = None
    scope: str | None = None
    alt_via: tuple[str, ...] = ()  # "via A or B": more next hops (a multipath route)
    line: int = 0


@dataclass(frozen=True, slots=True)
class VirtualRule:
    """One line of ``virtual_rules``: a policy-routing rule the instance installs while MASTER,
    e.g. ``from 10.0.2.0/24 table 100 preference 50``."""

    src: str | None = None  # prefix
    dst: str | None = None
    table: int | None = None
    priority: int | None = None
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    line: int = 0



@dataclass(frozen=True, slots=True)
class VRRPInstance:
    name: str
    interface: str | None = None
    state: str = "BACKUP"  # wanted initial state
    virtual_router_id: int = 0
    priority: int = 100
    advert_int: float = 1.0
    version: int | None = None  # None: global vrrp_version (3 for IPv6)
    nopreempt: bool = False
    preempt_delay: float = 0.0
    auth_type: str | None = None  # "PASS" | "AH"
    auth_pass: str | None = None
    virtual_ipaddress: tuple[VirtualIP, ...] = ()
    virtual_ipaddress_excluded: tuple[VirtualIP, ...] = ()
    mcast_src_ip: str | None = None
    unicast_src_ip: str | None = None
    unicast_peer: tuple[str, ...] = ()
    track_interface: tuple[TrackInterface, ...] = ()
    track_script: tuple[TrackScript, ...] = ()
    track_file: tuple[TrackFileRef, ...] = ()
    track_process: tuple[TrackFileRef, ...] = ()  # (name, weight, reverse) like track_file
    virtual_routes: tuple[VirtualRoute, ...] = ()
    virtual_rules: tuple[VirtualRule, ...] = ()
    dont_track_primary: bool = False
    notify: str | None = None
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    notify_master_rx_lower_pri: str | None = None
    garp_master_delay: float | None = None
    garp_master_repeat: int | None = None
    garp_master_refresh: float | None = None
    garp_master_refresh_repeat: int | None = None
    garp_lower_prio_repeat: int | None = None
    lower_prio_no_advert: bool | None = None
    higher_prio_send_advert: bool | None = None
    skip_check_adv_addr: bool = False
    smtp_alert: bool | None = None  # None: global smtp_alert_vrrp / smtp_alert
    use_vmac: bool = False
    vmac_name: str | None = None  # None: vrrp.<VRID>
    vmac_xmit_base: bool = False  # adverts from the base interface instead of the VMAC
    other: tuple[Statement, ...] = ()  # accepted keywords not acted on
    file: str = ""
    line: int = 0

    @property
    def family(self) -> int:
        return self.virtual_ipaddress[0].family if self.virtual_ipaddress else 4

    @property
    def vmac(self) -> str | None:
        """The VMAC interface's name with use_vmac (keepalived's default vrrp.<VRID>)."""
        if not self.use_vmac:
            return None
        return self.vmac_name or f"vrrp.{self.virtual_router_id}"

    def effective_version(self, g: GlobalDefs) -> int:
        if self.family == 6:
            return 3  # RFC 5798: IPv6 exists only in VRRPv3
        return self.version if self.version is not None else g.vrrp_version


@dataclass(frozen=True, slots=True)
class VRRPSyncGroup:
    name: str
    group: tuple[str, ...]
    notify: str | None = None
    notify_master: str | None = None
    notify_backup: str | None = None
    notify_fault: str | None = None
    notify_stop: str | None = None
    track_script: tuple[TrackScript, ...] = ()
    track_interface: tuple[TrackInterface, ...] = ()
    track_file: tuple[TrackFileRef, ...] = ()
    track_process: tuple[TrackFileRef, ...] = ()
    smtp_alert: bool | None = None
    other: tuple[Statement, ...] = ()
    line: int = 0



def vips(st: Statement, family: list[int], report: Report) -> tuple[VirtualIP, ...]:
    out: list[VirtualIP] = []
    for s in st.block or ():
        words = s.words
        try:
            iface = ipaddress.ip_interface(words[0])
        except ValueError:
            report.error(s, f"VRRP parsed invalid IP {words[0]}")
            continue
        opts: dict[str, str] = {}
        i = 1
        while i < len(words):
            key = words[i]
            if key in ("dev", "label", "scope", "brd", "broadcast") and i + 1 < len(words):
                opts["broadcast" if key in ("brd", "broadcast") else key] = words[i + 1]
                i += 2
            elif key in ("no_track", "home", "nodad", "noprefixroute", "autojoin", "-", "track"):
                i += 1
            elif key in ("preferred_lft", "peer", "metric") and i + 1 < len(words):
                i += 2
            else:
                report.warn(s, f"unknown virtual_ipaddress option '{key}'")
                i += 1
        vip = VirtualIP(str(iface.with_prefixlen), opts.get("dev"), opts.get("label"), opts.get("scope"),
                        opts.get("broadcast"), s.line)
        if family and vip.family != family[0]:
            report.warn(s, f"address family must match VRRP instance [{words[0]}] - ignoring")
            continue
        if not family:
            family.append(vip.family)
        out.append(vip)
    return tuple(out)


def _bad_line(report: Report, st: Statement, msg: str) -> None:
    """A virtual route or rule that cannot be read: keepalived logs it and runs without it."""
    report.warn(st, f"{msg}; this line is ignored")

def virtual_route(st: Statement, report: Report) -> VirtualRoute | None:
    """keepalived's route syntax (ip route's words): [src IP] [to] PREFIX [via|gw IP
    [or IP...]] [dev IF] [metric N] [table N] [scope S], or blackhole/unreachable/prohibit
    PREFIX. Other options of ip route are warned about and left out of the route."""
    words = list(st.words)
    kw: dict[str, object] = {}
    alt: list[str] = []
    dst = None
    while words:
        w = words.pop(0)
        if w in ("blackhole", "unreachable", "prohibit") and dst is None:
            kw["kind"] = w
            continue
        if w == "no_track":
            continue  # pylvs does not watch the route once installed: nothing to turn off
        if w == "or":
            if not words or not is_address(words[0]):
                _bad_line(report, st, "virtual_routes: 'or' needs a gateway address")
                return None
            alt.append(words.pop(0))
            continue
        if w in ("onlink", "pervasive"):
            report.warn(st, f"virtual_routes: '{w}' is not supported by pylvs; left out")
            continue
        if w in ("mtu", "advmss", "rtt", "rttvar", "reordering", "window", "cwnd", "ssthresh",
                 "realms", "rto_min", "initcwnd", "initrwnd", "features", "quickack",
                 "congctl", "pref", "protocol", "expires", "encap", "fastopen_no_cookie",
                 "nexthop", "weight", "tos", "dsfield", "ttl-propagate"):
            report.warn(st, f"virtual_routes: '{w}' is not supported by pylvs; left out")
            if words:
                words.pop(0)
            continue
        if w in ("src", "via", "gw", "dev", "metric", "table", "scope", "to"):
            if not words:
                _bad_line(report, st, f"virtual_routes: '{w}' needs a value")
                return None
            v = words.pop(0)
            if w == "to":
                dst = v
            elif w in ("src", "via", "gw"):
                if not is_address(v):
                    _bad_line(report, st, f"virtual_routes: invalid IP address '{v}'")
                    return None
                kw["via" if w == "gw" else w] = v
            elif w in ("metric", "table"):
                try:
                    kw[w] = int(v)
                except ValueError:
                    _bad_line(report, st, f"virtual_routes: invalid {w} '{v}'")
                    return None
            else:
                kw[w] = v
            continue
        if dst is None:
            dst = w
            continue
        _bad_line(report, st, f"virtual_routes: unknown word '{w}'")
        return None
    if dst is None:
        _bad_line(report, st, "virtual_routes: a route needs a destination")
        return None
    if dst != "default":
        try:
            ipaddress.ip_network(dst, strict=False)
        except ValueError:
            _bad_line(report, st, f"virtual_routes: invalid destination '{dst}'")
            return None
    if alt and "via" not in kw:
        _bad_line(report, st, "virtual_routes: 'or' without a first gateway (via)")
        return None
    return VirtualRoute(dst, line=st.line, alt_via=tuple(alt), **kw)  # type: ignore[arg-type]

def virtual_rule(st: Statement, report: Report) -> VirtualRule | None:
    """ip rule's words: from/to PREFIX, table N, preference|priority|pref N, iif/oif IF,
    fwmark N[/MASK]; others are warned about and left out of the rule."""
    words = list(st.words)
    kw: dict[str, object] = {}
    while words:
        w = words.pop(0)
        if w == "no_track":
            continue
        if not words:
            _bad_line(report, st, f"virtual_rules: '{w}' needs a value")
            return None
        v = words.pop(0)
        try:
            if w in ("from", "to"):
                if v != "all":
                    net = ipaddress.ip_network(v, strict=False)
                    kw["src" if w == "from" else "dst"] = f"{net.network_address}/{net.prefixlen}"
            elif w in ("table", "lookup"):
                kw["table"] = {"main": 254, "local": 255, "default": 253}.get(v) or int(v)
            elif w in ("preference", "priority", "pref", "order"):
                kw["priority"] = int(v)
            elif w in ("iif", "oif"):
                kw[w] = v
            elif w == "fwmark":
                mark, _, mask = v.partition("/")
                kw["fwmark"] = int(mark, 0)
                if mask:
                    kw["fwmask"] = int(mask, 0)
            else:
                report.warn(st, f"virtual_rules: '{w}' is not supported by pylvs; left out")
        except ValueError:
            _bad_line(report, st, f"virtual_rules: invalid {w} '{v}'")
            return None
    if kw.get("table") is None:
        _bad_line(report, st, "virtual_rules: a rule needs a table")
        return None
    return VirtualRule(line=st.line, **kw)  # type: ignore[arg-type]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Keywords keepalived 2.2 accepts in an instance that pylvs does not act on (kept in ``other``).
_INSTANCE_ACCEPTED = _words("""
use_ipvlan native_ipv6 track_bfd track_src_ip
unicast_ttl old_unicast_checksum check_unicast_src lvs_sync_daemon_interface garp_lower_prio_delay
garp_extra_if accept no_accept strict_mode preempt debug notify_deleted
notify_master_rx_lower_pri kernel_rx_buf_size linkbeat_use_polling unicast_fault_no_peer
notify_priority_changes down_timer_adverts promote_secondaries sync_group_tracking_weight
vmac_garp_intvl unicast_peer_ttl
""")

_SYNC_ACCEPTED = _words("global_tracking sync_group_tracking_weight notify_priority_changes track_bfd")

_NOTIFY = ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop")


def _authentication(st: Statement, kw: dict[str, object], report: Report) -> None:
    for a in st.block or ():
        if a.keyword == "auth_type":
            if not a.args:
                report.error(a, f"'{a.keyword}' needs a value")
            t = (a.args[0] if a.args else "").upper()
            if t not in ("PASS", "AH"):
                report.error(a, f"unknown auth_type '{t}'")
            kw["auth_type"] = t
        elif a.keyword == "auth_pass":
            pw = " ".join(a.args)
            if len(pw) > 8:
                report.warn(a, "Truncating auth_pass to 8 characters")
            kw["auth_pass"] = pw
        else:
            report.warn(a, f"Unknown keyword '{a.keyword}'")


def _instance_statement(s: Statement, kw: dict[str, object], other: list[Statement],
                        family: list[int], report: Report) -> None:
    """One keyword of a vrrp_instance into ``kw``. A setting whose value is bad is reset to its
    default (``None`` here) before :class:`Invalid` is raised, as keepalived leaves it."""
    k = s.keyword
    if k == "state":
        if not s.args:
            report.error(s, f"'{k}' needs a value")
        v = (s.args[0] if s.args else "").upper()
        if v not in ("MASTER", "BACKUP"):
            raise Invalid(s, f"state must be MASTER or BACKUP, not '{v}'")
        kw[k] = v
        return
    if k in _INSTANCE_SETTINGS:
        kw[k] = None
        kw[k] = _INSTANCE_SETTINGS[k](s)
    elif k == "authentication":
        _authentication(s, kw, report)
    elif k == "virtual_ipaddress":
        kw[k] = vips(s, family, report)
    elif k == "virtual_ipaddress_excluded":
        kw[k] = vips(s, [], report)
    elif k in ("mcast_src_ip", "unicast_src_ip"):
        kw[k] = None
        a0 = arg(s)
        kw[k] = str(address(s, a0, VRRP_WORDING)) if a0 else None
    elif k == "unicast_peer":
        peers = []
        for p in s.block or ():
            try:
                peers.append(str(address(p, p.keyword, VRRP_WORDING)))
            except Invalid as exc:
                report.invalid(exc)
        kw[k] = tuple(peers)
    elif k == "track_interface":
        kw[k] = interface_refs(s, report)
    elif k == "track_script":
        kw[k] = script_refs(s, report)
    elif k == "track_file":
        kw[k] = file_refs(s, report)
    elif k == "track_process":
        kw[k] = file_refs(s, report, "track_process")
    elif k == "virtual_routes":
        kw[k] = tuple(r for r in (virtual_route(x, report) for x in s.block or ()) if r)
    elif k == "virtual_rules":
        kw[k] = tuple(r for r in (virtual_rule(x, report) for x in s.block or ()) if r)
    elif k in ("lower_prio_no_advert", "higher_prio_send_advert", "smtp_alert"):
        kw[k] = s.flag
    elif k in ("nopreempt", "dont_track_primary", "skip_check_adv_addr", "use_vmac", "vmac_xmit_base"):
        kw[k] = True
        if k == "use_vmac" and s.args:
            kw["vmac_name"] = s.args[0]
    elif k in _INSTANCE_ACCEPTED:
        if k in UNSUPPORTED:
            report.warn(s, f"'{k}' accepted but not supported by pylvs yet; ignored")
        other.append(s)
    else:
        report.warn(s, f"Unknown keyword '{k}'")


def _int(lo: int, hi: int) -> Callable[[Statement], object]:
    return lambda s: integer(s, lo, hi, wording=VRRP_WORDING)


def _float(lo: float, hi: float) -> Callable[[Statement], object]:
    return lambda s: number(s, lo, hi, wording=VRRP_WORDING)


# Settings read by one value reader each (keyword -> reader).
_INSTANCE_SETTINGS: dict[str, Callable[[Statement], object]] = {
    "interface": arg,
    "virtual_router_id": _int(1, 255),
    "priority": _int(1, 255),
    "advert_int": _float(0.01, 255),
    "version": _int(2, 3),
    "preempt_delay": _float(0, 1000),
    **dict.fromkeys((*_NOTIFY, "notify_master_rx_lower_pri"), command),
    "garp_master_delay": _float(0, 86400),
    "garp_master_refresh": _float(0, 86400),
    **dict.fromkeys(("garp_master_repeat", "garp_master_refresh_repeat", "garp_lower_prio_repeat"),
                    _int(0, 65535)),
}


def vrrp_instance(st: Statement, report: Report) -> VRRPInstance | None:
    if not st.args:
        report.error(st, "vrrp_instance needs a name")
        return None
    name = st.args[0]
    kw: dict[str, object] = {}
    other: list[Statement] = []
    family: list[int] = []
    for s in st.block or ():
        try:
            _instance_statement(s, kw, other, family, report)
        except Invalid as exc:
            report.invalid(exc)
    given = set(kw)
    kw = {k: v for k, v in kw.items() if v is not None}
    inst = VRRPInstance(name, other=tuple(other), file=st.file, line=st.line, **kw)  # type: ignore[arg-type]
    if not inst.virtual_router_id:
        if "virtual_router_id" not in given:  # an invalid one was reported where it stands
            report.error(st, f"({name}) the virtual router id must be set")
        return None
    if inst.state == "MASTER" and inst.nopreempt:
        report.warn(st, f"({name}) Warning - nopreempt will not work with initial state MASTER - clearing")
        inst = dataclasses.replace(inst, nopreempt=False)
    if inst.state == "MASTER" and inst.preempt_delay:
        report.warn(st, f"({name}) Warning - preempt delay will not work with initial state MASTER - clearing")
        inst = dataclasses.replace(inst, preempt_delay=0.0)
    if inst.auth_type == "AH":
        report.warn(st, f"({name}) AH authentication is not supported by pylvs (IPsec AH is deprecated in RFC 3768); running without")
        if inst.state == "MASTER":
            report.warn(st, f"({name}) Initial state master is incompatible with AH authentication - clearing")
            inst = dataclasses.replace(inst, state="BACKUP")
    if not inst.virtual_ipaddress:
        report.warn(st, f"({name}) No VIP specified; at least one is sensible")
    return inst


def sync_group(st: Statement, report: Report) -> VRRPSyncGroup | None:
    if not st.args:
        report.error(st, "vrrp_sync_group needs a name")
        return None
    kw: dict[str, object] = {}
    other: list[Statement] = []
    group: tuple[str, ...] = ()
    for s in st.block or ():
        k = s.keyword
        if k == "group":
            group = tuple(w for c in (s.block or ()) for w in c.words)
        elif k in _NOTIFY:
            kw[k] = None
            try:
                kw[k] = command(s)
            except Invalid as exc:
                report.invalid(exc)
        elif k == "track_script":
            kw[k] = script_refs(s, report)
        elif k == "track_interface":
            kw[k] = interface_refs(s, report)
        elif k == "track_file":
            kw[k] = file_refs(s, report)
        elif k == "track_process":
            kw[k] = file_refs(s, report, "track_process")
        elif k == "smtp_alert":
            kw[k] = s.flag
        elif k in _SYNC_ACCEPTED:
            other.append(s)
        else:
            report.warn(s, f"Unknown keyword '{k}'")
    return VRRPSyncGroup(st.args[0], group, other=tuple(other), line=st.line, **kw)  # type: ignore[arg-type]
