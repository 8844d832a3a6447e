"""ipvsadm's command line, parsed and checked exactly as ipvsadm 1.31 parses and checks it.

What this is for: turning one argument vector (``argv[0]`` is the program name) into an
``IpvsadmCommand``, refusing bad input with ipvsadm's own bytes and exit code. ipvsadm's
``parse_options`` is one 200-line switch; here it is one scan (``_scan_options``) that hands each
option to the handler of its group: the virtual service (``-t -u -f -s -p -M -6 -o --pe -b``),
the real server (``-r -g -i -m -w -x -y --tun-*``), the sync daemon (``--mcast-* --syncid
--sync-maxlen``) and the listing (``-c -n --stats --rate ...``). Then the checks that follow
``parse_options`` in ipvsadm (the option/command table, tunnel options, family rules) run in
ipvsadm's order, so the first complaint is the one ipvsadm prints.

Errors: ``IpvsadmExit`` where ipvsadm exits, ``LineError`` where it prints a popt error and
returns -1 (a restore goes on with the next line).

What this is not for: running the command (``runner``) or reading rule files (``rules``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pylvs.core.model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENCE_TIMEOUT,
    ForwardingMethod,
    ServiceFlags,
    Timeouts,
    TunnelFlags,
)
from pylvs.ipvsadm import listing as L
from pylvs.ipvsadm.command import (
    CMD_ADD,
    CMD_ADDDEST,
    CMD_DEL,
    CMD_DELDEST,
    CMD_EDIT,
    CMD_EDITDEST,
    CMD_FLUSH,
    CMD_LIST,
    CMD_NAMES,
    CMD_NONE,
    CMD_RESTORE,
    CMD_SAVE,
    CMD_STARTDAEMON,
    CMD_STOPDAEMON,
    CMD_TIMEOUT,
    CMD_ZERO,
    COMMANDS_V_OPTIONS,
    DEF_MCAST_IFN,
    DEF_SCHED,
    IP_VS_IFNAME_MAXLEN,
    IP_VS_PENAME_MAXLEN,
    IP_VS_SCHEDNAME_MAXLEN,
    MAX_TIMEOUT,
    OPT_NAMES,
    OPTC_CONNECTION,
    OPTC_DAEMON,
    OPTC_EXACT,
    OPTC_FORWARD,
    OPTC_LTHRESHOLD,
    OPTC_MCAST,
    OPTC_MCAST_GROUP,
    OPTC_MCAST_PORT,
    OPTC_MCAST_TTL,
    OPTC_NETMASK,
    OPTC_NOSORT,
    OPTC_NUMERIC,
    OPTC_ONEPACKET,
    OPTC_PERSISTENCE_ENGINE,
    OPTC_PERSISTENT,
    OPTC_PERSISTENTCONN,
    OPTC_RATE,
    OPTC_SCHED_FLAGS,
    OPTC_SCHEDULER,
    OPTC_SERVER,
    OPTC_SERVICE,
    OPTC_STATS,
    OPTC_SYNC_MAXLEN,
    OPTC_SYNCID,
    OPTC_THRESHOLDS,
    OPTC_TIMEOUT,
    OPTC_TUN_CSUM,
    OPTC_TUN_INFO,
    OPTC_TUN_NOCSUM,
    OPTC_TUN_PORT,
    OPTC_TUN_REMCSUM,
    OPTC_TUN_TYPE,
    OPTC_UTHRESHOLD,
    OPTC_WEIGHT,
    TUN_NAMES,
    TUN_OPTS,
    TUNNEL_TYPES_V_OPTIONS,
    IpvsadmCommand,
    ParsedService,
    bit,
)
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
from pylvs.ipvsadm.errors import IpvsadmExit, LineError, fail, tryhelp
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.popt import Option, Popt, PoptError
from pylvs.ipvsadm.usage import VERSION_LINE, usage_text

__all__ = ["parse_command", "restore_words"]

# ---- the option table (popt's, in ipvsadm's order) -----------------------------------------------

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
        raise fail(2, f"invalid timeout value `{buf}' specified")
    return n


def _parse_fwmark(buf: str) -> int:
    value, end, erange = strtol(buf)
    if end != len(buf) or end == 0 or erange or value <= 0 or value > UINT_MAX:
        raise fail(2, f"invalid fwmark value `{buf}' specified")
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
        raise fail(2, "invalid scheduler flag `'")
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
                raise fail(2, f"incompatible scheduler flag `{flag}'")
        else:
            raise fail(2, f"invalid scheduler flag `{flag}'")
    return int(flags)


def _set_option(ce: IpvsadmCommand, optc: int) -> None:
    if ce.options & bit(optc):
        raise fail(2, f"multiple '{OPT_NAMES[optc]}' options specified")
    ce.options |= bit(optc)


def _is_ipv4_multicast(text: str) -> bool:
    a = inet_pton4(text)
    return a is not None and a.is_multicast


# ---- the option scan, one handler per group ------------------------------------------------------


@dataclass
class _Scan:
    """What the option loop carries from one option to the next."""

    ce: IpvsadmCommand
    resolver: Resolver
    sched_flags_arg: str = ""  # -b is read after the loop: it needs the scheduler's name


def _first_command(ctx: Popt, argv: Sequence[str]) -> IpvsadmCommand:
    """The first option must be a command (or -h/-v, which answer at once)."""
    program = argv[0]
    try:
        first = ctx.get_next_opt()
    except PoptError:
        first = None
    if first is None:
        raise tryhelp(program)
    c, optarg = first
    ce = IpvsadmCommand(CMD_NONE, argv=tuple(argv))
    if c in _FIRST_COMMANDS:
        ce.cmd = _FIRST_COMMANDS[c]
    elif c in ("start-daemon", "stop-daemon"):
        ce.cmd = CMD_STARTDAEMON if c == "start-daemon" else CMD_STOPDAEMON
        if optarg in ("master", "backup"):
            ce.daemon.state = optarg
        elif c == "start-daemon":
            raise fail(2, "illegal start-daemon parameter specified")
        else:
            raise fail(2, "illegal start_daemon specified")
    elif c == "h":
        raise IpvsadmExit(0, stdout=usage_text(program))
    elif c == "v":
        raise IpvsadmExit(0, stdout=VERSION_LINE)
    else:
        raise tryhelp(program)
    return ce


def _service_option(scan: _Scan, c: str, optarg: str | None) -> bool:
    """The virtual service's options; False if ``c`` is not one of them."""
    ce, svc = scan.ce, scan.ce.svc
    if c in ("t", "u", "sctp-service"):
        _set_option(ce, OPTC_SERVICE)
        svc.protocol = _PROTOCOL_OF[c]
        parse, _ = _parse_service(optarg, svc, scan.resolver)
        if not parse & 1:
            raise fail(2, "illegal virtual server address[:port] specified")
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
            mask = _parse_netmask(optarg, scan.resolver)
            if mask is None:
                raise fail(2, "illegal virtual server persistent mask specified")
            svc.netmask = mask
        else:
            svc.netmask = atoi(optarg)
            if svc.netmask < 1 or svc.netmask > 128:
                raise fail(2, "illegal ipv6 netmask specified")
    elif c == "6":
        if svc.fwmark:
            svc.af = AF_INET6
            svc.netmask = 128
        else:
            raise fail(2, "-6 used before -f\n")
    elif c == "o":
        _set_option(ce, OPTC_ONEPACKET)
        svc.flags |= ServiceFlags.ONEPACKET
    elif c == "pe":
        _set_option(ce, OPTC_PERSISTENCE_ENGINE)
        svc.pe_name = (optarg or "")[:IP_VS_PENAME_MAXLEN]
    elif c == "b":
        _set_option(ce, OPTC_SCHED_FLAGS)
        scan.sched_flags_arg = (optarg or "")[:127]
    else:
        return False
    return True


def _number_option(ce: IpvsadmCommand, optc: int, optarg: str | None, hi: int, what: str) -> int:
    """A ``string_to_number`` option in [0, hi]: its value, or ipvsadm's "illegal WHAT"."""
    _set_option(ce, optc)
    n = string_to_number(optarg or "", 0, hi)
    if n == -1:
        raise fail(2, f"illegal {what} specified")
    return n


def _port_option(ce: IpvsadmCommand, optc: int, optarg: str | None, hi: int, what: str) -> int:
    """A ``string_to_number`` option in [1, hi]: its value, or ipvsadm's "illegal WHAT"."""
    _set_option(ce, optc)
    n = string_to_number(optarg or "", 1, hi)
    if n == -1:
        raise fail(2, f"illegal {what} specified")
    return n


_FORWARD_OF = {"i": ForwardingMethod.TUNNEL, "g": ForwardingMethod.DROUTE, "m": ForwardingMethod.MASQ}
_TUN_FLAG_OF = {
    "tun-nocsum": (OPTC_TUN_NOCSUM, TunnelFlags.NOCSUM),
    "tun-csum": (OPTC_TUN_CSUM, TunnelFlags.CSUM),
    "tun-remcsum": (OPTC_TUN_REMCSUM, TunnelFlags.REMCSUM),
}


def _dest_option(scan: _Scan, c: str, optarg: str | None) -> bool:
    """The real server's options; False if ``c`` is not one of them."""
    ce, svc, dest = scan.ce, scan.ce.svc, scan.ce.dest
    if c == "r":
        _set_option(ce, OPTC_SERVER)
        t_dest = ParsedService(**vars(svc))
        parse, _ = _parse_service(optarg, t_dest, scan.resolver)
        dest.af, dest.addr, dest.port = t_dest.af, t_dest.addr, t_dest.port
        if not parse & 1:
            raise fail(2, "illegal real server address[:port] specified")
        if parse == 1:
            dest.port = svc.port
    elif c in _FORWARD_OF:
        _set_option(ce, OPTC_FORWARD)
        dest.fwd = int(_FORWARD_OF[c])
    elif c == "w":
        dest.weight = _number_option(ce, OPTC_WEIGHT, optarg, INT_MAX, "weight")
    elif c == "x":
        dest.u_threshold = _number_option(ce, OPTC_UTHRESHOLD, optarg, INT_MAX, "u_threshold")
    elif c == "y":
        dest.l_threshold = _number_option(ce, OPTC_LTHRESHOLD, optarg, INT_MAX, "l_threshold")
    elif c == "tun-type":
        _set_option(ce, OPTC_TUN_TYPE)
        if optarg not in TUN_NAMES:
            raise fail(2, "illegal tunnel type specified")
        dest.tun_type = TUN_NAMES.index(optarg)
    elif c == "tun-port":
        dest.tun_port = _port_option(ce, OPTC_TUN_PORT, optarg, 65535, "tunnel port")
    elif c in _TUN_FLAG_OF:
        optc, flag = _TUN_FLAG_OF[c]
        _set_option(ce, optc)
        dest.tun_flags |= int(flag)
    else:
        return False
    return True


def _daemon_option(scan: _Scan, c: str, optarg: str | None) -> bool:
    """The sync daemon's options; False if ``c`` is not one of them."""
    ce, daemon = scan.ce, scan.ce.daemon
    if c == "mcast-interface":
        _set_option(ce, OPTC_MCAST)
        daemon.mcast_ifn = (optarg or "")[: IP_VS_IFNAME_MAXLEN - 1]
    elif c == "I":
        daemon.syncid = _number_option(ce, OPTC_SYNCID, optarg, 255, "syncid")
    elif c == "mcast-group":
        _set_option(ce, OPTC_MCAST_GROUP)
        group = optarg or ""
        if ":" in group:
            a6 = inet_pton6(group)
            if a6 is None or not a6.is_multicast:
                raise fail(2, f"invalid IPv6 mcast-group `{group}'")
            daemon.mcast_af = AF_INET6
        else:
            if not _is_ipv4_multicast(group):
                raise fail(2, f"invalid IPv4 mcast-group `{group}'")
            daemon.mcast_af = AF_INET
        daemon.mcast_group = group
    elif c == "mcast-port":
        daemon.mcast_port = _port_option(ce, OPTC_MCAST_PORT, optarg, 65535, "mcast-port")
    elif c == "mcast-ttl":
        daemon.mcast_ttl = _port_option(ce, OPTC_MCAST_TTL, optarg, 255, "mcast-ttl")
    elif c == "sync-maxlen":
        daemon.sync_maxlen = _port_option(
            ce, OPTC_SYNC_MAXLEN, optarg, 65535 - 20 - 8, "sync-maxlen"
        )
    else:
        return False
    return True


def _listing_option(scan: _Scan, c: str, optarg: str | None) -> bool:
    """What to list and how; False if ``c`` is not one of them."""
    ce = scan.ce
    if c == "c":
        _set_option(ce, OPTC_CONNECTION)
    elif c in _FLAG_FOR:
        optc, fmt = _FLAG_FOR[c]
        _set_option(ce, optc)
        ce.fmt |= fmt
    elif c == "timeout":
        _set_option(ce, OPTC_TIMEOUT)
    elif c == "daemon":
        _set_option(ce, OPTC_DAEMON)
    elif c == "sort":
        pass  # the default; accepted for compatibility
    else:
        return False
    return True


_OPTION_GROUPS: tuple[Callable[[_Scan, str, str | None], bool], ...] = (
    _service_option, _dest_option, _daemon_option, _listing_option,
)


def _scan_options(ctx: Popt, scan: _Scan) -> None:
    """ipvsadm's option loop after the command: each option to its group's handler."""
    while True:
        try:
            got = ctx.get_next_opt()
        except PoptError as exc:
            raise LineError(f"{exc.bad}: {str(exc).split(': ', 1)[-1]}") from None
        if got is None:
            return
        c, optarg = got
        if not any(handler(scan, c, optarg) for handler in _OPTION_GROUPS):
            raise fail(2, f"invalid option `{ctx.bad_option()}'")


def _trailing_arguments(ctx: Popt, scan: _Scan) -> None:
    """``--set``'s three numbers, no other leftover word, then ``-b`` against the scheduler."""
    ce, svc = scan.ce, scan.ce.svc
    if ce.cmd == CMD_TIMEOUT:
        a0 = ctx.get_arg()
        a1 = ctx.get_arg() if a0 is not None else None
        a2 = ctx.get_arg() if a1 is not None else None
        if a0 is None or a1 is None or a2 is None:
            raise fail(2, "--set option requires 3 timeout values")
        ce.timeouts = Timeouts(
            _parse_timeout(a0, 0, MAX_TIMEOUT),
            _parse_timeout(a1, 0, MAX_TIMEOUT),
            _parse_timeout(a2, 0, MAX_TIMEOUT),
        )
    extra = ctx.get_arg()
    if extra is not None:
        raise fail(2, f"unexpected argument {extra}")
    if scan.sched_flags_arg:
        sched_bits = int(ServiceFlags.SCHED1 | ServiceFlags.SCHED2 | ServiceFlags.SCHED3)
        svc.flags &= ~sched_bits
        svc.flags |= _parse_sched_flags(svc.sched_name, scan.sched_flags_arg)


def _parse_options(argv: Sequence[str], resolver: Resolver) -> IpvsadmCommand:
    """ipvsadm's ``parse_options``: may raise IpvsadmExit (exit) or LineError (return -1)."""
    ctx = Popt(argv, _OPTIONS)
    scan = _Scan(_first_command(ctx, argv), resolver)
    _scan_options(ctx, scan)
    _trailing_arguments(ctx, scan)
    return scan.ce


# ---- the checks after parse_options ----------------------------------------------------------------


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
        if not options & bit(k):
            if rule == "+":
                raise fail(2, f"You need to supply the '{OPT_NAMES[k]}' option for {context}")
        else:
            if rule == "x":
                raise fail(2, f"Illegal '{OPT_NAMES[k]}' option with {context}")
            if rule == "1":
                count += 1
                if count == 1:
                    last = k
                    continue
                raise fail(
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

    Raises ``IpvsadmExit`` where ipvsadm would exit and ``LineError`` where it would print a
    popt error and return -1; everything ipvsadm checks before touching the table is checked here.
    """
    resolver = resolver or Resolver.from_environment()
    ce = _parse_options(argv, resolver)
    _generic_opt_check(ce.cmd, ce.options)
    if ce.cmd in (CMD_ADD, CMD_EDIT):
        _check_service(ce)
    if ce.cmd == CMD_STARTDAEMON and not ce.daemon.mcast_ifn:
        ce.daemon.mcast_ifn = DEF_MCAST_IFN
    if ce.cmd in (CMD_ADDDEST, CMD_EDITDEST):
        _check_dest(ce)
    if ce.cmd == CMD_LIST:
        _check_list(ce.options)
    return ce


def _check_service(ce: IpvsadmCommand) -> None:
    svc = ce.svc
    if not svc.fwmark and not svc.port and not svc.flags & ServiceFlags.PERSISTENT:
        raise fail(2, "Zero port specified for non-persistent service")
    if svc.flags & ServiceFlags.ONEPACKET and not svc.fwmark and svc.protocol != 17:
        raise fail(2, "One-Packet Scheduling is only for UDP virtual services")
    if not svc.sched_name:
        svc.sched_name = DEF_SCHED


_TUN_BITS = (
    bit(OPTC_TUN_TYPE) | bit(OPTC_TUN_PORT) | bit(OPTC_TUN_NOCSUM) | bit(OPTC_TUN_CSUM)
    | bit(OPTC_TUN_REMCSUM)
)


def _check_dest(ce: IpvsadmCommand) -> None:
    svc, dest = ce.svc, ce.dest
    fwd = dest.fwd
    if not svc.fwmark and fwd in (ForwardingMethod.TUNNEL, ForwardingMethod.DROUTE):
        dest.port = svc.port
    if dest.af != svc.af and fwd != ForwardingMethod.TUNNEL:
        raise fail(2, "Different address family is allowed only for tunneling servers")
    if ce.options & _TUN_BITS and fwd != ForwardingMethod.TUNNEL:
        raise fail(2, "Tunnel options conflict with forward method")
    _tunnel_opt_check(dest.tun_type, ce.options)


def _check_list(opts: int) -> None:
    if (
        opts & (bit(OPTC_CONNECTION) | bit(OPTC_TIMEOUT) | bit(OPTC_DAEMON))
        and opts & (bit(OPTC_STATS) | bit(OPTC_RATE) | bit(OPTC_THRESHOLDS))
    ) or (
        opts & (bit(OPTC_TIMEOUT) | bit(OPTC_DAEMON)) and opts & bit(OPTC_PERSISTENTCONN)
    ):
        raise fail(2, "options conflicts in the list command")


_WORD_SPLIT = re.compile(r"[ \t\r\n]+")


def restore_words(line: str) -> list[str]:
    """The words ipvsadm's ``config_stream_read`` takes from one line (``ipvsadm`` dropped)."""
    return [w for w in _WORD_SPLIT.split(line) if w and w != "ipvsadm"]
