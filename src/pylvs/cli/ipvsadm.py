"""``pylvsadm``: ipvsadm 1.31, letter for letter, against a pylvs table.

What this is for: an LVS operator's commands, scripts and saved rule files work unchanged. Every
command and option of ipvsadm 1.31 is parsed with its rules (popt scanning, the C library's
number and address parsing, the table of legal option/command pairs) and answered with the
same bytes on stdout and stderr and the same exit code: 0 done; 2 a bad command line; 255 an
error from the table (or an unknown option); 1 ``-L`` of a missing service.

What this is not for: holding the table. The table is an ``IPVSBackend``: the director daemon
over its control socket by default (``--control-socket PATH``, ``$PYLVS_CONTROL_SOCKET``, or
``/run/pylvs/pylvs.sock``), or whatever the caller passes in (tests pass an ``IPVSTable``).

Two ways to read a rule file, on purpose:

- ``pylvsadm -R`` behaves exactly like ``ipvsadm -R``: it executes the lines one by one as it
  reads them; a line the kernel refuses prints the kernel's error and the next line is still
  run; a line that cannot be parsed (a ``# comment`` counts) stops the restore with ipvsadm's
  exit code, *after* the lines before it were applied. Scripts that rely on those bytes and exit
  codes keep working.
- ``parse_restore(text, source)`` + ``apply_commands(backend, commands)`` are the strict form the
  director uses for its own start-up rule file: every line is parsed first (blank lines and
  lines starting with ``#`` are skipped), and any bad line raises ``RestoreError`` with
  ``source:LINE: what is wrong`` before anything is applied. ``apply_commands`` then rehearses
  the commands on an in-memory copy of the table, so a line the table would refuse is also
  reported (with its line number) before anything changes, and only then applies them.
"""

from __future__ import annotations

import errno as _errno
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from pylvs.core.api import BackendUnavailable, IPVSBackend, IPVSError, SyncDaemonStatus
from pylvs.core.model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENCE_TIMEOUT,
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
from pylvs.ipvsadm import listing as L
from pylvs.ipvsadm.cparse import (
    INT_MAX,
    UINT_MAX,
    atoi,
    inet_aton,
    inet_pton4,
    inet_pton6,
    str_is_digit,
    string_to_number,
    strtol,
)
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.popt import Option, Popt, PoptError
from pylvs.ipvsadm.usage import VERSION_LINE, usage_text

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


def _bit(optc: int) -> int:
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

_OPTIONS = (
    Option("add-service", "A", "A"),
    Option("edit-service", "E", "E"),
    Option("delete-service", "D", "D"),
    Option("clear", "C", "C"),
    Option("list", "L", "L"),
    Option("list", "l", "l"),
    Option("zero", "Z", "Z"),
    Option("add-server", "a", "a"),
    Option("edit-server", "e", "e"),
    Option("delete-server", "d", "d"),
    Option("set", None, "set"),
    Option("help", "h", "h"),
    Option("version", "v", "v"),
    Option("restore", "R", "R"),
    Option("save", "S", "S"),
    Option("start-daemon", None, "start-daemon", True),
    Option("stop-daemon", None, "stop-daemon", True),
    Option("tcp-service", "t", "t", True),
    Option("udp-service", "u", "u", True),
    Option("sctp-service", None, "sctp-service", True),
    Option("fwmark-service", "f", "f", True),
    Option("scheduler", "s", "s", True),
    Option("persistent", "p", "p", True, optional=True),
    Option("netmask", "M", "M", True),
    Option("real-server", "r", "r", True),
    Option("masquerading", "m", "m"),
    Option("ipip", "i", "i"),
    Option("gatewaying", "g", "g"),
    Option("weight", "w", "w", True),
    Option("u-threshold", "x", "x", True),
    Option("l-threshold", "y", "y", True),
    Option("numeric", "n", "n"),
    Option("connection", "c", "c"),
    Option("mcast-interface", None, "mcast-interface", True),
    Option("syncid", None, "I", True),
    Option("timeout", None, "timeout"),
    Option("daemon", None, "daemon"),
    Option("stats", None, "stats"),
    Option("rate", None, "rate"),
    Option("thresholds", None, "thresholds"),
    Option("persistent-conn", None, "persistent-conn"),
    Option("nosort", None, "nosort"),
    Option("sort", None, "sort"),
    Option("exact", "X", "X"),
    Option("ipv6", "6", "6"),
    Option("ops", "o", "o"),
    Option("pe", None, "pe", True),
    Option("sched-flags", "b", "b", True),
    Option("mcast-group", None, "mcast-group", True),
    Option("mcast-port", None, "mcast-port", True),
    Option("mcast-ttl", None, "mcast-ttl", True),
    Option("sync-maxlen", None, "sync-maxlen", True),
    Option("tun-info", None, "tun-info"),
    Option("tun-type", None, "tun-type", True),
    Option("tun-port", None, "tun-port", True),
    Option("tun-nocsum", None, "tun-nocsum"),
    Option("tun-csum", None, "tun-csum"),
    Option("tun-remcsum", None, "tun-remcsum"),
)

_FIRST_COMMANDS = {
    "A": CMD_ADD, "E": CMD_EDIT, "D": CMD_DEL, "a": CMD_ADDDEST, "e": CMD_EDITDEST,
    "d": CMD_DELDEST, "C": CMD_FLUSH, "L": CMD_LIST, "l": CMD_LIST, "Z": CMD_ZERO,
    "set": CMD_TIMEOUT, "R": CMD_RESTORE, "S": CMD_SAVE,
}
_PROTOCOL_OF = {"t": 6, "u": 17, "sctp-service": 132}
_FLAG_FOR = {
    "stats": (OPTC_STATS, L.FMT_STATS),
    "rate": (OPTC_RATE, L.FMT_RATE),
    "thresholds": (OPTC_THRESHOLDS, L.FMT_THRESHOLDS),
    "persistent-conn": (OPTC_PERSISTENTCONN, L.FMT_PERSISTENTCONN),
    "nosort": (OPTC_NOSORT, L.FMT_NOSORT),
    "X": (OPTC_EXACT, L.FMT_EXACT),
    "tun-info": (OPTC_TUN_INFO, L.FMT_TUN_INFO),
    "n": (OPTC_NUMERIC, L.FMT_NUMERIC),
}

# ---- outcomes ------------------------------------------------------------------------------


class _Exit(Exception):
    """ipvsadm calls ``exit()``: the whole run (even a restore) ends with this code."""

    def __init__(self, rc: int, stderr: str = "", stdout: str = "") -> None:
        super().__init__(stderr or stdout)
        self.rc = rc & 0xFF
        self.stderr = stderr
        self.stdout = stdout


class _LineError(Exception):
    """popt failed inside the option loop: ipvsadm prints it and the line's result is -1."""


def _fail(rc: int, msg: str) -> _Exit:
    return _Exit(rc, msg + "\n")


def _tryhelp(program: str) -> _Exit:
    return _Exit(255, f"Try `{program} -h' or '{program} --help' for more information.\n")


class RestoreError(Exception):
    """A rule file line that is malformed or refused: ``source:LINE: what is wrong``."""


# ---- the parsed command ---------------------------------------------------------------------


@dataclass
class ParsedService:
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


# ---- argument parsing -----------------------------------------------------------------------


def _parse_service(
    buf: str | None, svc: ParsedService, resolver: Resolver
) -> tuple[int, ParsedService]:
    """ipvsadm's ``parse_service``: bit 1 = address parsed, bit 2 = port parsed."""
    if buf is None or str_is_digit(buf):
        return 0, svc
    portp: str | None = None
    text = buf
    if text.startswith("["):
        text = text[1:]
        close = text.find("]")
        if close < 0:
            return 0, svc
        after = text[close + 1 :]
        text = text[:close]
        if not after.startswith(":"):
            return 0, svc
        portp = after[1:]
    a6 = inet_pton6(text)
    if a6 is not None:
        svc.addr = a6
        svc.af = AF_INET6
        svc.netmask = 128
    else:
        colon = text.rfind(":")
        if colon >= 0:
            portp = text[colon + 1 :]
            text = text[:colon]
        else:
            portp = None
        a4 = inet_aton(text)
        if a4 is None:
            a4 = resolver.host_to_ipv4(text) if text else None
        if a4 is None:
            return 0, svc
        svc.addr = a4
        svc.af = AF_INET
    result = 1
    if portp is not None:
        result |= 2
        n = string_to_number(portp, 0, 65535)
        if n == -1:
            named = resolver.service_to_port(portp, svc.protocol)
            if named is None:
                return 0, svc
            n = named
        svc.port = n
    return result, svc


def _parse_timeout(buf: str | None, lo: int, hi: int) -> int:
    if buf is None:
        return DEFAULT_PERSISTENCE_TIMEOUT
    n = string_to_number(buf, lo, hi)
    if n == -1:
        raise _fail(2, f"invalid timeout value `{buf}' specified")
    return n


def _parse_fwmark(buf: str) -> int:
    value, end, erange = strtol(buf)
    if end != len(buf) or end == 0 or erange or value <= 0 or value > UINT_MAX:
        raise _fail(2, f"invalid fwmark value `{buf}' specified")
    return value


def _parse_netmask(buf: str, resolver: Resolver) -> int | None:
    a = inet_aton(buf)
    if a is None:
        a = resolver.host_to_ipv4(buf) if buf else None
    return int(a) if a is not None else None


def _parse_sched_flags(sched: str, arg: str) -> int:
    sched = sched or DEF_SCHED
    flags = 0
    words = [w for w in arg.split(",") if w]
    if not words:
        raise _fail(2, "invalid scheduler flag `'")
    for flag in words:
        if flag == "flag-1":
            flags |= ServiceFlags.SCHED1
        elif flag == "flag-2":
            flags |= ServiceFlags.SCHED2
        elif flag == "flag-3":
            flags |= ServiceFlags.SCHED3
        elif flag in ("sh-fallback", "sh-port", "mh-fallback", "mh-port"):
            flags |= ServiceFlags.SCHED1 if flag.endswith("fallback") else ServiceFlags.SCHED2
            if sched != flag[:2]:
                raise _fail(2, f"incompatible scheduler flag `{flag}'")
        else:
            raise _fail(2, f"invalid scheduler flag `{flag}'")
    return int(flags)


def _set_option(ce: IpvsadmCommand, optc: int) -> None:
    if ce.options & _bit(optc):
        raise _fail(2, f"multiple '{OPT_NAMES[optc]}' options specified")
    ce.options |= _bit(optc)


def _is_ipv4_multicast(text: str) -> bool:
    a = inet_pton4(text)
    return a is not None and a.is_multicast


def _parse_options(argv: Sequence[str], resolver: Resolver) -> IpvsadmCommand:
    """ipvsadm's ``parse_options``: may raise _Exit (exit) or _LineError (return -1)."""
    program = argv[0]
    ctx = Popt(argv, _OPTIONS)
    sched_flags_arg = ""
    try:
        first = ctx.get_next_opt()
    except PoptError:
        first = None
    if first is None:
        raise _tryhelp(program)
    c, optarg = first
    ce = IpvsadmCommand(CMD_NONE, argv=tuple(argv))
    if c in _FIRST_COMMANDS:
        ce.cmd = _FIRST_COMMANDS[c]
    elif c in ("start-daemon", "stop-daemon"):
        ce.cmd = CMD_STARTDAEMON if c == "start-daemon" else CMD_STOPDAEMON
        if optarg in ("master", "backup"):
            ce.daemon.state = optarg
        elif c == "start-daemon":
            raise _fail(2, "illegal start-daemon parameter specified")
        else:
            raise _fail(2, "illegal start_daemon specified")
    elif c == "h":
        raise _Exit(0, stdout=usage_text(program))
    elif c == "v":
        raise _Exit(0, stdout=VERSION_LINE)
    else:
        raise _tryhelp(program)

    svc, dest = ce.svc, ce.dest
    while True:
        try:
            got = ctx.get_next_opt()
        except PoptError as exc:
            raise _LineError(f"{exc.bad}: {str(exc).split(': ', 1)[-1]}") from None
        if got is None:
            break
        c, optarg = got
        if c in ("t", "u", "sctp-service"):
            _set_option(ce, OPTC_SERVICE)
            svc.protocol = _PROTOCOL_OF[c]
            parse, _ = _parse_service(optarg, svc, resolver)
            if not parse & 1:
                raise _fail(2, "illegal virtual server address[:port] specified")
        elif c == "f":
            _set_option(ce, OPTC_SERVICE)
            svc.af = AF_INET
            svc.protocol = 6
            assert optarg is not None
            svc.fwmark = _parse_fwmark(optarg)
        elif c == "s":
            _set_option(ce, OPTC_SCHEDULER)
            svc.sched_name = (optarg or "")[: IP_VS_SCHEDNAME_MAXLEN - 1]
        elif c == "p":
            _set_option(ce, OPTC_PERSISTENT)
            svc.flags |= ServiceFlags.PERSISTENT
            svc.timeout = _parse_timeout(optarg, 1, MAX_TIMEOUT)
        elif c == "M":
            _set_option(ce, OPTC_NETMASK)
            assert optarg is not None
            if svc.af != AF_INET6:
                mask = _parse_netmask(optarg, resolver)
                if mask is None:
                    raise _fail(2, "illegal virtual server persistent mask specified")
                svc.netmask = mask
            else:
                svc.netmask = atoi(optarg)
                if svc.netmask < 1 or svc.netmask > 128:
                    raise _fail(2, "illegal ipv6 netmask specified")
        elif c == "r":
            _set_option(ce, OPTC_SERVER)
            t_dest = ParsedService(**vars(svc))
            parse, _ = _parse_service(optarg, t_dest, resolver)
            dest.af, dest.addr, dest.port = t_dest.af, t_dest.addr, t_dest.port
            if not parse & 1:
                raise _fail(2, "illegal real server address[:port] specified")
            if parse == 1:
                dest.port = svc.port
        elif c in ("i", "g", "m"):
            _set_option(ce, OPTC_FORWARD)
            dest.fwd = int(
                {"i": ForwardingMethod.TUNNEL, "g": ForwardingMethod.DROUTE,
                 "m": ForwardingMethod.MASQ}[c]
            )
        elif c == "w":
            _set_option(ce, OPTC_WEIGHT)
            dest.weight = string_to_number(optarg or "", 0, INT_MAX)
            if dest.weight == -1:
                raise _fail(2, "illegal weight specified")
        elif c == "x":
            _set_option(ce, OPTC_UTHRESHOLD)
            dest.u_threshold = string_to_number(optarg or "", 0, INT_MAX)
            if dest.u_threshold == -1:
                raise _fail(2, "illegal u_threshold specified")
        elif c == "y":
            _set_option(ce, OPTC_LTHRESHOLD)
            dest.l_threshold = string_to_number(optarg or "", 0, INT_MAX)
            if dest.l_threshold == -1:
                raise _fail(2, "illegal l_threshold specified")
        elif c == "c":
            _set_option(ce, OPTC_CONNECTION)
        elif c in _FLAG_FOR:
            optc, fmt = _FLAG_FOR[c]
            _set_option(ce, optc)
            ce.fmt |= fmt
        elif c == "mcast-interface":
            _set_option(ce, OPTC_MCAST)
            ce.daemon.mcast_ifn = (optarg or "")[: IP_VS_IFNAME_MAXLEN - 1]
        elif c == "I":
            _set_option(ce, OPTC_SYNCID)
            ce.daemon.syncid = string_to_number(optarg or "", 0, 255)
            if ce.daemon.syncid == -1:
                raise _fail(2, "illegal syncid specified")
        elif c == "timeout":
            _set_option(ce, OPTC_TIMEOUT)
        elif c == "daemon":
            _set_option(ce, OPTC_DAEMON)
        elif c == "sort":
            pass  # the default; accepted for compatibility
        elif c == "6":
            if svc.fwmark:
                svc.af = AF_INET6
                svc.netmask = 128
            else:
                raise _fail(2, "-6 used before -f\n")
        elif c == "o":
            _set_option(ce, OPTC_ONEPACKET)
            svc.flags |= ServiceFlags.ONEPACKET
        elif c == "pe":
            _set_option(ce, OPTC_PERSISTENCE_ENGINE)
            svc.pe_name = (optarg or "")[:IP_VS_PENAME_MAXLEN]
        elif c == "b":
            _set_option(ce, OPTC_SCHED_FLAGS)
            sched_flags_arg = (optarg or "")[:127]
        elif c == "mcast-group":
            _set_option(ce, OPTC_MCAST_GROUP)
            group = optarg or ""
            if ":" in group:
                a6 = inet_pton6(group)
                if a6 is None or not a6.is_multicast:
                    raise _fail(2, f"invalid IPv6 mcast-group `{group}'")
                ce.daemon.mcast_af = AF_INET6
            else:
                if not _is_ipv4_multicast(group):
                    raise _fail(2, f"invalid IPv4 mcast-group `{group}'")
                ce.daemon.mcast_af = AF_INET
            ce.daemon.mcast_group = group
        elif c == "mcast-port":
            _set_option(ce, OPTC_MCAST_PORT)
            n = string_to_number(optarg or "", 1, 65535)
            if n == -1:
                raise _fail(2, "illegal mcast-port specified")
            ce.daemon.mcast_port = n
        elif c == "mcast-ttl":
            _set_option(ce, OPTC_MCAST_TTL)
            n = string_to_number(optarg or "", 1, 255)
            if n == -1:
                raise _fail(2, "illegal mcast-ttl specified")
            ce.daemon.mcast_ttl = n
        elif c == "sync-maxlen":
            _set_option(ce, OPTC_SYNC_MAXLEN)
            n = string_to_number(optarg or "", 1, 65535 - 20 - 8)
            if n == -1:
                raise _fail(2, "illegal sync-maxlen specified")
            ce.daemon.sync_maxlen = n
        elif c == "tun-type":
            _set_option(ce, OPTC_TUN_TYPE)
            if optarg not in TUN_NAMES:
                raise _fail(2, "illegal tunnel type specified")
            dest.tun_type = TUN_NAMES.index(optarg)
        elif c == "tun-port":
            _set_option(ce, OPTC_TUN_PORT)
            n = string_to_number(optarg or "", 1, 65535)
            if n == -1:
                raise _fail(2, "illegal tunnel port specified")
            dest.tun_port = n
        elif c == "tun-nocsum":
            _set_option(ce, OPTC_TUN_NOCSUM)
            dest.tun_flags |= int(TunnelFlags.NOCSUM)
        elif c == "tun-csum":
            _set_option(ce, OPTC_TUN_CSUM)
            dest.tun_flags |= int(TunnelFlags.CSUM)
        elif c == "tun-remcsum":
            _set_option(ce, OPTC_TUN_REMCSUM)
            dest.tun_flags |= int(TunnelFlags.REMCSUM)
        else:
            raise _fail(2, f"invalid option `{ctx.bad_option()}'")

    if ce.cmd == CMD_TIMEOUT:
        a0 = ctx.get_arg()
        a1 = ctx.get_arg() if a0 is not None else None
        a2 = ctx.get_arg() if a1 is not None else None
        if a0 is None or a1 is None or a2 is None:
            raise _fail(2, "--set option requires 3 timeout values")
        ce.timeouts = Timeouts(
            _parse_timeout(a0, 0, MAX_TIMEOUT),
            _parse_timeout(a1, 0, MAX_TIMEOUT),
            _parse_timeout(a2, 0, MAX_TIMEOUT),
        )
    extra = ctx.get_arg()
    if extra is not None:
        raise _fail(2, f"unexpected argument {extra}")
    if sched_flags_arg:
        sched_bits = int(ServiceFlags.SCHED1 | ServiceFlags.SCHED2 | ServiceFlags.SCHED3)
        svc.flags &= ~sched_bits
        svc.flags |= _parse_sched_flags(svc.sched_name, sched_flags_arg)
    return ce


def _mask(row: str, rule: str) -> int:
    return sum(1 << j for j, r in enumerate(row) if r == rule)


_REQUIRED = tuple(_mask(row, "+") for row in COMMANDS_V_OPTIONS)
_ILLEGAL = tuple(_mask(row, "x") for row in COMMANDS_V_OPTIONS)
_EXCLUSIVE = tuple(_mask(row, "1") for row in COMMANDS_V_OPTIONS)


def _generic_opt_check(command: int, options: int) -> None:
    i = command - 1
    if (
        not _REQUIRED[i] & ~options
        and not _ILLEGAL[i] & options
        and (_EXCLUSIVE[i] & options).bit_count() <= 1
    ):
        return
    # Something is wrong: walk the columns in ipvsadm's order so the same complaint comes first.
    row = COMMANDS_V_OPTIONS[command - 1]
    _check_rules(((row[j], j) for j in range(34)), options, f"the '{CMD_NAMES[command - 1]}' command")


def _check_rules(rules: Iterable[tuple[str, int]], options: int, context: str) -> None:
    """ipvsadm's table check, in its column order: '+' must be given, 'x' must not, and at
    most one '1' of a row; ``context`` ends each message ("the '-A' command", ...)."""
    last = 0
    count = 0
    for rule, k in rules:
        if not options & _bit(k):
            if rule == "+":
                raise _fail(2, f"You need to supply the '{OPT_NAMES[k]}' option for {context}")
        else:
            if rule == "x":
                raise _fail(2, f"Illegal '{OPT_NAMES[k]}' option with {context}")
            if rule == "1":
                count += 1
                if count == 1:
                    last = k
                    continue
                raise _fail(
                    2,
                    f"The option '{OPT_NAMES[k]}' conflicts with the '{OPT_NAMES[last]}' option "
                    f"in {context}",
                )


def _tunnel_opt_check(tun_type: int, options: int) -> None:
    row = TUNNEL_TYPES_V_OPTIONS[tun_type]
    _check_rules(
        ((row[j], k) for j, k in enumerate(TUN_OPTS)), options,
        f"the '{TUN_NAMES[tun_type]}' tunnel type",
    )


def parse_command(argv: Sequence[str], resolver: Resolver | None = None) -> IpvsadmCommand:
    """Parse and check one ipvsadm command line (``argv[0]`` is the program name).

    Raises ``_Exit`` where ipvsadm would exit and ``_LineError`` where it would print a popt
    error and return -1; everything ipvsadm checks before touching the table is checked here.
    """
    resolver = resolver or Resolver.from_environment()
    ce = _parse_options(argv, resolver)
    _generic_opt_check(ce.cmd, ce.options)
    svc, dest = ce.svc, ce.dest
    if ce.cmd in (CMD_ADD, CMD_EDIT):
        if not svc.fwmark and not svc.port and not svc.flags & ServiceFlags.PERSISTENT:
            raise _fail(2, "Zero port specified for non-persistent service")
        if svc.flags & ServiceFlags.ONEPACKET and not svc.fwmark and svc.protocol != 17:
            raise _fail(2, "One-Packet Scheduling is only for UDP virtual services")
        if not svc.sched_name:
            svc.sched_name = DEF_SCHED
    if ce.cmd == CMD_STARTDAEMON and not ce.daemon.mcast_ifn:
        ce.daemon.mcast_ifn = DEF_MCAST_IFN
    if ce.cmd in (CMD_ADDDEST, CMD_EDITDEST):
        fwd = dest.fwd
        if not svc.fwmark and fwd in (ForwardingMethod.TUNNEL, ForwardingMethod.DROUTE):
            dest.port = svc.port
        if dest.af != svc.af and fwd != ForwardingMethod.TUNNEL:
            raise _fail(2, "Different address family is allowed only for tunneling servers")
        tun_bits = (
            _bit(OPTC_TUN_TYPE) | _bit(OPTC_TUN_PORT) | _bit(OPTC_TUN_NOCSUM)
            | _bit(OPTC_TUN_CSUM) | _bit(OPTC_TUN_REMCSUM)
        )
        if ce.options & tun_bits and fwd != ForwardingMethod.TUNNEL:
            raise _fail(2, "Tunnel options conflict with forward method")
        _tunnel_opt_check(dest.tun_type, ce.options)
    if ce.cmd == CMD_LIST:
        opts = ce.options
        if (
            opts & (_bit(OPTC_CONNECTION) | _bit(OPTC_TIMEOUT) | _bit(OPTC_DAEMON))
            and opts & (_bit(OPTC_STATS) | _bit(OPTC_RATE) | _bit(OPTC_THRESHOLDS))
        ) or (
            opts & (_bit(OPTC_TIMEOUT) | _bit(OPTC_DAEMON)) and opts & _bit(OPTC_PERSISTENTCONN)
        ):
            raise _fail(2, "options conflicts in the list command")
    return ce


# ---- errors as libipvs words them -----------------------------------------------------------

_FUNC_ERRORS: dict[tuple[str, int], str] = {
    ("add_service", _errno.EEXIST): "Service already exists",
    ("add_service", _errno.ENOENT): "Scheduler or persistence engine not found",
    ("edit_service", _errno.ESRCH): "No such service",
    ("edit_service", _errno.ENOENT): "Scheduler or persistence engine not found",
    ("del_service", _errno.ESRCH): "No such service",
    ("zero", _errno.ESRCH): "No such service",
    ("add_dest", _errno.ESRCH): "Service not defined",
    ("add_dest", _errno.EEXIST): "Destination already exists",
    ("edit_dest", _errno.ESRCH): "Service not defined",
    ("edit_dest", _errno.ENOENT): "No such destination",
    ("del_dest", _errno.ESRCH): "Service not defined",
    ("del_dest", _errno.ENOENT): "No such destination",
    ("start_daemon", _errno.EEXIST): "Daemon has already run",
    ("stop_daemon", _errno.ESRCH): "No daemon is running",
    ("get_services", _errno.ESRCH): "No such service",
    ("get_service", _errno.ESRCH): "No such service",
}
_ANY_ERRORS = {
    _errno.EPERM: "Permission denied (you must be root)",
    _errno.EINVAL: "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    _errno.ENOPROTOOPT: "Protocol not available",
    _errno.ENOMEM: "Memory allocation problem",
    _errno.EOPNOTSUPP: "Operation not supported with IPv6",
    _errno.EAFNOSUPPORT: "Operation not supported with specified address family",
    _errno.EMSGSIZE: "Module is wrong version",
}


def ipvs_strerror(func: str, err: int) -> str:
    """libipvs's ``ipvs_strerror``: the words depend on which call failed."""
    return _FUNC_ERRORS.get((func, err)) or _ANY_ERRORS.get(err) or os.strerror(err)


# ---- running commands -----------------------------------------------------------------------


class _Runner:
    """Runs parsed commands against a backend, writing what ipvsadm writes."""

    def __init__(
        self,
        get_backend: Callable[[], IPVSBackend],
        out: IO[str],
        err: IO[str],
        inp: IO[str] | None,
        resolver: Resolver,
    ) -> None:
        self._get_backend = get_backend
        self.out = out
        self.err = err
        self.inp = inp
        self.resolver = resolver

    @property
    def backend(self) -> IPVSBackend:
        return self._get_backend()

    def process_options(self, argv: Sequence[str], reading_stdin: bool) -> int:
        try:
            ce = parse_command(argv, self.resolver)
        except _LineError as exc:
            self.err.write(f"{exc}\n")
            return -1
        return self.execute(ce, reading_stdin)

    def _call(self, func: str, *args: Any) -> int:
        try:
            getattr(self.backend, func)(*args)
        except IPVSError as exc:
            self.err.write(ipvs_strerror(func, exc.errno) + "\n")
            return -1
        return 0

    def execute(self, ce: IpvsadmCommand, reading_stdin: bool = False) -> int:
        cmd = ce.cmd
        if cmd == CMD_LIST:
            if ce.options & _bit(OPTC_CONNECTION):
                self.list_conn(ce.fmt)
            elif ce.options & _bit(OPTC_SERVICE):
                self.list_service(ce.svc.key(), ce.fmt)
            elif ce.options & _bit(OPTC_TIMEOUT):
                self.list_timeout()
            elif ce.options & _bit(OPTC_DAEMON):
                self.list_daemon()
            else:
                self.list_all(ce.fmt)
            return 0
        if cmd == CMD_RESTORE:
            return self.restore(ce.argv[0] if ce.argv else PROG, reading_stdin)
        if cmd == CMD_SAVE:
            self.list_all(ce.fmt | L.FMT_RULE)
            return 0
        if cmd == CMD_FLUSH:
            return self._call("flush")
        if cmd == CMD_ADD:
            return self._call("add_service", ce.svc.spec())
        if cmd == CMD_EDIT:
            return self._call("edit_service", ce.svc.spec())
        if cmd == CMD_DEL:
            return self._call("del_service", ce.svc.key())
        if cmd == CMD_ZERO:
            return self._call("zero", None if ce.svc.is_any() else ce.svc.key())
        if cmd == CMD_ADDDEST:
            return self._call("add_dest", ce.svc.key(), ce.dest.spec())
        if cmd == CMD_EDITDEST:
            return self._call("edit_dest", ce.svc.key(), ce.dest.spec())
        if cmd == CMD_DELDEST:
            assert ce.dest.addr is not None
            return self._call("del_dest", ce.svc.key(), ce.dest.addr, ce.dest.port)
        if cmd == CMD_TIMEOUT:
            assert ce.timeouts is not None
            return self._call("set_timeouts", ce.timeouts)
        if cmd in (CMD_STARTDAEMON, CMD_STOPDAEMON):
            func = "start_daemon" if cmd == CMD_STARTDAEMON else "stop_daemon"
            if not hasattr(self.backend, func):
                self.err.write("Connection synchronisation daemons are not supported here\n")
                return -1
            d = ce.daemon
            if cmd == CMD_STOPDAEMON:
                return self._call(func, d.state)
            return self._call(
                func,
                SyncDaemonStatus(
                    d.state, d.mcast_ifn, d.syncid, d.sync_maxlen, d.mcast_group, d.mcast_port,
                    d.mcast_ttl,
                ),
            )
        return 0

    # -- listings --

    def list_all(self, fmt: int) -> None:
        backend = self.backend
        if not fmt & L.FMT_RULE:
            self.out.write(L.header(backend.get_info()))
        try:
            services = backend.get_services()
        except IPVSError as exc:
            raise _Exit(1, ipvs_strerror("get_services", exc.errno) + "\n") from None
        self.out.write(L.title(fmt))
        for svc in L.sort_services(services, fmt):
            self.out.write(L.service_entry(svc, fmt, self.resolver))

    def list_service(self, key: ServiceKey, fmt: int) -> None:
        try:
            svc = self.backend.get_service(key)
        except IPVSError as exc:
            raise _Exit(1, ipvs_strerror("get_service", exc.errno) + "\n") from None
        self.out.write(L.title(fmt))
        self.out.write(L.service_entry(svc, fmt, self.resolver))

    def list_timeout(self) -> None:
        try:
            t = self.backend.get_timeouts()
        except IPVSError:
            raise _Exit(1) from None
        self.out.write(L.timeouts_line(t))

    def list_daemon(self) -> None:
        try:
            daemons = self.backend.get_daemons()
        except IPVSError:
            raise _Exit(1) from None
        self.out.write(L.daemons_text(daemons))

    def list_conn(self, fmt: int) -> None:
        try:
            conns = self.backend.get_connections()
        except IPVSError:
            raise _Exit(1, "cannot open file /proc/net/ip_vs_conn\n") from None
        self.out.write(L.conn_title(fmt))
        for c in conns:
            self.out.write(L.conn_row(c, fmt, self.resolver))

    # -- restore --

    def restore(self, program: str, reading_stdin: bool) -> int:
        if reading_stdin:
            raise _tryhelp(program)
        result = 0
        inp = self.inp if self.inp is not None else _stdin_as_ipvsadm_reads_it()
        while True:
            line = inp.readline()
            if not line:
                break
            words = restore_words(line)
            if words:
                result = self.process_options([program, *words], True)
        return result


_WORD_SPLIT = re.compile(r"[ \t\r\n]+")


def restore_words(line: str) -> list[str]:
    """The words ipvsadm's ``config_stream_read`` takes from one line (``ipvsadm`` dropped)."""
    return [w for w in _WORD_SPLIT.split(line) if w and w != "ipvsadm"]


# ---- strict rule files (the director's start-up file) ------------------------------------------

_TABLE_COMMANDS = (
    CMD_ADD, CMD_EDIT, CMD_DEL, CMD_FLUSH, CMD_ADDDEST, CMD_EDITDEST, CMD_DELDEST, CMD_TIMEOUT,
    CMD_ZERO,
)


def parse_restore(
    text: str, source: str, resolver: Resolver | None = None
) -> list[IpvsadmCommand]:
    """Every line of a rule file parsed, or ``RestoreError("source:LINE: ...")`` and nothing.

    The lines are ``ipvsadm -S`` output or any ipvsadm table commands (``-A -E -D -C -a -e -d
    -Z --set``), with or without a leading ``ipvsadm``; blank lines and ``#`` comments are
    skipped. Listing, saving, restoring and daemon commands are refused: a rule file says
    what the table holds, it does not run reports.
    """
    resolver = resolver or Resolver.from_environment()
    commands: list[IpvsadmCommand] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip().startswith("#"):
            continue
        words = restore_words(line)
        if not words:
            continue
        where = f"{source}:{lineno}"
        try:
            ce = parse_command([PROG, *words], resolver)
        except _LineError as exc:
            raise RestoreError(f"{where}: {exc}") from None
        except _Exit as exc:
            detail = (exc.stderr or exc.stdout).strip().splitlines()
            if exc.rc == 0:
                raise RestoreError(f"{where}: help/version is not a table command") from None
            raise RestoreError(f"{where}: {detail[0] if detail else 'invalid command'}") from None
        if ce.cmd not in _TABLE_COMMANDS:
            raise RestoreError(f"{where}: the '{ce.name}' command does not change the table")
        ce.lineno = lineno
        commands.append(ce)
    return commands


def _apply(backend: IPVSBackend, commands: Sequence[IpvsadmCommand], source: str) -> None:
    errors: list[str] = []

    class _Collect:
        def write(self, s: str) -> int:
            errors.append(s)
            return len(s)

    sink: Any = _Collect()
    runner = _Runner(lambda: backend, sink, sink, None, Resolver.from_environment())
    for ce in commands:
        if runner.execute(ce) != 0:
            msg = "".join(errors).strip() or "refused"
            raise RestoreError(f"{source}:{ce.lineno}: {msg}")


def _scratch_copy(backend: IPVSBackend) -> IPVSBackend | None:
    """An in-memory copy of the backend's services and real servers, or None if it has
    something the in-memory table would not take (then there is no rehearsal)."""
    from pylvs.core.table import IPVSTable

    scratch = IPVSTable()
    try:
        for svc in backend.get_services():
            scratch.add_service(svc.spec)
            for d in reversed(svc.dests):
                scratch.add_dest(svc.spec.key, d.spec)
    except IPVSError:
        return None
    return scratch


def apply_commands(
    backend: IPVSBackend, commands: Sequence[IpvsadmCommand], source: str = "<rules>"
) -> None:
    """Apply parsed commands in order, all or nothing as far as the table's rules go.

    The commands are first rehearsed on an in-memory copy of the table, so a line the table
    would refuse (a duplicate service, a real server of a missing service, an unknown
    scheduler) raises ``RestoreError("source:LINE: ...")`` before anything changes. Only a
    refusal the copy could not foresee (the backend failing midway) leaves earlier lines in.
    """
    scratch = _scratch_copy(backend)
    if scratch is not None:
        _apply(scratch, commands, source)
    _apply(backend, commands, source)


def save_rules(backend: IPVSBackend, numeric: bool = True) -> str:
    """The table as ``ipvsadm -S`` (``-Sn`` when numeric) prints it, for files ``-R`` reads back."""
    fmt = L.FMT_RULE | (L.FMT_NUMERIC if numeric else 0)
    resolver = Resolver.from_environment()
    return "".join(
        L.service_entry(svc, fmt, resolver)
        for svc in L.sort_services(backend.get_services(), fmt)
    )


# ---- entry points ---------------------------------------------------------------------------


def select_backend(control_socket: str | None = None) -> IPVSBackend:
    """The table pylvsadm talks to when none is given: the director's control socket, or,
    when no director runs (and no socket was named), the kernel's IPVS over netlink.

    Kept as the one place that chooses.
    """
    from pylvs.control.client import ControlClient

    client = ControlClient(control_socket)
    try:
        client.connect()
    except BackendUnavailable as no_daemon:
        if control_socket is not None:
            raise
        # No director: talk to the kernel's IPVS directly, exactly like ipvsadm.
        from pylvs.netlink.ipvs import KernelIPVS

        try:
            return KernelIPVS()
        except BackendUnavailable as no_ipvs:
            raise BackendUnavailable(f"{no_daemon}, and {no_ipvs}") from None
    return client


def _split_control_socket(argv: list[str]) -> tuple[list[str], str | None]:
    """Take ``--control-socket PATH`` (not an ipvsadm option) out of the arguments."""
    out: list[str] = []
    path: str | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--control-socket" and i + 1 < len(argv):
            path = argv[i + 1]
            i += 2
            continue
        if word.startswith("--control-socket="):
            path = word.split("=", 1)[1]
            i += 1
            continue
        out.append(word)
        i += 1
    return out, path


def _stdin_as_ipvsadm_reads_it() -> IO[str]:
    """Standard input with lines ending only at ``\\n`` (a lone CR is a blank, as in C) and no
    decoding error possible: rule files are bytes to ipvsadm."""
    import io

    global _STDIN
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin
    if _STDIN is None or _STDIN[0] is not buffer:
        # Kept for the life of the process: a collected wrapper would close the real stdin.
        _STDIN = (buffer, io.TextIOWrapper(
            buffer, encoding="utf-8", errors="surrogateescape", newline="\n"
        ))
    return _STDIN[1]


_STDIN: tuple[Any, IO[str]] | None = None


def main(
    argv: Sequence[str] | None = None,
    *,
    backend: IPVSBackend | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    stdin: IO[str] | None = None,
    resolver: Resolver | None = None,
) -> int:
    """Run one ipvsadm command line; returns ipvsadm's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    inp = stdin
    args, socket_path = _split_control_socket(args)
    chosen: list[IPVSBackend] = [backend] if backend is not None else []

    def get_backend() -> IPVSBackend:
        if not chosen:
            chosen.append(select_backend(socket_path))
        return chosen[0]

    runner = _Runner(get_backend, out, err, inp, resolver or Resolver.from_environment())
    try:
        if not args:
            runner.list_all(L.FMT_NONE)
            rc = 0
        else:
            rc = runner.process_options([PROG, *args], False)
    except _Exit as exc:
        out.write(exc.stdout)
        err.write(exc.stderr)
        rc = exc.rc
    except BackendUnavailable as exc:
        err.write(f"pylvsadm: {exc}\n")
        rc = 2
    except IPVSError as exc:
        # A refusal where ipvsadm expects none (a query): libipvs's words, its exit status.
        err.write(ipvs_strerror("", exc.errno) + "\n")
        rc = 255
    except BrokenPipeError:
        # `pylvsadm -Ln | head`: the reader went away; end quietly as a C tool killed by SIGPIPE.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        rc = 141
    finally:
        close = getattr(chosen[0], "close", None) if chosen and backend is None else None
        if close is not None:
            close()
    return rc & 0xFF


def save_main(argv: Sequence[str] | None = None, **kwargs: Any) -> int:
    """``pylvsadm-save [-n]``: ipvsadm-save, the table as ``-A``/``-a`` lines on stdout."""
    args, socket_path = _split_control_socket(list(sys.argv[1:] if argv is None else argv))
    err = kwargs.get("stderr") or sys.stderr
    numeric = False
    for a in args:
        if a == "-n":
            numeric = True
        elif a.startswith("-"):
            err.write(
                "ipvsadm-save: Script to save the IPVS table to stdout.\n"
                "   With the -n option, prints out the table in numeric format.\n"
            )
            return 1
    where = ["--control-socket", socket_path] if socket_path else []
    return main([*where, "-S", *(["-n"] if numeric else [])], **kwargs)


def restore_main(argv: Sequence[str] | None = None, **kwargs: Any) -> int:
    """``pylvsadm-restore``: ipvsadm-restore, ``#`` lines dropped, the table cleared, then ``-R``.

    Like the script, the exit status is the restore's; other arguments are ignored.
    """
    import io

    args, socket_path = _split_control_socket(list(sys.argv[1:] if argv is None else argv))
    del args  # ipvsadm-restore takes none
    where = ["--control-socket", socket_path] if socket_path else []
    inp = kwargs.pop("stdin", None) or _stdin_as_ipvsadm_reads_it()
    kept = [ln for ln in inp.read().split("\n") if not ln.startswith("#")]
    text = "\n".join(kept).rstrip("\n") + "\n"
    main([*where, "-C"], **kwargs)
    return main([*where, "-R"], stdin=io.StringIO(text), **kwargs)


if __name__ == "__main__":
    sys.exit(main())
