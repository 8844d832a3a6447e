"""keepalived.conf's ``global_defs``: router id, SMTP alerts, VRRP defaults, LVS table settings,
the connection sync daemon and the notify FIFOs.

Not for: what the daemon does with them (``pylvs.keepalived``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.values import (
    VRRP_WORDING,
    Invalid,
    Report,
    address,
    arg,
    command,
    integer,
    number,
)

__all__ = ["GlobalDefs", "LVSSyncDaemon", "global_defs"]


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


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Keywords keepalived 2.2 accepts that pylvs does not act on (kept in ``other``).
_ACCEPTED = _words("""
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

# Accepted keywords whose effect pylvs does not reproduce yet: a warning says so, with file:line,
# rather than letting an operator believe they are in force. Shared with the vrrp_instance part.
UNSUPPORTED = _words("""
track_bfd accept no_accept strict_mode
use_ipvlan garp_extra_if unicast_fault_no_peer old_unicast_checksum
notify_deleted track_src_ip
vrrp_strict enable_snmp_keepalived enable_snmp_vrrp enable_snmp_checker enable_snmp_rfc
enable_snmp_rfcv2 enable_snmp_rfcv3 enable_traps enable_dbus vrrp_iptables
vrrp_ipsets nftables net_namespace instance
""")

_FIFOS = ("notify_fifo", "vrrp_notify_fifo", "lvs_notify_fifo")
_FIFO_SCRIPTS = ("notify_fifo_script", "vrrp_notify_fifo_script", "lvs_notify_fifo_script")


def _statement(s: Statement, kw: dict[str, object], other: list[Statement], report: Report) -> None:
    """One keyword of global_defs into ``kw``; raises :class:`Invalid` for a bad value, which
    leaves the setting at its default, as keepalived does."""
    k = s.keyword
    if k in ("router_id", "smtp_helo_name"):
        kw[k] = None  # a bad value leaves the default
        kw[k] = arg(s)
    elif k == "notification_email":
        kw[k] = tuple(c.keyword for c in (s.block or ())) + tuple(s.args)
    elif k in ("notification_email_from", "smtp_server", "script_user"):
        kw[k] = None
        kw[k] = " ".join(s.args) if s.args else arg(s)
    elif k in ("smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker"):
        kw[k] = s.flag
    elif k == "no_email_faults":
        kw[k] = True
    elif k == "smtp_connect_timeout":
        kw[k] = 30
        kw[k] = integer(s, 1, 3600, wording=VRRP_WORDING) or 30
    elif k in ("vrrp_mcast_group4", "vrrp_mcast_group6"):
        addr = arg(s)
        address(s, addr, VRRP_WORDING)
        kw[k] = addr
    elif k == "vrrp_version":
        kw[k] = 2
        kw[k] = integer(s, 2, 3, wording=VRRP_WORDING)
    elif k in ("vrrp_garp_master_delay", "vrrp_garp_master_refresh"):
        kw[k] = number(s, 0, 86400, wording=VRRP_WORDING)
    elif k in ("vrrp_garp_master_repeat", "vrrp_garp_master_refresh_repeat", "vrrp_garp_lower_prio_repeat"):
        kw[k] = integer(s, 0, 65535, wording=VRRP_WORDING)
    elif k in ("vrrp_garp_interval", "vrrp_gna_interval"):
        kw[k] = number(s, 0.000001, 4294.967295, wording=VRRP_WORDING)
    elif k in ("vrrp_lower_prio_no_advert", "vrrp_higher_prio_send_advert"):
        kw[k] = s.flag
    elif k in _FIFOS:
        kw[k] = None
        kw[k] = arg(s)
        if len(s.args) > 1:
            report.warn(s, f"'{k}': the FIFO's user and group are not set by pylvs (root's)")
    elif k in _FIFO_SCRIPTS:
        kw[k] = None
        kw[k] = s.args[0] if s.args else command(s)
        if len(s.args) > 1:
            report.warn(s, f"'{k}': the script runs as root; user and group are ignored")
    elif k == "lvs_timeouts":
        kw[k] = lvs_timeouts(s)
    elif k == "lvs_flush":
        kw[k] = True
    elif k in ("lvs_flush_on_stop", "lvs_flush_onstop"):
        if s.args and s.args[0] != "VS":
            raise Invalid(s, f"'{k}': unknown option '{s.args[0]}' (only VS)")
        kw["lvs_flush_on_stop"] = "VS" if s.args else "all"
    elif k == "lvs_sync_daemon":
        kw[k] = lvs_sync_daemon(s)
    elif k in ("vrrp_skip_check_adv_addr", "vrrp_strict", "enable_script_security"):
        kw[k] = True
        if k == "vrrp_strict":
            report.warn(s, "'vrrp_strict' accepted; its extra RFC checks are not enforced by pylvs yet")
    elif k in _ACCEPTED:
        if k in UNSUPPORTED:
            report.warn(s, f"'{k}' accepted but not supported by pylvs yet; ignored")
        other.append(s)
    else:
        report.warn(s, f"Unknown keyword '{k}'")


def global_defs(st: Statement, report: Report) -> GlobalDefs:
    kw: dict[str, object] = {}
    other: list[Statement] = []
    for s in st.block or ():
        try:
            _statement(s, kw, other, report)
        except Invalid as exc:
            report.invalid(exc)
    kw = {k: v for k, v in kw.items() if v is not None}
    return GlobalDefs(other=tuple(other), **kw)  # type: ignore[arg-type]


def lvs_timeouts(st: Statement) -> tuple[int | None, int | None, int | None]:
    """``lvs_timeouts [tcp SECS] [tcpfin SECS] [udp SECS]``, at least one."""
    got: dict[str, int] = {}
    words = list(st.args)
    while words:
        w = words.pop(0)
        if w not in ("tcp", "tcpfin", "udp") or not words:
            raise Invalid(st, f"lvs_timeouts: expected tcp|tcpfin|udp SECS, not '{w}'")
        v = words.pop(0)
        try:
            n = int(v)
        except ValueError:
            n = -1
        if not 1 <= n <= 2**31 // 1000:
            raise Invalid(st, f"lvs_timeouts: invalid {w} timeout '{v}'")
        got[w] = n
    if not got:
        raise Invalid(st, "lvs_timeouts needs at least one of tcp, tcpfin, udp")
    return got.get("tcp"), got.get("tcpfin"), got.get("udp")


_SYNC_LIMITS = {"id": ("syncid", 0, 255), "maxlen": ("maxlen", 1, 65535 - 20 - 8),
                "port": ("port", 1, 65535), "ttl": ("ttl", 1, 255)}


def lvs_sync_daemon(st: Statement) -> LVSSyncDaemon:
    args = list(st.args)
    if len(args) > 1 and args[1] == "inst":  # keepalived 2.2's optional word before it
        del args[1]
    if len(args) < 2 or args[1] in ("id", "maxlen", "port", "ttl", "group"):
        raise Invalid(st, "lvs_sync_daemon needs an interface and a vrrp_instance")
    if tuple(args) != st.args:
        st = dataclasses.replace(st, args=tuple(args))
    kw: dict[str, object] = {}
    rest = list(st.args[2:])
    while rest:
        word = rest.pop(0)
        if not rest:
            raise Invalid(st, f"lvs_sync_daemon: '{word}' needs a value")
        value = rest.pop(0)
        if word == "group":
            address(st, value, VRRP_WORDING)
            kw["group"] = value
        elif word in _SYNC_LIMITS:
            name, lo, hi = _SYNC_LIMITS[word]
            try:
                n = int(value)
            except ValueError:
                n = -1
            if not lo <= n <= hi:
                raise Invalid(st, f"lvs_sync_daemon: invalid {word} '{value}'")
            kw[name] = n
        else:
            raise Invalid(st, f"lvs_sync_daemon: unknown option '{word}'")
    return LVSSyncDaemon(st.args[0], st.args[1], **kw)  # type: ignore[arg-type]
