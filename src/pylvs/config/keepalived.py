"""keepalived.conf: global_defs, vrrp_script, track_file, vrrp_instance and vrrp_sync_group as typed,
immutable dataclasses, with keepalived's defaults and its file:line diagnostics.

``load(path)`` returns a :class:`KeepalivedConfig` or raises :class:`ConfigError`; unknown
keywords are warnings (keepalived logs them and runs), malformed values and braces are errors
(nothing starts). Top-level blocks this part does not interpret (virtual_server,
virtual_server_group, static_ipaddress, ...) are kept as generic :class:`Statement` trees in
``other``; :mod:`pylvs.config.lvs` interprets the virtual_server part from them (``load_full``).

Not for: running anything, or checking the host (interfaces, script paths): that is the driver's.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pylvs.config.grammar import ConfigError, Diagnostic, Reader, Statement, parse_tree

if TYPE_CHECKING:
    from pylvs.config.lvs import LVSConfig

__all__ = [
    "ConfigError",
    "Diagnostic",
    "GlobalDefs",
    "KeepalivedConfig",
    "LVSSyncDaemon",
    "Statement",
    "TrackFile",
    "TrackFileRef",
    "TrackInterface",
    "TrackProcess",
    "TrackScript",
    "VRRPInstance",
    "VRRPScript",
    "VRRPSyncGroup",
    "VirtualIP",
    "VirtualRoute",
    "VirtualRule",
    "load",
    "load_full",
    "parse_text",
]


@dataclass(frozen=True, slots=True)
class GlobalDefs:
    router_id: str | None = None
    notification_email: tuple[str, ...] = ()
    notification_email_from: str | None = None
    smtp_server: str | None = None
    smtp_connect_timeout: int = 30
    smtp_helo_name: str | None = None
    # defaults of the per-instance / per-server smtp_alert (None: not set)
    smtp_alert: bool | None = None
    smtp_alert_vrrp: bool | None = None
    smtp_alert_checker: bool | None = None
    no_email_faults: bool = False
    vrrp_mcast_group4: str = "224.0.0.18"
    vrrp_mcast_group6: str = "ff02::12"
    vrrp_version: int = 2
    vrrp_garp_master_delay: float = 5.0
    vrrp_garp_master_repeat: int = 5
    vrrp_garp_master_refresh: float = 0.0
    vrrp_garp_master_refresh_repeat: int = 1
    vrrp_garp_lower_prio_repeat: int = 0
    vrrp_garp_interval: float = 0.0  # between the gratuitous ARPs of a burst (0: back to back)
    vrrp_gna_interval: float = 0.0  # the same for unsolicited neighbour advertisements
    vrrp_lower_prio_no_advert: bool = False
    vrrp_higher_prio_send_advert: bool = False
    vrrp_skip_check_adv_addr: bool = False
    vrrp_strict: bool = False
    enable_script_security: bool = False
    script_user: str | None = None
    lvs_sync_daemon: LVSSyncDaemon | None = None
    # LVS table settings: timeouts (tcp, tcpfin, udp; None: leave), flush at start, and at stop
    # "all" (flush the table), "VS" (each virtual server) or None (each virtual server too)
    lvs_timeouts: tuple[int | None, int | None, int | None] | None = None
    lvs_flush: bool = False
    lvs_flush_on_stop: str | None = None
    # notify FIFOs (path) and the programs started to read them
    notify_fifo: str | None = None
    notify_fifo_script: str | None = None
    vrrp_notify_fifo: str | None = None
    vrrp_notify_fifo_script: str | None = None
    lvs_notify_fifo: str | None = None
    lvs_notify_fifo_script: str | None = None
    other: tuple[Statement, ...] = ()


@dataclass(frozen=True, slots=True)
class LVSSyncDaemon:
    """``lvs_sync_daemon IF INSTANCE [id N] [maxlen N] [port N] [ttl N] [group IP]``: the IPVS
    connection sync daemon follows the VRRP instance (master while it is MASTER, else backup)."""

    interface: str
    instance: str
    syncid: int = 0
    maxlen: int = 0
    port: int = 0
    ttl: int = 0
    group: str = ""


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
class TrackInterface:
    name: str
    weight: int = 0  # 0: interface down puts the instance in FAULT


@dataclass(frozen=True, slots=True)
class TrackScript:
    name: str
    weight: int | None = None  # None: use the vrrp_script's own weight


@dataclass(frozen=True, slots=True)
class TrackFileRef:
    """``track_file { NAME [weight W [reverse]] }`` in an instance or sync group."""

    name: str
    weight: int | None = None  # None: the track_file's own weight (and its reverse)
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class TrackFile:
    """A top-level ``track_file NAME { file PATH; weight W [reverse]; init_file [V] [overwrite] }``:
    a number an operator (or a script) writes to a file moves the priority of the instances
    tracking it, or with weight 0 puts them in FAULT while it is not 0."""

    name: str
    path: str
    weight: int = 1
    reverse: bool = False
    init_value: int | None = None  # None: leave the file alone at start
    init_overwrite: bool = False
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class TrackProcess:
    """A top-level ``vrrp_track_process NAME { process CMD [ARGS]; param_match; weight; quorum;
    quorum_max; fork_delay; terminate_delay; delay; full_command }``."""

    name: str
    process: str
    params: tuple[str, ...] = ()
    param_match: str | None = None  # None, "partial" or "initial"
    weight: int = 1
    reverse: bool = False
    quorum: int = 1
    quorum_max: int = 2**31 - 1
    fork_delay: float = 0.0
    terminate_delay: float = 0.0
    full_command: bool = False
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class VRRPScript:
    name: str
    script: str
    interval: float = 1.0
    timeout: float | None = None
    weight: int = 0
    rise: int = 1
    fall: int = 1
    user: str | None = None
    init_fail: bool = False
    file: str = ""
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


@dataclass(frozen=True, slots=True)
class KeepalivedConfig:
    global_defs: GlobalDefs
    vrrp_scripts: tuple[VRRPScript, ...]
    vrrp_instances: tuple[VRRPInstance, ...]
    vrrp_sync_groups: tuple[VRRPSyncGroup, ...]
    other: tuple[Statement, ...]  # virtual_server & co, for the checker part
    diagnostics: tuple[Diagnostic, ...]
    files: tuple[str, ...]
    track_files: tuple[TrackFile, ...] = ()
    track_processes: tuple[TrackProcess, ...] = ()

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")

    def instance(self, name: str) -> VRRPInstance:
        for i in self.vrrp_instances:
            if i.name == name:
                return i
        raise KeyError(name)

    def script(self, name: str) -> VRRPScript | None:
        for s in self.vrrp_scripts:
            if s.name == name:
                return s
        return None


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Keywords keepalived 2.2 accepts that this part does not act on (kept in ``other``).
_GLOBAL_ACCEPTED = _words("""
lvs_id lvs_sync_daemon vrrp_garp_interval vrrp_gna_interval vrrp_min_garp
vrrp_garp_lower_prio_delay vrrp_iptables vrrp_ipsets vrrp_check_unicast_src vrrp_priority
checker_priority bfd_priority vrrp_no_swap checker_no_swap bfd_no_swap vrrp_rt_priority
checker_rt_priority bfd_rt_priority vrrp_cpu_affinity checker_cpu_affinity bfd_cpu_affinity
snmp_socket enable_snmp_keepalived enable_snmp_vrrp enable_snmp_checker enable_snmp_rfc
enable_snmp_rfcv2 enable_snmp_rfcv3 enable_traps enable_dbus dbus_service_name notify_fifo
notify_fifo_script vrrp_notify_fifo vrrp_notify_fifo_script lvs_notify_fifo lvs_notify_fifo_script
max_auto_priority min_auto_priority_delay dynamic_interfaces default_interface
vrrp_netlink_cmd_rcv_bufs vrrp_netlink_cmd_rcv_bufs_force vrrp_netlink_monitor_rcv_bufs
vrrp_netlink_monitor_rcv_bufs_force lvs_netlink_cmd_rcv_bufs lvs_netlink_monitor_rcv_bufs
process_monitor_rcv_bufs vrrp_startup_delay process_names process_name vrrp_process_name
checker_process_name bfd_process_name instance net_namespace namespace_with_ipsets nftables
nftables_priority nftables_counters nftables_ifindex vrrp_rx_bufs_policy vrrp_rx_bufs_multiplier
umask vrrp_notify_priority_changes no_checker_emails vrrp_tx_bufs vrrp_iptables_no_sync
script_security use_pid_dir linkbeat_use_polling local_name data_use_instance vrrp_owner_ignore
random_seed checker_log_all_failures
""")

_INSTANCE_ACCEPTED = _words("""
use_ipvlan native_ipv6 track_bfd track_src_ip
unicast_ttl old_unicast_checksum check_unicast_src lvs_sync_daemon_interface garp_lower_prio_delay
garp_extra_if accept no_accept strict_mode preempt debug notify_deleted
notify_master_rx_lower_pri kernel_rx_buf_size linkbeat_use_polling unicast_fault_no_peer
notify_priority_changes down_timer_adverts promote_secondaries sync_group_tracking_weight
vmac_garp_intvl unicast_peer_ttl
""")

_SYNC_ACCEPTED = _words("global_tracking sync_group_tracking_weight notify_priority_changes track_bfd")

# Accepted keywords whose effect pylvs does not reproduce yet: a warning says so, with file:line,
# rather than letting an operator believe they are in force.
_UNSUPPORTED = _words("""
track_bfd accept no_accept strict_mode
use_ipvlan garp_extra_if unicast_fault_no_peer old_unicast_checksum
notify_deleted track_src_ip
vrrp_strict enable_snmp_keepalived enable_snmp_vrrp enable_snmp_checker enable_snmp_rfc
enable_snmp_rfcv2 enable_snmp_rfcv3 enable_traps enable_dbus vrrp_iptables
vrrp_ipsets nftables net_namespace instance
""")

# Top-level blocks owned by other parts of pylvs (or not implemented): parsed, kept, reported.
_OTHER_TOPLEVEL = _words("""
virtual_server virtual_server_group static_ipaddress static_routes static_rules linkbeat_interfaces
garp_group bfd_instance net_namespace
""")

# Interpreted by pylvs.config.lvs (the health-check part) from ``other``.
_LVS_TOPLEVEL = frozenset({"virtual_server", "virtual_server_group"})


class _Interp:
    def __init__(self, reader: Reader) -> None:
        self.r = reader

    def warn(self, st: Statement, msg: str) -> None:
        self.r.warn(st.file, st.line, msg)

    def error(self, st: Statement, msg: str) -> None:
        self.r.error(st.file, st.line, msg)

    def unknown(self, st: Statement) -> None:
        self.warn(st, f"Unknown keyword '{st.keyword}'")

    # -- value helpers --

    def arg(self, st: Statement) -> str | None:
        if not st.args:
            self.error(st, f"'{st.keyword}' needs a value")
            return None
        return st.args[0]

    def int_(self, st: Statement, lo: int, hi: int) -> int | None:
        v = self.arg(st)
        if v is None:
            return None
        try:
            n = int(v)
        except ValueError:
            self.error(st, f"'{st.keyword}': invalid number '{v}'")
            return None
        if not lo <= n <= hi:
            self.error(st, f"'{st.keyword}': number '{n}' outside range [{lo}, {hi}]")
            return None
        return n

    def float_(self, st: Statement, lo: float, hi: float) -> float | None:
        v = self.arg(st)
        if v is None:
            return None
        try:
            n = float(v)
        except ValueError:
            self.error(st, f"'{st.keyword}': invalid number '{v}'")
            return None
        if not lo <= n <= hi:
            self.error(st, f"'{st.keyword}': number '{v}' outside range [{lo:.6g}, {hi:.10g}]")
            return None
        return n

    def ip(self, st: Statement, text: str) -> str | None:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self.error(st, f"'{st.keyword}': invalid IP address '{text}'")
            return None

    def script_cmd(self, st: Statement) -> str | None:
        if not st.args:
            self.error(st, f"'{st.keyword}' needs a script")
            return None
        return " ".join(st.args)

    # -- blocks --

    def global_defs(self, st: Statement) -> GlobalDefs:
        kw: dict[str, object] = {}
        other: list[Statement] = []
        for s in st.block or ():
            k = s.keyword
            if k == "router_id":
                kw[k] = self.arg(s)
            elif k == "notification_email":
                kw[k] = tuple(c.keyword for c in (s.block or ())) + tuple(s.args)
            elif k in ("notification_email_from", "smtp_server", "script_user"):
                kw[k] = " ".join(s.args) if s.args else self.arg(s)
            elif k in ("smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker"):
                kw[k] = s.flag
            elif k == "no_email_faults":
                kw[k] = True
            elif k == "smtp_helo_name":
                kw[k] = self.arg(s)
            elif k == "smtp_connect_timeout":
                kw[k] = self.int_(s, 1, 3600) or 30
            elif k == "vrrp_mcast_group4" or k == "vrrp_mcast_group6":
                addr = self.arg(s)
                if addr is not None and self.ip(s, addr) is not None:
                    kw[k] = addr
            elif k == "vrrp_version":
                kw[k] = self.int_(s, 2, 3) or 2
            elif k in ("vrrp_garp_master_delay", "vrrp_garp_master_refresh"):
                v = self.float_(s, 0, 86400)
                if v is not None:
                    kw[k] = v
            elif k in ("vrrp_garp_master_repeat", "vrrp_garp_master_refresh_repeat", "vrrp_garp_lower_prio_repeat"):
                v2 = self.int_(s, 0, 65535)
                if v2 is not None:
                    kw[k] = v2
            elif k in ("vrrp_garp_interval", "vrrp_gna_interval"):
                v = self.float_(s, 0.000001, 4294.967295)
                if v is not None:
                    kw[k] = v
            elif k in ("vrrp_lower_prio_no_advert", "vrrp_higher_prio_send_advert"):
                kw[k] = s.flag
            elif k in ("notify_fifo", "vrrp_notify_fifo", "lvs_notify_fifo"):
                kw[k] = self.arg(s)
                if len(s.args) > 1:
                    self.warn(s, f"'{k}': the FIFO's user and group are not set by pylvs (root's)")
            elif k in ("notify_fifo_script", "vrrp_notify_fifo_script", "lvs_notify_fifo_script"):
                kw[k] = s.args[0] if s.args else self.script_cmd(s)
                if len(s.args) > 1:
                    self.warn(s, f"'{k}': the script runs as root; user and group are ignored")
            elif k == "lvs_timeouts":
                t = self.lvs_timeouts(s)
                if t is not None:
                    kw[k] = t
            elif k == "lvs_flush":
                kw[k] = True
            elif k in ("lvs_flush_on_stop", "lvs_flush_onstop"):
                if s.args and s.args[0] != "VS":
                    self.error(s, f"'{k}': unknown option '{s.args[0]}' (only VS)")
                else:
                    kw["lvs_flush_on_stop"] = "VS" if s.args else "all"
            elif k == "lvs_sync_daemon":
                sd = self.lvs_sync_daemon(s)
                if sd is not None:
                    kw[k] = sd
            elif k in ("vrrp_skip_check_adv_addr", "vrrp_strict", "enable_script_security"):
                kw[k] = True
                if k == "vrrp_strict":
                    self.warn(s, "'vrrp_strict' accepted; its extra RFC checks are not enforced by pylvs yet")
            elif k in _GLOBAL_ACCEPTED:
                if k in _UNSUPPORTED:
                    self.warn(s, f"'{k}' accepted but not supported by pylvs yet; ignored")
                other.append(s)
            else:
                self.unknown(s)
        return GlobalDefs(other=tuple(other), **kw)  # type: ignore[arg-type]

    def lvs_timeouts(self, st: Statement) -> tuple[int | None, int | None, int | None] | None:
        """``lvs_timeouts [tcp SECS] [tcpfin SECS] [udp SECS]``, at least one."""
        got: dict[str, int] = {}
        words = list(st.args)
        while words:
            w = words.pop(0)
            if w not in ("tcp", "tcpfin", "udp") or not words:
                self.error(st, f"lvs_timeouts: expected tcp|tcpfin|udp SECS, not '{w}'")
                return None
            v = words.pop(0)
            try:
                n = int(v)
            except ValueError:
                n = -1
            if not 1 <= n <= 2**31 // 1000:
                self.error(st, f"lvs_timeouts: invalid {w} timeout '{v}'")
                return None
            got[w] = n
        if not got:
            self.error(st, "lvs_timeouts needs at least one of tcp, tcpfin, udp")
            return None
        return got.get("tcp"), got.get("tcpfin"), got.get("udp")

    def lvs_sync_daemon(self, st: Statement) -> LVSSyncDaemon | None:
        args = list(st.args)
        if len(args) > 1 and args[1] == "inst":  # keepalived 2.2's optional word before it
            del args[1]
        if len(args) < 2 or args[1] in ("id", "maxlen", "port", "ttl", "group"):
            self.error(st, "lvs_sync_daemon needs an interface and a vrrp_instance")
            return None
        if tuple(args) != st.args:
            st = dataclasses.replace(st, args=tuple(args))
        kw: dict[str, object] = {}
        limits = {"id": ("syncid", 0, 255), "maxlen": ("maxlen", 1, 65535 - 20 - 8),
                  "port": ("port", 1, 65535), "ttl": ("ttl", 1, 255)}
        rest = list(st.args[2:])
        while rest:
            word = rest.pop(0)
            if not rest:
                self.error(st, f"lvs_sync_daemon: '{word}' needs a value")
                return None
            value = rest.pop(0)
            if word == "group":
                if self.ip(st, value) is None:
                    return None
                kw["group"] = value
            elif word in limits:
                name, lo, hi = limits[word]
                try:
                    n = int(value)
                except ValueError:
                    n = -1
                if not lo <= n <= hi:
                    self.error(st, f"lvs_sync_daemon: invalid {word} '{value}'")
                    return None
                kw[name] = n
            else:
                self.error(st, f"lvs_sync_daemon: unknown option '{word}'")
                return None
        return LVSSyncDaemon(st.args[0], st.args[1], **kw)  # type: ignore[arg-type]

    def vrrp_script(self, st: Statement) -> VRRPScript | None:
        if not st.args:
            self.error(st, "vrrp_script needs a name")
            return None
        kw: dict[str, object] = {}
        script = None
        for s in st.block or ():
            k = s.keyword
            if k == "script":
                script = self.script_cmd(s)
            elif k == "interval":
                kw[k] = self.float_(s, 0.000001, 86400) or 1.0
            elif k == "timeout":
                kw[k] = self.float_(s, 0.000001, 86400)
            elif k == "weight":
                v = self.int_(s, -253, 253)
                if v is not None:
                    kw[k] = v
                if len(s.args) > 1 and s.args[1] != "reverse":
                    self.warn(s, f"unexpected '{s.args[1]}' after weight")
            elif k in ("rise", "fall"):
                kw[k] = self.int_(s, 1, 65535) or 1
            elif k == "user":
                kw[k] = self.arg(s)
            elif k == "init_fail":
                kw[k] = True
            else:
                self.unknown(s)
        if script is None:
            self.error(st, f"vrrp_script {st.args[0]} has no script")
            return None
        return VRRPScript(st.args[0], script, file=st.file, line=st.line, **kw)  # type: ignore[arg-type]

    def track_process(self, st: Statement) -> TrackProcess | None:
        if not st.args:
            self.error(st, "vrrp_track_process needs a name")
            return None
        kw: dict[str, object] = {}
        process = None
        for s in st.block or ():
            k = s.keyword
            if k == "process":
                if not s.args:
                    self.error(s, "'process' needs a command")
                    continue
                process = s.args[0]
                kw["params"] = tuple(s.args[1:])
            elif k == "param_match":
                v = self.arg(s)
                if v not in ("initial", "partial"):
                    self.error(s, f"param_match must be initial or partial, not '{v}'")
                    continue
                kw[k] = v
            elif k == "weight":
                w = self.int_(s, -254, 254)
                if w is not None:
                    kw[k] = w
                if len(s.args) > 1:
                    if s.args[1] == "reverse":
                        kw["reverse"] = True
                    else:
                        self.warn(s, f"unexpected '{s.args[1]}' after weight")
            elif k in ("quorum", "quorum_max"):
                n = self.int_(s, 0, 2**31 - 1)
                if n is not None:
                    kw[k] = n
            elif k in ("fork_delay", "terminate_delay", "delay"):
                d = self.float_(s, 0, 3600)
                if d is not None:
                    if k != "terminate_delay":
                        kw["fork_delay"] = d
                    if k != "fork_delay":
                        kw["terminate_delay"] = d
            elif k == "full_command":
                kw[k] = True
            else:
                self.unknown(s)
        if process is None:
            self.error(st, f"vrrp_track_process {st.args[0]} has no process")
            return None
        tp = TrackProcess(st.args[0], process, file=st.file, line=st.line, **kw)  # type: ignore[arg-type]
        if tp.quorum > tp.quorum_max:
            self.error(st, f"vrrp_track_process {tp.name}: quorum {tp.quorum} above quorum_max {tp.quorum_max}")
            return None
        return tp

    def track_file(self, st: Statement) -> TrackFile | None:
        if not st.args:
            self.error(st, f"{st.keyword} needs a name")
            return None
        kw: dict[str, object] = {}
        path = None
        for s in st.block or ():
            k = s.keyword
            if k == "file":
                path = self.arg(s)
            elif k == "weight":
                v = self.int_(s, -2147483647, 2147483647)
                if v is not None:
                    kw[k] = v
                if len(s.args) > 1:
                    if s.args[1] == "reverse":
                        kw["reverse"] = True
                    else:
                        self.warn(s, f"unexpected '{s.args[1]}' after weight")
            elif k == "init_file":
                args = list(s.args)
                if args and args[-1] == "overwrite":
                    kw["init_overwrite"] = True
                    args.pop()
                value = 0
                if args:
                    try:
                        value = int(args[0], 0)
                    except ValueError:
                        self.error(s, f"init_file value '{args[0]}' is not a number")
                        continue
                kw["init_value"] = value
            else:
                self.unknown(s)
        if not path:
            self.error(st, f"track_file {st.args[0]} has no file")
            return None
        return TrackFile(st.args[0], path, file=st.file, line=st.line, **kw)  # type: ignore[arg-type]

    def track_weight(self, s: Statement, what: str) -> int | None:
        """The ``weight W`` after a tracked name (None when absent or malformed)."""
        if len(s.args) >= 2 and s.args[0] == "weight":
            try:
                return int(s.args[1])
            except ValueError:
                self.error(s, f"{what} {s.keyword}: invalid weight '{s.args[1]}'")
        return None

    def bad_line(self, st: Statement, msg: str) -> None:
        """A virtual route or rule that cannot be read: keepalived logs it and runs without it."""
        self.warn(st, f"{msg}; this line is ignored")

    def virtual_route(self, st: Statement) -> VirtualRoute | None:
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
                if not words or not _is_ip(words[0]):
                    self.bad_line(st, "virtual_routes: 'or' needs a gateway address")
                    return None
                alt.append(words.pop(0))
                continue
            if w in ("onlink", "pervasive"):
                self.warn(st, f"virtual_routes: '{w}' is not supported by pylvs; left out")
                continue
            if w in ("mtu", "advmss", "rtt", "rttvar", "reordering", "window", "cwnd", "ssthresh",
                     "realms", "rto_min", "initcwnd", "initrwnd", "features", "quickack",
                     "congctl", "pref", "protocol", "expires", "encap", "fastopen_no_cookie",
                     "nexthop", "weight", "tos", "dsfield", "ttl-propagate"):
                self.warn(st, f"virtual_routes: '{w}' is not supported by pylvs; left out")
                if words:
                    words.pop(0)
                continue
            if w in ("src", "via", "gw", "dev", "metric", "table", "scope", "to"):
                if not words:
                    self.bad_line(st, f"virtual_routes: '{w}' needs a value")
                    return None
                v = words.pop(0)
                if w == "to":
                    dst = v
                elif w in ("src", "via", "gw"):
                    if not _is_ip(v):
                        self.bad_line(st, f"virtual_routes: invalid IP address '{v}'")
                        return None
                    kw["via" if w == "gw" else w] = v
                elif w in ("metric", "table"):
                    try:
                        kw[w] = int(v)
                    except ValueError:
                        self.bad_line(st, f"virtual_routes: invalid {w} '{v}'")
                        return None
                else:
                    kw[w] = v
                continue
            if dst is None:
                dst = w
                continue
            self.bad_line(st, f"virtual_routes: unknown word '{w}'")
            return None
        if dst is None:
            self.bad_line(st, "virtual_routes: a route needs a destination")
            return None
        if dst != "default":
            try:
                ipaddress.ip_network(dst, strict=False)
            except ValueError:
                self.bad_line(st, f"virtual_routes: invalid destination '{dst}'")
                return None
        if alt and "via" not in kw:
            self.bad_line(st, "virtual_routes: 'or' without a first gateway (via)")
            return None
        return VirtualRoute(dst, line=st.line, alt_via=tuple(alt), **kw)  # type: ignore[arg-type]

    def virtual_rule(self, st: Statement) -> VirtualRule | None:
        """ip rule's words: from/to PREFIX, table N, preference|priority|pref N, iif/oif IF,
        fwmark N[/MASK]; others are warned about and left out of the rule."""
        words = list(st.words)
        kw: dict[str, object] = {}
        while words:
            w = words.pop(0)
            if w == "no_track":
                continue
            if not words:
                self.bad_line(st, f"virtual_rules: '{w}' needs a value")
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
                    self.warn(st, f"virtual_rules: '{w}' is not supported by pylvs; left out")
            except ValueError:
                self.bad_line(st, f"virtual_rules: invalid {w} '{v}'")
                return None
        if kw.get("table") is None:
            self.bad_line(st, "virtual_rules: a rule needs a table")
            return None
        return VirtualRule(line=st.line, **kw)  # type: ignore[arg-type]

    def tracks_file(self, st: Statement, what: str = "track_file") -> tuple[TrackFileRef, ...]:
        return tuple(
            TrackFileRef(s.keyword, self.track_weight(s, what),
                         len(s.args) >= 3 and s.args[2] == "reverse")
            for s in st.block or ()
        )

    def vips(self, st: Statement, family: list[int]) -> tuple[VirtualIP, ...]:
        out: list[VirtualIP] = []
        for s in st.block or ():
            words = s.words
            try:
                iface = ipaddress.ip_interface(words[0])
            except ValueError:
                self.error(s, f"VRRP parsed invalid IP {words[0]}")
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
                    self.warn(s, f"unknown virtual_ipaddress option '{key}'")
                    i += 1
            vip = VirtualIP(str(iface.with_prefixlen), opts.get("dev"), opts.get("label"), opts.get("scope"),
                            opts.get("broadcast"), s.line)
            if family and vip.family != family[0]:
                self.warn(s, f"address family must match VRRP instance [{words[0]}] - ignoring")
                continue
            if not family:
                family.append(vip.family)
            out.append(vip)
        return tuple(out)

    def tracks_if(self, st: Statement) -> tuple[TrackInterface, ...]:
        return tuple(TrackInterface(s.keyword, self.track_weight(s, "track_interface") or 0)
                     for s in st.block or ())

    def tracks_script(self, st: Statement) -> tuple[TrackScript, ...]:
        return tuple(TrackScript(s.keyword, self.track_weight(s, "track_script"))
                     for s in st.block or ())

    def vrrp_instance(self, st: Statement) -> VRRPInstance | None:
        if not st.args:
            self.error(st, "vrrp_instance needs a name")
            return None
        name = st.args[0]
        kw: dict[str, object] = {}
        other: list[Statement] = []
        family: list[int] = []
        for s in st.block or ():
            k = s.keyword
            if k == "state":
                v = (self.arg(s) or "").upper()
                if v not in ("MASTER", "BACKUP"):
                    self.error(s, f"state must be MASTER or BACKUP, not '{v}'")
                else:
                    kw[k] = v
            elif k == "interface":
                kw[k] = self.arg(s)
            elif k in ("virtual_router_id", "priority"):
                kw[k] = self.int_(s, 1, 255)
            elif k == "advert_int":
                kw[k] = self.float_(s, 0.01, 255)
            elif k == "version":
                kw[k] = self.int_(s, 2, 3)
            elif k == "nopreempt":
                kw[k] = True
            elif k == "preempt_delay":
                kw[k] = self.float_(s, 0, 1000)
            elif k == "authentication":
                for a in s.block or ():
                    if a.keyword == "auth_type":
                        t = (self.arg(a) or "").upper()
                        if t not in ("PASS", "AH"):
                            self.error(a, f"unknown auth_type '{t}'")
                        kw["auth_type"] = t
                    elif a.keyword == "auth_pass":
                        pw = " ".join(a.args)
                        if len(pw) > 8:
                            self.warn(a, "Truncating auth_pass to 8 characters")
                        kw["auth_pass"] = pw
                    else:
                        self.unknown(a)
            elif k == "virtual_ipaddress":
                kw[k] = self.vips(s, family)
            elif k == "virtual_ipaddress_excluded":
                kw[k] = self.vips(s, [])
            elif k in ("mcast_src_ip", "unicast_src_ip"):
                a0 = self.arg(s)
                kw[k] = self.ip(s, a0) if a0 else None
            elif k == "unicast_peer":
                peers = []
                for p in s.block or ():
                    ip = self.ip(p, p.keyword)
                    if ip:
                        peers.append(ip)
                kw[k] = tuple(peers)
            elif k == "track_interface":
                kw[k] = self.tracks_if(s)
            elif k == "track_script":
                kw[k] = self.tracks_script(s)
            elif k == "track_file":
                kw[k] = self.tracks_file(s)
            elif k == "track_process":
                kw[k] = self.tracks_file(s, "track_process")
            elif k == "virtual_routes":
                kw[k] = tuple(r for r in (self.virtual_route(x) for x in s.block or ()) if r)
            elif k == "virtual_rules":
                kw[k] = tuple(r for r in (self.virtual_rule(x) for x in s.block or ()) if r)
            elif k in ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop",
                       "notify_master_rx_lower_pri"):
                kw[k] = self.script_cmd(s)
            elif k in ("garp_master_delay", "garp_master_refresh"):
                kw[k] = self.float_(s, 0, 86400)
            elif k in ("garp_master_repeat", "garp_master_refresh_repeat", "garp_lower_prio_repeat"):
                kw[k] = self.int_(s, 0, 65535)
            elif k in ("lower_prio_no_advert", "higher_prio_send_advert", "smtp_alert"):
                kw[k] = s.flag
            elif k in ("dont_track_primary", "skip_check_adv_addr", "use_vmac", "vmac_xmit_base"):
                kw[k] = True
                if k == "use_vmac" and s.args:
                    kw["vmac_name"] = s.args[0]
            elif k in _INSTANCE_ACCEPTED:
                if k in _UNSUPPORTED:
                    self.warn(s, f"'{k}' accepted but not supported by pylvs yet; ignored")
                other.append(s)
            else:
                self.unknown(s)
        given = set(kw)
        kw = {k: v for k, v in kw.items() if v is not None}
        inst = VRRPInstance(name, other=tuple(other), file=st.file, line=st.line, **kw)  # type: ignore[arg-type]
        if not inst.virtual_router_id:
            if "virtual_router_id" not in given:  # an invalid one was reported where it stands
                self.error(st, f"({name}) the virtual router id must be set")
            return None
        if inst.state == "MASTER" and inst.nopreempt:
            self.warn(st, f"({name}) Warning - nopreempt will not work with initial state MASTER - clearing")
            inst = _replace(inst, nopreempt=False)
        if inst.state == "MASTER" and inst.preempt_delay:
            self.warn(st, f"({name}) Warning - preempt delay will not work with initial state MASTER - clearing")
            inst = _replace(inst, preempt_delay=0.0)
        if inst.auth_type == "AH":
            self.warn(st, f"({name}) AH authentication is not supported by pylvs (IPsec AH is deprecated in RFC 3768); running without")
            if inst.state == "MASTER":
                self.warn(st, f"({name}) Initial state master is incompatible with AH authentication - clearing")
                inst = _replace(inst, state="BACKUP")
        if not inst.virtual_ipaddress:
            self.warn(st, f"({name}) No VIP specified; at least one is sensible")
        return inst

    def sync_group(self, st: Statement) -> VRRPSyncGroup | None:
        if not st.args:
            self.error(st, "vrrp_sync_group needs a name")
            return None
        kw: dict[str, object] = {}
        other: list[Statement] = []
        group: tuple[str, ...] = ()
        for s in st.block or ():
            k = s.keyword
            if k == "group":
                group = tuple(w for c in (s.block or ()) for w in c.words)
            elif k in ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop"):
                kw[k] = self.script_cmd(s)
            elif k == "track_script":
                kw[k] = self.tracks_script(s)
            elif k == "track_interface":
                kw[k] = self.tracks_if(s)
            elif k == "track_file":
                kw[k] = self.tracks_file(s)
            elif k == "track_process":
                kw[k] = self.tracks_file(s, "track_process")
            elif k == "smtp_alert":
                kw[k] = s.flag
            elif k in _SYNC_ACCEPTED:
                other.append(s)
            else:
                self.unknown(s)
        return VRRPSyncGroup(st.args[0], group, other=tuple(other), line=st.line, **kw)  # type: ignore[arg-type]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _replace(inst: VRRPInstance, **kw: object) -> VRRPInstance:
    import dataclasses
    return dataclasses.replace(inst, **kw)  # type: ignore[arg-type]


def _interpret(tree: tuple[Statement, ...], reader: Reader) -> KeepalivedConfig:
    it = _Interp(reader)
    g = GlobalDefs()
    scripts: list[VRRPScript] = []
    track_files: list[TrackFile] = []
    track_processes: list[TrackProcess] = []
    instances: list[VRRPInstance] = []
    groups: list[VRRPSyncGroup] = []
    other: list[Statement] = []
    seen_vrid: dict[tuple[str | None, int, int], str] = {}
    for st in tree:
        k = st.keyword
        if k == "global_defs":
            g = it.global_defs(st)
        elif k == "vrrp_script":
            sc = it.vrrp_script(st)
            if sc:
                scripts.append(sc)
        elif k == "vrrp_track_process":
            tp = it.track_process(st)
            if tp:
                track_processes.append(tp)
        elif k in ("track_file", "vrrp_track_file"):
            tf = it.track_file(st)
            if tf:
                track_files.append(tf)
        elif k == "vrrp_instance":
            inst = it.vrrp_instance(st)
            if inst:
                key = (inst.interface, inst.family, inst.virtual_router_id)
                if key in seen_vrid:
                    it.error(st, f"({inst.name}) VRID {inst.virtual_router_id} on {inst.interface} already used by {seen_vrid[key]}")
                seen_vrid[key] = inst.name
                instances.append(inst)
        elif k == "vrrp_sync_group":
            sg = it.sync_group(st)
            if sg:
                groups.append(sg)
        elif k in _OTHER_TOPLEVEL:
            other.append(st)
        else:
            it.unknown(st)
            if st.block is not None:
                other.append(st)
    names = {i.name for i in instances}
    scripts_by = {s.name for s in scripts}
    for sg in groups:
        for n in sg.group:
            if n not in names:
                reader.warn(reader.files[0] if reader.files else "", sg.line, f"vrrp_sync_group {sg.name}: unknown vrrp_instance {n}")
    for inst in instances:
        for ts in inst.track_script:
            if ts.name not in scripts_by:
                reader.warn(inst.file, inst.line, f"({inst.name}) track_script {ts.name} not found, ignoring")
    for inst in instances:
        for st in inst.other:
            if st.keyword != "lvs_sync_daemon_interface" or not st.args:
                continue
            if g.lvs_sync_daemon is None:
                it.warn(st, f"({inst.name}) lvs_sync_daemon_interface is deprecated: "
                            f"use 'lvs_sync_daemon {st.args[0]} {inst.name}' in global_defs")
                g = dataclasses.replace(g, lvs_sync_daemon=LVSSyncDaemon(st.args[0], inst.name))
            else:
                it.warn(st, f"({inst.name}) lvs_sync_daemon_interface ignored: the sync daemon "
                            f"already follows {g.lvs_sync_daemon.instance}")
    sd = g.lvs_sync_daemon
    if sd is not None and sd.instance not in names:
        reader.warn(reader.files[0] if reader.files else "", 0,
                    f"lvs_sync_daemon: unknown vrrp_instance {sd.instance}; no sync daemon runs")
    files_by = {f.name for f in track_files}
    for name, line, where, refs in (
        *((i.name, i.line, i.file, i.track_file) for i in instances),
        *((g.name, g.line, reader.files[0] if reader.files else "", g.track_file) for g in groups),
    ):
        for ref in refs:
            if ref.name not in files_by:
                reader.warn(where, line, f"({name}) track_file {ref.name} not found, ignoring")
    procs_by = {p.name for p in track_processes}
    for inst in instances:
        for ref in inst.track_process:
            if ref.name not in procs_by:
                reader.warn(inst.file, inst.line, f"({inst.name}) track_process {ref.name} not found, ignoring")
    unhandled = [s for s in other if s.keyword not in _LVS_TOPLEVEL]
    if unhandled:
        kinds = sorted({s.keyword for s in unhandled})
        first = unhandled[0]
        reader.warn(first.file, first.line, f"{', '.join(kinds)}: parsed and kept, not handled by pylvs yet")
    return KeepalivedConfig(g, tuple(scripts), tuple(instances), tuple(groups), tuple(other),
                            tuple(reader.diagnostics), tuple(reader.files), tuple(track_files),
                            tuple(track_processes))


def load(path: str, config_id: str | None = None, strict: bool = True) -> KeepalivedConfig:
    """Parse ``path`` (and its includes). Raises :class:`ConfigError` when any error was found
    (``strict``), so a bad file never replaces a running configuration."""
    reader = Reader(config_id=config_id)
    lines = reader.read(path)
    tree = parse_tree(lines, reader)
    cfg = _interpret(tree, reader)
    if strict and any(d.severity == "error" for d in reader.diagnostics):
        raise ConfigError(list(reader.diagnostics))
    return cfg


def load_full(path: str, config_id: str | None = None) -> tuple[KeepalivedConfig, LVSConfig]:
    """The whole file as ``pylvs keepalived`` runs it: the VRRP part (this module) and the
    virtual_server part (:mod:`pylvs.config.lvs`). Raises :class:`ConfigError` with the
    diagnostics of both when either has an error."""
    from pylvs.config.lvs import interpret

    cfg = load(path, config_id, strict=False)
    lvs = interpret(cfg.other, cfg.track_files)
    diags = [*cfg.diagnostics, *lvs.diagnostics]
    if any(d.severity == "error" for d in diags):
        raise ConfigError(diags)
    return cfg, lvs


def parse_text(text: str, name: str = "<string>", config_id: str | None = None, strict: bool = True) -> KeepalivedConfig:
    """Parse configuration text (tests, fuzzing); includes resolve against the current directory."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, os.path.basename(name) or "keepalived.conf")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
        reader = Reader(config_id=config_id)
        lines = reader.read(path)
        tree = parse_tree(lines, reader)
        # report the caller's name, not the temporary path
        reader.diagnostics = [Diagnostic(x.severity, name if x.file == path else x.file, x.line, x.message)
                              for x in reader.diagnostics]
        tree = _rename(tree, path, name)
        reader.files = [name]
        cfg = _interpret(tree, reader)
    if strict and any(d.severity == "error" for d in cfg.diagnostics):
        raise ConfigError(list(cfg.diagnostics))
    return cfg


def _rename(tree: tuple[Statement, ...], old: str, new: str) -> tuple[Statement, ...]:
    return tuple(
        Statement(s.keyword, s.args, new if s.file == old else s.file, s.line,
                  None if s.block is None else _rename(s.block, old, new))
        for s in tree
    )
