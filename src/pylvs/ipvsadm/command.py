"""The ipvsadm command model: ipvsadm.c's numbering of commands and options, its table of legal
option/command pairs, and one parsed command line (``IpvsadmCommand``).

What this is for: one vocabulary for the parser (``parse``), the runner (``runner``) and the
director's rule files (``rules``). The numbers and the ``COMMANDS_V_OPTIONS`` rows are ipvsadm's
own, in its column order, so the first complaint about a bad line is the one ipvsadm prints.

What this is not for: reading words (``parse``) or touching a table (``runner``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pylvs.core.model import (
    AF_INET,
    DestSpec,
    ForwardingMethod,
    IPAddress,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    TunnelFlags,
    TunnelType,
)

PROG = "ipvsadm"
MAX_TIMEOUT = 86400 * 31
DEF_SCHED = "wlc"
DEF_MCAST_IFN = "eth0"
IP_VS_SCHEDNAME_MAXLEN = 16
IP_VS_PENAME_MAXLEN = 16
IP_VS_IFNAME_MAXLEN = 16

# ---- commands and options (ipvsadm.c's numbering) ----------------------------------------------

CMD_NONE, CMD_ADD, CMD_EDIT, CMD_DEL, CMD_FLUSH, CMD_LIST = 0, 1, 2, 3, 4, 5
CMD_ADDDEST, CMD_DELDEST, CMD_EDITDEST, CMD_TIMEOUT = 6, 7, 8, 9
CMD_STARTDAEMON, CMD_STOPDAEMON, CMD_RESTORE, CMD_SAVE, CMD_ZERO = 10, 11, 12, 13, 14

CMD_NAMES = (
    "add-service", "edit-service", "delete-service", "flush", "list", "add-server",
    "delete-server", "edit-server", "set", "start-daemon", "stop-daemon", "restore", "save",
    "zero",
)

OPT_NAMES = (
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
    "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
    "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds", "persistent-conn",
    "nosort", "syncid", "exact", "ops", "pe", "sched-flags", "mcast-group", "mcast-port",
    "mcast-ttl", "sync-maxlen", "tun-info", "tun-type", "tun-port", "tun-nocsum", "tun-csum",
    "tun-remcsum",
)
(
    OPTC_NUMERIC, OPTC_CONNECTION, OPTC_SERVICE, OPTC_SCHEDULER, OPTC_PERSISTENT, OPTC_NETMASK,
    OPTC_SERVER, OPTC_FORWARD, OPTC_WEIGHT, OPTC_UTHRESHOLD, OPTC_LTHRESHOLD, OPTC_MCAST,
    OPTC_TIMEOUT, OPTC_DAEMON, OPTC_STATS, OPTC_RATE, OPTC_THRESHOLDS, OPTC_PERSISTENTCONN,
    OPTC_NOSORT, OPTC_SYNCID, OPTC_EXACT, OPTC_ONEPACKET, OPTC_PERSISTENCE_ENGINE,
    OPTC_SCHED_FLAGS, OPTC_MCAST_GROUP, OPTC_MCAST_PORT, OPTC_MCAST_TTL, OPTC_SYNC_MAXLEN,
    OPTC_TUN_INFO, OPTC_TUN_TYPE, OPTC_TUN_PORT, OPTC_TUN_NOCSUM, OPTC_TUN_CSUM, OPTC_TUN_REMCSUM,
) = range(34)


def bit(optc: int) -> int:
    """The option's bit in ``IpvsadmCommand.options`` (ipvsadm's ``OPT_*`` masks)."""
    return 1 << optc


# Legal combinations of commands (rows) and options (columns, OPT_NAMES order):
# '+' compulsory, 'x' illegal, '1' at most one of the '1' options, ' ' optional.
COMMANDS_V_OPTIONS = (
    "xx+   " + "x" * 15 + "   " + "x" * 10,  # add-service
    "xx+   " + "x" * 15 + "   " + "x" * 10,  # edit-service
    "xx+" + "x" * 31,  # delete-service
    "x" * 34,  # flush
    " 11" + "x" * 9 + "11" + " " * 7 + "x" * 7 + " " + "x" * 5,  # list
    "xx+xxx+" + " " * 4 + "x" * 18 + " " * 5,  # add-server
    "xx+xxx+" + "x" * 27,  # delete-server
    "xx+xxx+" + " " * 4 + "x" * 18 + " " * 5,  # edit-server
    "x" * 34,  # set
    "x" * 11 + " " + "x" * 7 + " " + "x" * 4 + " " * 4 + "x" * 6,  # start-daemon
    "x" * 19 + " " + "x" * 14,  # stop-daemon
    "x" * 34,  # restore
    " " + "x" * 33,  # save
    "xx " + "x" * 31,  # zero
)
assert all(len(row) == 34 for row in COMMANDS_V_OPTIONS)

TUN_NAMES = ("ipip", "gue", "gre")
TUN_OPTS = (OPTC_TUN_PORT, OPTC_TUN_NOCSUM, OPTC_TUN_CSUM, OPTC_TUN_REMCSUM)
TUNNEL_TYPES_V_OPTIONS = ("xxxx", "+111", "x11x")


@dataclass
class ParsedService:
    """ipvsadm's ``ipvs_service_t`` as the options fill it (``-t/-u/-f``, ``-s``, ``-p``, ...)."""

    af: int = 0
    protocol: int = 0
    addr: IPAddress | None = None
    port: int = 0
    fwmark: int = 0
    sched_name: str = ""
    flags: int = 0
    timeout: int = 0
    netmask: int = 0xFFFFFFFF
    pe_name: str = ""

    def key(self) -> ServiceKey:
        if self.fwmark:
            return ServiceKey(self.af or AF_INET, 0, None, 0, self.fwmark)
        return ServiceKey(self.af, self.protocol, self.addr, self.port, 0)

    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            self.key(), self.sched_name, ServiceFlags(self.flags), self.timeout, self.netmask,
            self.pe_name,
        )

    def is_any(self) -> bool:
        """What libipvs sends as "no service": zero everything in ``-Z``."""
        return not self.fwmark and not self.port and (self.addr is None or not int(self.addr))


@dataclass
class ParsedDest:
    """ipvsadm's ``ipvs_dest_t`` as the options fill it (``-r``, ``-g/-i/-m``, ``-w``, ...)."""

    af: int = 0
    addr: IPAddress | None = None
    port: int = 0
    fwd: int = int(ForwardingMethod.DROUTE)
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    tun_type: int = 0
    tun_port: int = 0
    tun_flags: int = 0

    def spec(self) -> DestSpec:
        assert self.addr is not None
        return DestSpec(
            self.addr, self.port, ForwardingMethod(self.fwd), self.weight, self.u_threshold,
            self.l_threshold, TunnelType(self.tun_type), self.tun_port,
            TunnelFlags(self.tun_flags), self.af,
        )


@dataclass
class ParsedDaemon:
    """The sync daemon's ``--start-daemon``/``--stop-daemon`` settings."""

    state: str = ""
    mcast_ifn: str = ""
    syncid: int = 0
    sync_maxlen: int = 0
    mcast_group: str = ""
    mcast_af: int = 0
    mcast_port: int = 0
    mcast_ttl: int = 0


@dataclass
class IpvsadmCommand:
    """One ipvsadm command line, parsed and checked, ready to run against a table."""

    cmd: int
    options: int = 0
    fmt: int = 0
    svc: ParsedService = field(default_factory=ParsedService)
    dest: ParsedDest = field(default_factory=ParsedDest)
    timeouts: Timeouts | None = None
    daemon: ParsedDaemon = field(default_factory=ParsedDaemon)
    argv: tuple[str, ...] = ()
    lineno: int = 0

    @property
    def name(self) -> str:
        return CMD_NAMES[self.cmd - 1] if self.cmd else "none"

