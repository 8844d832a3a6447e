"""keepalived.conf's LVS part: ``virtual_server``, ``virtual_server_group``, ``real_server``
and ``sorry_server``.

What this is for: turning the ``virtual_server`` statements the file's top level keeps aside
into typed, immutable descriptions of the table (``ServiceSpec``/``DestSpec`` for the IPVS side)
and of the health checks, with every inherited timer resolved (checker <- real_server <-
virtual_server <- keepalived's default), and diagnostics with file:line. An unknown keyword is a
warning, never silence; a malformed value is an error and nothing starts. The checker blocks are
read by the kinds the caller passes in (:mod:`pylvs.config.keepalived.checkers` says why).

What this is not for: running checks or programming a table (``pylvs.health``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pylvs.config.grammar import Diagnostic, Statement
from pylvs.config.keepalived.checkers import (
    DEFAULT_DELAY_LOOP,
    UNSUPPORTED_CHECKERS,
    CheckerConfig,
    CheckerContext,
    CheckerKind,
    Inherit,
    default_kinds,
)
from pylvs.config.keepalived.tracks import TrackFile
from pylvs.config.values import Invalid, Report, address, arg, integer, port, words
from pylvs.core.model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENCE_TIMEOUT,
    SCHED_FLAG_NAMES,
    DestSpec,
    ForwardingMethod,
    IPAddress,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    TunnelFlags,
    TunnelType,
)
from pylvs.core.schedulers import SCHEDULER_NAMES

__all__ = ["LVSConfig", "RealServerConfig", "VirtualServerConfig", "interpret"]

_METHODS = {
    "NAT": ForwardingMethod.MASQ,
    "DR": ForwardingMethod.DROUTE,
    "TUN": ForwardingMethod.TUNNEL,
}


@dataclass(frozen=True, slots=True)
class RealServerConfig:
    dest: DestSpec
    file: str
    line: int
    inhibit_on_failure: bool = False
    notify_up: str | None = None
    notify_down: str | None = None
    checkers: tuple[CheckerConfig, ...] = ()
    alpha: bool = False
    smtp_alert: bool | None = None  # None: the virtual server's, else global_defs'

    @property
    def name(self) -> str:
        a = self.dest.addr
        return f"[{a}]:{self.dest.port}" if a.version == 6 else f"{a}:{self.dest.port}"


@dataclass(frozen=True, slots=True)
class VirtualServerConfig:
    """A virtual_server block: one or more IPVS services (a group expands) sharing real servers."""

    name: str
    file: str
    line: int
    services: tuple[ServiceSpec, ...]
    real_servers: tuple[RealServerConfig, ...] = ()
    sorry_server: RealServerConfig | None = None
    sorry_server_inhibit: bool = False
    quorum: int = 1
    hysteresis: int = 0
    quorum_up: str | None = None
    quorum_down: str | None = None
    alpha: bool = False
    omega: bool = False
    ha_suspend: bool = False
    delay_loop: float = DEFAULT_DELAY_LOOP
    smtp_alert: bool | None = None


@dataclass(slots=True)
class LVSConfig:
    virtual_servers: list[VirtualServerConfig] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]



@dataclass(slots=True)
class _Context:
    """What the blocks of one file share while it is read."""

    report: Report
    kinds: Mapping[str, CheckerKind]
    checkers: CheckerContext
    groups: dict[str, list[Statement]] = field(default_factory=dict)


def _unknown(ctx: _Context, st: Statement, where: str) -> None:
    ctx.report.warn(st, f"unknown keyword '{st.keyword}' in {where}, ignored")


def interpret(statements: tuple[Statement, ...] | list[Statement],
              track_files: Sequence[TrackFile] = (),
              kinds: Mapping[str, CheckerKind] | None = None) -> LVSConfig:
    """Build the LVS part from the top-level statements the keepalived.conf parser kept aside,
    the track_file definitions (for FILE_CHECK) and the checker kinds (keyword -> kind; None:
    the installed default, ``pylvs.health.checkers.KINDS``)."""
    report = Report()
    ctx = _Context(report, default_kinds() if kinds is None else kinds,
                   CheckerContext(report, {t.name: t for t in track_files}))
    for st in statements:
        if st.keyword == "virtual_server_group":
            if not st.args:
                report.error(st, "virtual_server_group needs a name")
                continue
            ctx.groups[st.args[0]] = list(st.block or ())
    out = LVSConfig()
    seen: dict[ServiceKey, str] = {}
    for st in statements:
        if st.keyword != "virtual_server":
            continue
        try:
            vs = virtual_server(ctx, st)
        except Invalid as exc:
            report.invalid(exc)
            continue
        for spec in vs.services:
            if spec.key in seen:
                report.error(st, f"virtual server {spec.key} already defined at {seen[spec.key]}")
            seen[spec.key] = f"{st.file}:{st.line}"
        out.virtual_servers.append(vs)
    out.diagnostics = report.diagnostics
    return out


def _method(st: Statement, inh: Inherit) -> None:
    kind = arg(st).upper()
    if kind not in _METHODS:
        raise Invalid(st, f"unknown [{st.args[0]}] routing method")
    inh.fwd = _METHODS[kind]
    rest = [a.lower() for a in st.args[1:]]
    if rest and rest[0] == "type":
        ttype = rest[1] if len(rest) > 1 else ""
        if ttype not in ("ipip", "gue", "gre"):
            raise Invalid(st, f"unknown tunnel type '{ttype}'")
        inh.tun_type = {"ipip": TunnelType.IPIP, "gue": TunnelType.GUE, "gre": TunnelType.GRE}[ttype]
        i = 2
        if ttype == "gue":
            if len(rest) < 4 or rest[2] != "port":
                raise Invalid(st, "a GUE tunnel needs 'port NUM'")
            inh.tun_port = port(st, rest[3])
            i = 4
        for flag in rest[i:]:
            if flag == "csum":
                inh.tun_flags = TunnelFlags.CSUM
            elif flag == "remcsum":
                inh.tun_flags = TunnelFlags.REMCSUM
            elif flag == "nocsum":
                inh.tun_flags = TunnelFlags.NOCSUM
            else:
                raise Invalid(st, f"unknown tunnel option '{flag}'")



def _group_keys(ctx: _Context, st: Statement, name: str, protocol: int, af_hint: int) -> list[ServiceKey]:
    body = ctx.groups.get(name)
    if body is None:
        raise Invalid(st, f"virtual_server_group {name} is not defined")
    keys: list[ServiceKey] = []
    for entry in body:
        try:
            if entry.keyword == "fwmark":
                mark = integer(entry, 1, 2**32 - 1)
                af = AF_INET6 if len(entry.args) > 1 and entry.args[1] == "inet6" else af_hint
                keys.append(ServiceKey.mark(mark, af))
                continue
            svc_port = port(entry, entry.args[0]) if entry.args else 0
            for addr in _address_range(entry, entry.keyword):
                keys.append(ServiceKey.inet(protocol, addr, svc_port))
        except Invalid as exc:
            ctx.report.invalid(exc)
    return keys


def _address_range(st: Statement, text: str) -> list[IPAddress]:
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise Invalid(st, f"'{text}' is not an address range") from None
        return list(net) if net.num_addresses <= 65536 else [net.network_address]
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first = address(st, first_text)
        if "." in last_text or ":" in last_text:
            last = address(st, last_text)
        else:
            base = str(first).rsplit("." if first.version == 4 else ":", 1)[0]
            sep = "." if first.version == 4 else ":"
            last = address(st, f"{base}{sep}{last_text}")
        if int(last) < int(first) or int(last) - int(first) > 65535:
            raise Invalid(st, f"bad address range '{text}'")
        return [ipaddress.ip_address(i) if first.version == 4 else ipaddress.IPv6Address(i)
                for i in range(int(first), int(last) + 1)]
    return [address(st, text)]


# ---- virtual_server -------------------------------------------------------------------


def virtual_server(ctx: _Context, st: Statement) -> VirtualServerConfig:
    args = st.args
    if not args:
        raise Invalid(st, "virtual_server needs an address, 'fwmark N' or 'group NAME'")
    body = st.block or ()
    inh = Inherit()
    protocol = Protocol.TCP
    scheduler = "wlc"
    flags = ServiceFlags.NONE
    timeout = 0
    granularity: str | None = None
    pe_name = ""
    af_hint = AF_INET
    kw: dict[str, object] = {}
    real: list[Statement] = []
    sorry: Statement | None = None
    for s in body:
        k = s.keyword
        try:
            if inh.read(s):
                continue
            if k in ("lb_algo", "lvs_sched"):
                scheduler = arg(s).lower()
                if scheduler not in SCHEDULER_NAMES:
                    ctx.report.error(s, f"unknown scheduler '{s.args[0]}'")
            elif k in ("lb_kind", "lvs_method"):
                _method(s, inh)
            elif k == "protocol":
                p = arg(s).upper()
                if p not in ("TCP", "UDP", "SCTP"):
                    ctx.report.error(s, f"unknown protocol '{s.args[0]}'")
                else:
                    protocol = Protocol[p]
            elif k == "persistence_timeout":
                timeout = (integer(s, 1, 2**31 - 1) if s.args
                           else DEFAULT_PERSISTENCE_TIMEOUT)
                flags |= ServiceFlags.PERSISTENT
            elif k == "persistence_granularity":
                granularity = arg(s)
            elif k == "persistence_engine":
                pe_name = arg(s)
            elif k in SCHED_FLAG_NAMES:
                flags |= SCHED_FLAG_NAMES[k]
            elif k == "ops":
                flags |= ServiceFlags.ONEPACKET
            elif k == "ip_family":
                af_hint = AF_INET6 if arg(s) == "inet6" else AF_INET
            elif k == "quorum":
                kw["quorum"] = integer(s, 1, 2**32 - 1)
            elif k == "hysteresis":
                kw["hysteresis"] = integer(s, 0, 2**32 - 1)
            elif k in ("quorum_up", "quorum_down"):
                kw[k] = words(s)
            elif k == "omega":
                kw["omega"] = True
            elif k == "ha_suspend":
                kw["ha_suspend"] = True
            elif k == "sorry_server":
                sorry = s
            elif k == "sorry_server_inhibit":
                kw["sorry_server_inhibit"] = True
            elif k == "real_server":
                real.append(s)
            elif k == "smtp_alert":
                kw["smtp_alert"] = s.flag
            elif k in ("snmp_name", "sorry_server_lvs_method"):
                ctx.report.warn(s, f"'{k}' is accepted but has no effect in pylvs")
            else:
                _unknown(ctx, s, "virtual_server")
        except Invalid as exc:
            ctx.report.invalid(exc)
    if timeout and not (flags & ServiceFlags.PERSISTENT):
        flags |= ServiceFlags.PERSISTENT
    keys = _service_keys(ctx, st, protocol, af_hint)
    name = " ".join(args)
    specs = []
    for key in keys:
        netmask = 0xFFFFFFFF if key.af == AF_INET else 128
        if granularity is not None:
            netmask = _granularity(st, granularity, key.af)
        specs.append(ServiceSpec(key, scheduler, flags, timeout, netmask, pe_name))
    default_port = keys[0].port if keys and not keys[0].fwmark else 0
    servers = []
    for s in real:
        try:
            servers.append(_real_server(ctx, s, inh.copy(), default_port))
        except Invalid as exc:
            ctx.report.invalid(exc)
    sorry_cfg = None
    if sorry is not None:
        try:
            sorry_cfg = _sorry(sorry, inh, default_port)
        except Invalid as exc:
            ctx.report.invalid(exc)
    return VirtualServerConfig(
        name=name, file=st.file, line=st.line, services=tuple(specs),
        real_servers=tuple(servers), sorry_server=sorry_cfg,
        alpha=bool(inh.alpha), delay_loop=inh.delay_loop or DEFAULT_DELAY_LOOP,
        **kw,  # type: ignore[arg-type]
    )


def _service_keys(ctx: _Context, st: Statement, protocol: int, af_hint: int) -> list[ServiceKey]:
    args = st.args
    if args[0] == "fwmark":
        if len(args) < 2:
            raise Invalid(st, "virtual_server fwmark needs a mark")
        mark = integer(st, 1, 2**32 - 1, 1)
        return [ServiceKey.mark(mark, af_hint)]
    if args[0] == "group":
        if len(args) < 2:
            raise Invalid(st, "virtual_server group needs a name")
        return _group_keys(ctx, st, args[1], protocol, af_hint)
    addr = address(st, args[0])
    svc_port = port(st, args[1]) if len(args) > 1 else 0
    return [ServiceKey.inet(protocol, addr, svc_port)]


def _granularity(st: Statement, text: str, af: int) -> int:
    if af == AF_INET6:
        try:
            v = int(text)
        except ValueError:
            raise Invalid(st, f"persistence_granularity '{text}' is not a prefix length") from None
        return v
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        try:
            return int(ipaddress.IPv4Network(f"0.0.0.0/{text}").netmask)
        except ValueError:
            raise Invalid(st, f"persistence_granularity '{text}' is not a netmask") from None


def _sorry(st: Statement, inh: Inherit, default_port: int) -> RealServerConfig:
    addr = address(st, arg(st))
    svc_port = port(st, st.args[1]) if len(st.args) > 1 else default_port
    dest = DestSpec(addr, svc_port, inh.fwd, 1, 0, 0, inh.tun_type, inh.tun_port, inh.tun_flags)
    return RealServerConfig(dest, st.file, st.line)


# ---- real_server and checkers ---------------------------------------------------------


def _real_server(ctx: _Context, st: Statement, inh: Inherit, default_port: int) -> RealServerConfig:
    addr = address(st, arg(st))
    svc_port = port(st, st.args[1]) if len(st.args) > 1 else default_port
    weight = 1
    uth = lth = 0
    kw: dict[str, object] = {}
    checkers: list[Statement] = []
    for s in st.block or ():
        k = s.keyword
        try:
            if inh.read(s):
                continue
            if k == "weight":
                weight = integer(s, 0, 2**31 - 1)
            elif k in ("lb_kind", "lvs_method"):
                _method(s, inh)
            elif k in ("notify_up", "notify_down"):
                kw[k] = words(s)
            elif k == "uthreshold":
                uth = integer(s, 0, 2**31 - 1)
            elif k == "lthreshold":
                lth = integer(s, 0, 2**31 - 1)
            elif k in ctx.kinds:
                checkers.append(s)
            elif k in UNSUPPORTED_CHECKERS:
                ctx.report.warn(s, f"{k} is not supported by pylvs; this checker is ignored")
            elif k == "smtp_alert":
                kw["smtp_alert"] = s.flag
            elif k == "snmp_name":
                ctx.report.warn(s, f"'{k}' is accepted but has no effect in pylvs")
            else:
                _unknown(ctx, s, "real_server")
        except Invalid as exc:
            ctx.report.invalid(exc)
    dest = DestSpec(addr, svc_port, inh.fwd, weight, uth, lth, inh.tun_type, inh.tun_port, inh.tun_flags)
    checks = []
    for c in checkers:
        try:
            checks.append(ctx.kinds[c.keyword].interpret(c, inh.copy(), dest, ctx.checkers))
        except Invalid as exc:
            ctx.report.invalid(exc)
    return RealServerConfig(
        dest, st.file, st.line, inhibit_on_failure=bool(inh.inhibit_on_failure),
        checkers=tuple(checks), alpha=bool(inh.alpha), **kw,  # type: ignore[arg-type]
    )
