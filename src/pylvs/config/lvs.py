"""keepalived.conf, LVS part: virtual_server, virtual_server_group, real_server and their checkers.

What this is for: turning the ``virtual_server`` statements that the keepalived.conf grammar
(``pylvs.config.grammar``/``keepalived``) keeps aside into typed, immutable descriptions of the
table (``ServiceSpec``/``DestSpec`` for the IPVS side) and of the health checks, with every
inherited timer resolved (checker <- real_server <- virtual_server <- keepalived's default), and
diagnostics with file:line. An unknown keyword is a warning, never silence; a malformed value is
an error and nothing starts.

What this is not for: running checks or programming a table (``pylvs.health``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pylvs.config.grammar import Diagnostic, Statement

if TYPE_CHECKING:
    from pylvs.config.keepalived import TrackFile
from pylvs.core.model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENCE_TIMEOUT,
    SCHED_FLAG_NAMES,
    SCHEDULER_NAMES,
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

CHECKER_KINDS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "DNS_CHECK", "SMTP_CHECK",
                 "UDP_CHECK", "PING_CHECK", "FILE_CHECK")
# Checkers keepalived has that pylvs does not run: parsed, warned about, ignored.
UNSUPPORTED_CHECKERS = ("BFD_CHECK",)
# keepalived watches a FILE_CHECK's file with inotify; pylvs reads it this often.
FILE_CHECK_INTERVAL = 1.0
DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
_METHODS = {
    "NAT": ForwardingMethod.MASQ,
    "DR": ForwardingMethod.DROUTE,
    "TUN": ForwardingMethod.TUNNEL,
}
_DNS_TYPES = ("A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA")


@dataclass(frozen=True, slots=True)
class UrlCheck:
    """One ``url { }`` of HTTP_GET/SSL_GET: what a good answer looks like."""

    path: str
    digest: str | None = None
    status_codes: tuple[tuple[int, int], ...] = ((200, 299),)
    virtualhost: str | None = None
    regex: str | None = None
    regex_no_match: bool = False

    def status_ok(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.status_codes)


@dataclass(frozen=True, slots=True)
class CheckerConfig:
    """One checker of a real server, with every timer already resolved."""

    kind: str
    file: str
    line: int
    connect_ip: IPAddress
    connect_port: int
    bindto: IPAddress | None = None
    bind_port: int = 0
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: int = 1
    delay_before_retry: float = 1.0
    delay_loop: float = DEFAULT_DELAY_LOOP
    warmup: float = DEFAULT_DELAY_LOOP
    alpha: bool = False
    # HTTP_GET / SSL_GET
    urls: tuple[UrlCheck, ...] = ()
    http_protocol: str = "1.0"
    virtualhost: str | None = None
    enable_sni: bool = False
    # MISC_CHECK
    misc_path: str = ""
    misc_timeout: float | None = None
    misc_dynamic: bool = False
    # DNS_CHECK
    dns_type: str = "SOA"
    dns_name: str = "."
    # SMTP_CHECK
    helo_name: str = ""
    # UDP_CHECK: what is sent (None: random bytes), whether an answer is needed, and the
    # pattern it must start with as (value, mask) bytes (mask 0 nibbles: keepalived's X)
    udp_payload: bytes | None = None
    require_reply: bool = False
    reply_value: bytes = b""
    reply_mask: bytes = b""
    min_reply_length: int = 0
    max_reply_length: int = 255
    # FILE_CHECK: the track_file's path, the weight its value is multiplied by (0: any
    # non-zero value is a failure; reverse flips the sign) and whether it moves the weight
    file_path: str = ""
    file_weight: int = 1
    file_reverse: bool = False
    file_dynamic: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


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


class _Bad(Exception):
    """A value that makes its statement unusable (already reported)."""


@dataclass(slots=True)
class _Inherit:
    """Settings a real_server or checker takes from the block around it unless it sets its own."""

    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    alpha: bool | None = None
    inhibit_on_failure: bool | None = None
    virtualhost: str | None = None
    fwd: ForwardingMethod = ForwardingMethod.MASQ
    tun_type: TunnelType = TunnelType.IPIP
    tun_port: int = 0
    tun_flags: TunnelFlags = TunnelFlags.NOCSUM

    def copy(self) -> _Inherit:
        return _Inherit(
            self.delay_loop, self.connect_timeout, self.retry, self.delay_before_retry,
            self.warmup, self.alpha, self.inhibit_on_failure, self.virtualhost,
            self.fwd, self.tun_type, self.tun_port, self.tun_flags,
        )


_INHERITED = {
    "delay_loop", "connect_timeout", "retry", "delay_before_retry", "warmup",
    "alpha", "inhibit_on_failure", "virtualhost",
}


class _Interp:
    def __init__(self, track_files: Sequence[TrackFile] = ()) -> None:
        self.diags: list[Diagnostic] = []
        self.groups: dict[str, list[Statement]] = {}
        self.track_files = {t.name: t for t in track_files}

    # ---- diagnostics and scalar values ---------------------------------------------------

    def error(self, st: Statement, msg: str) -> None:
        self.diags.append(Diagnostic("error", st.file, st.line, msg))

    def warn(self, st: Statement, msg: str) -> None:
        self.diags.append(Diagnostic("warning", st.file, st.line, msg))

    def unknown(self, st: Statement, where: str) -> None:
        self.warn(st, f"unknown keyword '{st.keyword}' in {where}, ignored")

    def arg(self, st: Statement, n: int = 0) -> str:
        if len(st.args) <= n:
            self.error(st, f"'{st.keyword}' needs a value")
            raise _Bad
        return st.args[n]

    def number(self, st: Statement, lo: float, hi: float, n: int = 0) -> float:
        text = self.arg(st, n)
        try:
            v = float(text)
        except ValueError:
            self.error(st, f"'{st.keyword}': '{text}' is not a number")
            raise _Bad from None
        if not lo <= v <= hi:
            self.error(st, f"'{st.keyword}': {text} outside range [{lo:g}, {hi:g}]")
            raise _Bad
        return v

    def integer(self, st: Statement, lo: int, hi: int, n: int = 0) -> int:
        text = self.arg(st, n)
        try:
            v = int(text, 10)
        except ValueError:
            self.error(st, f"'{st.keyword}': '{text}' is not an integer")
            raise _Bad from None
        if not lo <= v <= hi:
            self.error(st, f"'{st.keyword}': {v} outside range [{lo}, {hi}]")
            raise _Bad
        return v

    def boolean(self, st: Statement) -> bool:
        if not st.args:
            return True
        v = st.args[0].lower()
        if v in ("on", "true", "yes", "1"):
            return True
        if v in ("off", "false", "no", "0"):
            return False
        self.error(st, f"'{st.keyword}': '{st.args[0]}' is not a boolean")
        raise _Bad

    def address(self, st: Statement, text: str) -> IPAddress:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            self.error(st, f"'{text}' is not an IP address")
            raise _Bad from None

    def port(self, st: Statement, text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            self.error(st, f"'{text}' is not a port number")
            raise _Bad from None
        if not 0 <= v <= 65535:
            self.error(st, f"port {v} outside range [0, 65535]")
            raise _Bad
        return v

    def script(self, st: Statement) -> str:
        return " ".join(st.args) if st.args else self.arg(st)

    # ---- shared settings ------------------------------------------------------------------

    def method(self, st: Statement, inh: _Inherit) -> None:
        kind = self.arg(st).upper()
        if kind not in _METHODS:
            self.error(st, f"unknown [{st.args[0]}] routing method")
            raise _Bad
        inh.fwd = _METHODS[kind]
        rest = [a.lower() for a in st.args[1:]]
        if rest and rest[0] == "type":
            ttype = rest[1] if len(rest) > 1 else ""
            if ttype not in ("ipip", "gue", "gre"):
                self.error(st, f"unknown tunnel type '{ttype}'")
                raise _Bad
            inh.tun_type = {"ipip": TunnelType.IPIP, "gue": TunnelType.GUE, "gre": TunnelType.GRE}[ttype]
            i = 2
            if ttype == "gue":
                if len(rest) < 4 or rest[2] != "port":
                    self.error(st, "a GUE tunnel needs 'port NUM'")
                    raise _Bad
                inh.tun_port = self.port(st, rest[3])
                i = 4
            for flag in rest[i:]:
                if flag == "csum":
                    inh.tun_flags = TunnelFlags.CSUM
                elif flag == "remcsum":
                    inh.tun_flags = TunnelFlags.REMCSUM
                elif flag == "nocsum":
                    inh.tun_flags = TunnelFlags.NOCSUM
                else:
                    self.error(st, f"unknown tunnel option '{flag}'")
                    raise _Bad

    def inherited(self, st: Statement, inh: _Inherit) -> bool:
        """Apply a setting shared by every level; False if ``st`` is not one."""
        k = st.keyword
        if k not in _INHERITED:
            return False
        if k == "delay_loop":
            inh.delay_loop = self.number(st, 0.000001, 4294.967295)
        elif k == "connect_timeout":
            inh.connect_timeout = self.number(st, 0.000001, 4294.967295)
        elif k == "retry":
            inh.retry = self.integer(st, 0, 2**31 - 1)
        elif k == "delay_before_retry":
            inh.delay_before_retry = self.number(st, 0, 4294.967295)
        elif k == "warmup":
            inh.warmup = self.number(st, 0, 4294.967295)
        elif k == "alpha":
            inh.alpha = self.boolean(st)
        elif k == "inhibit_on_failure":
            inh.inhibit_on_failure = self.boolean(st)
        elif k == "virtualhost":
            inh.virtualhost = self.arg(st)
        return True

    # ---- virtual_server_group -------------------------------------------------------------

    def group_keys(self, st: Statement, name: str, protocol: int, af_hint: int) -> list[ServiceKey]:
        body = self.groups.get(name)
        if body is None:
            self.error(st, f"virtual_server_group {name} is not defined")
            raise _Bad
        keys: list[ServiceKey] = []
        for entry in body:
            try:
                if entry.keyword == "fwmark":
                    mark = self.integer(entry, 1, 2**32 - 1)
                    af = AF_INET6 if len(entry.args) > 1 and entry.args[1] == "inet6" else af_hint
                    keys.append(ServiceKey.mark(mark, af))
                    continue
                port = self.port(entry, entry.args[0]) if entry.args else 0
                for addr in self.address_range(entry, entry.keyword):
                    keys.append(ServiceKey.inet(protocol, addr, port))
            except _Bad:
                continue
        return keys

    def address_range(self, st: Statement, text: str) -> list[IPAddress]:
        if "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                self.error(st, f"'{text}' is not an address range")
                raise _Bad from None
            return list(net) if net.num_addresses <= 65536 else [net.network_address]
        if "-" in text:
            first_text, _, last_text = text.partition("-")
            first = self.address(st, first_text)
            if "." in last_text or ":" in last_text:
                last = self.address(st, last_text)
            else:
                base = str(first).rsplit("." if first.version == 4 else ":", 1)[0]
                sep = "." if first.version == 4 else ":"
                last = self.address(st, f"{base}{sep}{last_text}")
            if int(last) < int(first) or int(last) - int(first) > 65535:
                self.error(st, f"bad address range '{text}'")
                raise _Bad
            return [ipaddress.ip_address(i) if first.version == 4 else ipaddress.IPv6Address(i)
                    for i in range(int(first), int(last) + 1)]
        return [self.address(st, text)]

    # ---- virtual_server -------------------------------------------------------------------

    def virtual_server(self, st: Statement) -> VirtualServerConfig:
        args = st.args
        if not args:
            self.error(st, "virtual_server needs an address, 'fwmark N' or 'group NAME'")
            raise _Bad
        body = st.block or ()
        inh = _Inherit()
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
                if self.inherited(s, inh):
                    continue
                if k in ("lb_algo", "lvs_sched"):
                    scheduler = self.arg(s).lower()
                    if scheduler not in SCHEDULER_NAMES:
                        self.error(s, f"unknown scheduler '{s.args[0]}'")
                elif k in ("lb_kind", "lvs_method"):
                    self.method(s, inh)
                elif k == "protocol":
                    p = self.arg(s).upper()
                    if p not in ("TCP", "UDP", "SCTP"):
                        self.error(s, f"unknown protocol '{s.args[0]}'")
                    else:
                        protocol = Protocol[p]
                elif k == "persistence_timeout":
                    timeout = (self.integer(s, 1, 2**31 - 1) if s.args
                               else DEFAULT_PERSISTENCE_TIMEOUT)
                    flags |= ServiceFlags.PERSISTENT
                elif k == "persistence_granularity":
                    granularity = self.arg(s)
                elif k == "persistence_engine":
                    pe_name = self.arg(s)
                elif k in SCHED_FLAG_NAMES:
                    flags |= SCHED_FLAG_NAMES[k]
                elif k == "ops":
                    flags |= ServiceFlags.ONEPACKET
                elif k == "ip_family":
                    af_hint = AF_INET6 if self.arg(s) == "inet6" else AF_INET
                elif k == "quorum":
                    kw["quorum"] = self.integer(s, 1, 2**32 - 1)
                elif k == "hysteresis":
                    kw["hysteresis"] = self.integer(s, 0, 2**32 - 1)
                elif k in ("quorum_up", "quorum_down"):
                    kw[k] = self.script(s)
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
                    self.warn(s, f"'{k}' is accepted but has no effect in pylvs")
                else:
                    self.unknown(s, "virtual_server")
            except _Bad:
                continue
        if timeout and not (flags & ServiceFlags.PERSISTENT):
            flags |= ServiceFlags.PERSISTENT
        keys = self.service_keys(st, protocol, af_hint)
        name = " ".join(args)
        specs = []
        for key in keys:
            netmask = 0xFFFFFFFF if key.af == AF_INET else 128
            if granularity is not None:
                netmask = self.granularity(st, granularity, key.af)
            specs.append(ServiceSpec(key, scheduler, flags, timeout, netmask, pe_name))
        default_port = keys[0].port if keys and not keys[0].fwmark else 0
        servers = []
        for s in real:
            try:
                servers.append(self.real_server(s, inh.copy(), default_port))
            except _Bad:
                continue
        sorry_cfg = None
        if sorry is not None:
            try:
                sorry_cfg = self.sorry(sorry, inh, default_port)
            except _Bad:
                pass
        return VirtualServerConfig(
            name=name, file=st.file, line=st.line, services=tuple(specs),
            real_servers=tuple(servers), sorry_server=sorry_cfg,
            alpha=bool(inh.alpha), delay_loop=inh.delay_loop or DEFAULT_DELAY_LOOP,
            **kw,  # type: ignore[arg-type]
        )

    def service_keys(self, st: Statement, protocol: int, af_hint: int) -> list[ServiceKey]:
        args = st.args
        if args[0] == "fwmark":
            if len(args) < 2:
                self.error(st, "virtual_server fwmark needs a mark")
                raise _Bad
            mark = self.integer(st, 1, 2**32 - 1, 1)
            return [ServiceKey.mark(mark, af_hint)]
        if args[0] == "group":
            if len(args) < 2:
                self.error(st, "virtual_server group needs a name")
                raise _Bad
            return self.group_keys(st, args[1], protocol, af_hint)
        addr = self.address(st, args[0])
        port = self.port(st, args[1]) if len(args) > 1 else 0
        return [ServiceKey.inet(protocol, addr, port)]

    def granularity(self, st: Statement, text: str, af: int) -> int:
        if af == AF_INET6:
            try:
                v = int(text)
            except ValueError:
                self.error(st, f"persistence_granularity '{text}' is not a prefix length")
                raise _Bad from None
            return v
        try:
            return int(ipaddress.IPv4Address(text))
        except ValueError:
            try:
                return int(ipaddress.IPv4Network(f"0.0.0.0/{text}").netmask)
            except ValueError:
                self.error(st, f"persistence_granularity '{text}' is not a netmask")
                raise _Bad from None

    def sorry(self, st: Statement, inh: _Inherit, default_port: int) -> RealServerConfig:
        addr = self.address(st, self.arg(st))
        port = self.port(st, st.args[1]) if len(st.args) > 1 else default_port
        dest = DestSpec(addr, port, inh.fwd, 1, 0, 0, inh.tun_type, inh.tun_port, inh.tun_flags)
        return RealServerConfig(dest, st.file, st.line)

    # ---- real_server and checkers ---------------------------------------------------------

    def real_server(self, st: Statement, inh: _Inherit, default_port: int) -> RealServerConfig:
        addr = self.address(st, self.arg(st))
        port = self.port(st, st.args[1]) if len(st.args) > 1 else default_port
        weight = 1
        uth = lth = 0
        kw: dict[str, object] = {}
        checkers: list[Statement] = []
        for s in st.block or ():
            k = s.keyword
            try:
                if self.inherited(s, inh):
                    continue
                if k == "weight":
                    weight = self.integer(s, 0, 2**31 - 1)
                elif k in ("lb_kind", "lvs_method"):
                    self.method(s, inh)
                elif k in ("notify_up", "notify_down"):
                    kw[k] = self.script(s)
                elif k == "uthreshold":
                    uth = self.integer(s, 0, 2**31 - 1)
                elif k == "lthreshold":
                    lth = self.integer(s, 0, 2**31 - 1)
                elif k in CHECKER_KINDS:
                    checkers.append(s)
                elif k in UNSUPPORTED_CHECKERS:
                    self.warn(s, f"{k} is not supported by pylvs; this checker is ignored")
                elif k == "smtp_alert":
                    kw["smtp_alert"] = s.flag
                elif k == "snmp_name":
                    self.warn(s, f"'{k}' is accepted but has no effect in pylvs")
                else:
                    self.unknown(s, "real_server")
            except _Bad:
                continue
        dest = DestSpec(addr, port, inh.fwd, weight, uth, lth, inh.tun_type, inh.tun_port, inh.tun_flags)
        checks = []
        for c in checkers:
            try:
                checks.append(self.checker(c, inh.copy(), dest))
            except _Bad:
                continue
        return RealServerConfig(
            dest, st.file, st.line, inhibit_on_failure=bool(inh.inhibit_on_failure),
            checkers=tuple(checks), alpha=bool(inh.alpha), **kw,  # type: ignore[arg-type]
        )

    def file_check(self, st: Statement, dest: DestSpec) -> CheckerConfig:
        """FILE_CHECK { track_file NAME; weight W [reverse]; dynamic }: none of the other
        checkers' options; the file is read every ``FILE_CHECK_INTERVAL`` seconds."""
        tf = None
        named = False  # a track_file line was there (and its error reported)
        kw: dict[str, object] = {}
        for s in st.block or ():
            k = s.keyword
            try:
                if k == "track_file":
                    name = self.arg(s)
                    tf = self.track_files.get(name)
                    if tf is None:
                        self.error(s, f"FILE_CHECK: no track_file named '{name}'")
                        named = True
                        raise _Bad
                elif k == "weight":
                    kw["file_weight"] = self.integer(s, -2147483647, 2147483647)
                    if len(s.args) > 1:
                        if s.args[1] != "reverse":
                            self.error(s, f"FILE_CHECK: unexpected '{s.args[1]}' after weight")
                        kw["file_reverse"] = True
                elif k == "dynamic":
                    kw["file_dynamic"] = True
                else:
                    self.unknown(s, "FILE_CHECK")
            except _Bad:
                continue
        if tf is None:
            if not named:
                self.error(st, "FILE_CHECK needs a track_file")
            raise _Bad
        if "file_weight" not in kw:
            kw["file_weight"], kw["file_reverse"] = tf.weight, tf.reverse
        return CheckerConfig(
            kind="FILE_CHECK", file=st.file, line=st.line, connect_ip=dest.addr, connect_port=0,
            retry=0, delay_loop=FILE_CHECK_INTERVAL, warmup=0.0, file_path=tf.path,
            **kw,  # type: ignore[arg-type]
        )

    def checker(self, st: Statement, inh: _Inherit, dest: DestSpec) -> CheckerConfig:
        kind = st.keyword
        if kind == "FILE_CHECK":
            return self.file_check(st, dest)
        kw: dict[str, object] = {}
        connect_ip: IPAddress = dest.addr
        connect_port = dest.port
        urls: list[UrlCheck] = []
        for s in st.block or ():
            k = s.keyword
            try:
                if k == "nb_get_retry" and kind in ("HTTP_GET", "SSL_GET"):
                    # keepalived's older name for retry, still accepted in the HTTP checkers only
                    inh.retry = self.integer(s, 0, 2**31 - 1)
                    continue
                if self.inherited(s, inh):
                    continue
                if k == "connect_ip":
                    connect_ip = self.address(s, self.arg(s))
                elif k == "connect_port":
                    connect_port = self.port(s, self.arg(s))
                elif k == "bindto":
                    kw["bindto"] = self.address(s, self.arg(s))
                elif k == "bind_port":
                    kw["bind_port"] = self.port(s, self.arg(s))
                elif k == "url" and kind in ("HTTP_GET", "SSL_GET"):
                    urls.append(self.url(s))
                elif k == "http_protocol" and kind in ("HTTP_GET", "SSL_GET"):
                    proto = self.arg(s)
                    if proto not in ("1.0", "1.0C", "1.1"):
                        self.error(s, f"unknown http_protocol '{proto}'")
                    kw["http_protocol"] = proto
                elif k == "enable_sni" and kind == "SSL_GET":
                    kw["enable_sni"] = True
                elif k == "misc_path" and kind == "MISC_CHECK":
                    kw["misc_path"] = self.script(s)
                elif k == "misc_timeout" and kind == "MISC_CHECK":
                    kw["misc_timeout"] = self.number(s, 0.000001, 4294.967295)
                elif k == "misc_dynamic" and kind == "MISC_CHECK":
                    kw["misc_dynamic"] = True
                elif k == "type" and kind == "DNS_CHECK":
                    t = self.arg(s).upper()
                    if t not in _DNS_TYPES:
                        self.error(s, f"unknown DNS query type '{s.args[0]}'")
                    kw["dns_type"] = t
                elif k == "name" and kind == "DNS_CHECK":
                    kw["dns_name"] = self.arg(s)
                elif k == "helo_name" and kind == "SMTP_CHECK":
                    kw["helo_name"] = self.script(s)
                elif k == "host" and kind == "SMTP_CHECK":
                    # keepalived 1.x: host { connect_ip ... } inside SMTP_CHECK
                    for h in s.block or ():
                        if h.keyword == "connect_ip":
                            connect_ip = self.address(h, self.arg(h))
                        elif h.keyword == "connect_port":
                            connect_port = self.port(h, self.arg(h))
                        elif h.keyword == "bindto":
                            kw["bindto"] = self.address(h, self.arg(h))
                elif k == "payload" and kind == "UDP_CHECK":
                    kw["udp_payload"] = self.hex_string(s, " ".join(s.args), wildcards=False)[0]
                elif k == "require_reply" and kind == "UDP_CHECK":
                    kw["require_reply"] = True
                    if s.args:
                        kw["reply_value"], kw["reply_mask"] = self.hex_string(
                            s, " ".join(s.args), wildcards=True)
                elif k in ("min_reply_length", "max_reply_length") and kind == "UDP_CHECK":
                    kw[k] = self.integer(s, 0, 65535)
                elif k in ("fwmark", "bind_if", "log_all_failures", "fast_recovery", "user"):
                    self.warn(s, f"'{k}' is accepted but has no effect in pylvs")
                else:
                    self.unknown(s, kind)
            except _Bad:
                continue
        if kind == "MISC_CHECK" and not kw.get("misc_path"):
            self.error(st, "MISC_CHECK needs misc_path")
            raise _Bad
        if kind in ("HTTP_GET", "SSL_GET") and not urls:
            self.error(st, f"{kind} needs at least one url")
            raise _Bad
        lo, hi = kw.get("min_reply_length", 0), kw.get("max_reply_length", 255)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            self.error(st, "UDP_CHECK: min_reply_length is greater than max_reply_length")
            raise _Bad
        if connect_port == 0 and kind not in ("MISC_CHECK", "PING_CHECK"):
            connect_port = {"HTTP_GET": 80, "SSL_GET": 443, "DNS_CHECK": 53, "SMTP_CHECK": 25}.get(kind, 0)
            if connect_port == 0:
                self.error(st, f"{kind} needs a port: the real server has none and connect_port is not set")
                raise _Bad
        default_retry = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1)
        delay_loop = inh.delay_loop if inh.delay_loop is not None else DEFAULT_DELAY_LOOP
        default_dbr = {"HTTP_GET": 3.0, "SSL_GET": 3.0, "DNS_CHECK": delay_loop}.get(kind, 1.0)
        return CheckerConfig(
            kind=kind, file=st.file, line=st.line, connect_ip=connect_ip, connect_port=connect_port,
            connect_timeout=inh.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            retry=inh.retry if inh.retry is not None else default_retry,
            delay_before_retry=(inh.delay_before_retry if inh.delay_before_retry is not None
                                else default_dbr),
            delay_loop=delay_loop,
            warmup=inh.warmup if inh.warmup is not None else delay_loop,
            alpha=bool(inh.alpha),
            urls=tuple(urls), virtualhost=inh.virtualhost,
            **kw,  # type: ignore[arg-type]
        )

    def hex_string(self, st: Statement, text: str, wildcards: bool) -> tuple[bytes, bytes]:
        """keepalived's free-form HEX_STR: each word is read two digits a byte, a lone last digit
        being a byte of its own ("Ab12f 3" is AB 12 0F 03); with ``wildcards`` an X digit
        matches anything. Returns (value, mask)."""
        value = bytearray()
        mask = bytearray()
        for word in text.split():
            for i in range(0, len(word), 2):
                digits = word[i:i + 2].rjust(2, "0")
                v = m = 0
                for d in digits:
                    v <<= 4
                    m <<= 4
                    if wildcards and d in "xX":
                        continue
                    try:
                        v |= int(d, 16)
                    except ValueError:
                        self.error(st, f"'{word}' is not a hex string")
                        raise _Bad from None
                    m |= 0xF
                value.append(v)
                mask.append(m)
        if not value:
            self.error(st, f"'{st.keyword}' needs a hex string")
            raise _Bad
        return bytes(value), bytes(mask)

    def url(self, st: Statement) -> UrlCheck:
        path = "/"
        digest = None
        codes: list[tuple[int, int]] = []
        vhost = None
        regex = None
        no_match = False
        for s in st.block or ():
            k = s.keyword
            try:
                if k == "path":
                    path = self.arg(s)
                elif k == "digest":
                    digest = self.arg(s).lower()
                    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
                        self.error(s, f"digest '{s.args[0]}' is not an MD5 hex digest")
                elif k == "status_code":
                    for a in s.args:
                        lo_s, _, hi_s = a.partition("-")
                        try:
                            lo = int(lo_s)
                            hi = int(hi_s) if hi_s else lo
                        except ValueError:
                            self.error(s, f"status_code '{a}' is not a code or range")
                            continue
                        if not 100 <= lo <= hi <= 599:
                            self.error(s, f"status_code '{a}' outside 100-599")
                            continue
                        codes.append((lo, hi))
                elif k == "virtualhost":
                    vhost = self.arg(s)
                elif k == "regex":
                    regex = self.script(s)
                elif k == "regex_no_match":
                    no_match = True
                else:
                    self.unknown(s, "url")
            except _Bad:
                continue
        return UrlCheck(path, digest, tuple(codes) or ((200, 299),), vhost, regex, no_match)


def interpret(statements: tuple[Statement, ...] | list[Statement],
              track_files: Sequence[TrackFile] = ()) -> LVSConfig:
    """Build the LVS part from the top-level statements the keepalived.conf parser kept aside
    (and the track_file definitions, for FILE_CHECK)."""
    it = _Interp(track_files)
    for st in statements:
        if st.keyword == "virtual_server_group":
            if not st.args:
                it.error(st, "virtual_server_group needs a name")
                continue
            it.groups[st.args[0]] = list(st.block or ())
    out = LVSConfig()
    seen: dict[ServiceKey, str] = {}
    for st in statements:
        if st.keyword != "virtual_server":
            continue
        try:
            vs = it.virtual_server(st)
        except _Bad:
            continue
        for spec in vs.services:
            if spec.key in seen:
                it.error(st, f"virtual server {spec.key} already defined at {seen[spec.key]}")
            seen[spec.key] = f"{st.file}:{st.line}"
        out.virtual_servers.append(vs)
    out.diagnostics = it.diags
    return out
