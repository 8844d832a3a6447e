"""The checker blocks of a ``real_server`` (TCP_CHECK, HTTP_GET, ...): the framework that reads
what every checker shares, and the seam through which each kind reads its own keywords.

Why a seam: a checker's keywords, defaults and probe belong together in its module under
``pylvs.health.checkers``, so that adding a checker touches that module and one registry line.
``config`` is a lower layer than ``health`` and must not import it, so the interpreter does not
know any kind itself: it is *given* a registry (``Mapping[str, CheckerKind]``, keyword -> kind)
by its caller. ``pylvs.health.checkers.KINDS`` is the full registry; it also installs itself as
the default (:func:`set_default_kinds`) when imported, so ``pylvs.config.keepalived.load_full``
keeps its signature for the daemon; without a registry, interpreting a virtual_server is a
programming error that says so, never a silent "unknown keyword".

What the framework does for every kind: the timers inherited from the real_server and
virtual_server (delay_loop, connect_timeout, retry, delay_before_retry, warmup, alpha),
connect_ip/connect_port/bindto/bind_port, keywords accepted without effect, unknown keywords
(warnings), the port a checker needs and the kind's defaults. A kind reads its own keywords
(:meth:`CheckerKind.option`) and builds its options dataclass (:meth:`CheckerKind.finish`); a
kind unlike the others (FILE_CHECK) replaces :meth:`CheckerKind.interpret` whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.tracks import TrackFile
from pylvs.config.values import Invalid, Report, address, arg, boolean, integer, number, port
from pylvs.core.model import DestSpec, ForwardingMethod, IPAddress, TunnelFlags, TunnelType

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_DELAY_LOOP", "UNSUPPORTED_CHECKERS", "WEIGHT_ADD",
    "WEIGHT_SET", "CheckerConfig", "CheckerContext", "CheckerKind", "Endpoint", "Inherit",
    "default_kinds", "set_default_kinds",
]

DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
# Checkers keepalived has that pylvs does not run: parsed, warned about, ignored.
UNSUPPORTED_CHECKERS = ("BFD_CHECK",)
# How a checker's reported weight acts on its real server's (CheckerConfig.weight_mode):
WEIGHT_SET = "set"  # replaces the configured weight (MISC_CHECK misc_dynamic)
WEIGHT_ADD = "add"  # is added to it while the checker is up (FILE_CHECK dynamic)
# Keywords keepalived's checkers take that change nothing in pylvs: a warning says so.
_NO_EFFECT = ("fwmark", "bind_if", "log_all_failures", "fast_recovery", "user")


@dataclass(frozen=True, slots=True)
class CheckerConfig:
    """One checker of a real server, with every timer already resolved; ``options`` is the
    kind's own options dataclass (None for a kind without options)."""

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
    options: object = None
    weight_mode: str = ""  # "", WEIGHT_SET or WEIGHT_ADD

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Inherit:
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

    def copy(self) -> Inherit:
        return Inherit(
            self.delay_loop, self.connect_timeout, self.retry, self.delay_before_retry,
            self.warmup, self.alpha, self.inhibit_on_failure, self.virtualhost,
            self.fwd, self.tun_type, self.tun_port, self.tun_flags,
        )

    def read(self, st: Statement) -> bool:
        """Apply a setting shared by every level; False if ``st`` is not one. Raises
        :class:`Invalid` for a bad value."""
        k = st.keyword
        if k == "delay_loop":
            self.delay_loop = number(st, 0.000001, 4294.967295)
        elif k == "connect_timeout":
            self.connect_timeout = number(st, 0.000001, 4294.967295)
        elif k == "retry":
            self.retry = integer(st, 0, 2**31 - 1)
        elif k == "delay_before_retry":
            self.delay_before_retry = number(st, 0, 4294.967295)
        elif k == "warmup":
            self.warmup = number(st, 0, 4294.967295)
        elif k == "alpha":
            self.alpha = boolean(st)
        elif k == "inhibit_on_failure":
            self.inhibit_on_failure = boolean(st)
        elif k == "virtualhost":
            self.virtualhost = arg(st)
        else:
            return False
        return True


@dataclass(slots=True)
class Endpoint:
    """Where a checker connects from and to, while its block is read."""

    connect_ip: IPAddress
    connect_port: int
    bindto: IPAddress | None = None
    bind_port: int = 0

    def read(self, st: Statement) -> bool:
        """connect_ip, connect_port, bindto or bind_port; False if ``st`` is none of them."""
        k = st.keyword
        if k == "connect_ip":
            self.connect_ip = address(st, arg(st))
        elif k == "connect_port":
            self.connect_port = port(st, arg(st))
        elif k == "bindto":
            self.bindto = address(st, arg(st))
        elif k == "bind_port":
            self.bind_port = port(st, arg(st))
        else:
            return False
        return True


@dataclass(frozen=True, slots=True)
class CheckerContext:
    """What the rest of the file gives a checker: the track_file definitions (FILE_CHECK)."""

    report: Report
    track_files: Mapping[str, TrackFile] = field(default_factory=dict)


class CheckerKind:
    """One checker keyword's interpretation; subclasses live in ``pylvs.health.checkers``.

    The class attributes are the kind's defaults; the methods read its own keywords. The base
    class is the whole framework, so a kind states only how it differs."""

    keyword: str = ""
    default_port: int = 0  # when neither the real server nor connect_port gives one (0: error)
    needs_port: bool = True  # False: the checker connects to no port (MISC_CHECK, PING_CHECK)
    default_retry: int = 1
    default_delay_before_retry: float | None = 1.0  # None: the checker's delay_loop
    retry_aliases: tuple[str, ...] = ()  # older names of ``retry`` this kind still accepts

    def option(self, st: Statement, opts: dict[str, object], endpoint: Endpoint,
               report: Report) -> bool:
        """Read one of this kind's own keywords into ``opts`` (raise :class:`Invalid` for a bad
        value that drops the keyword; ``report`` takes what is said and read anyway); False if
        ``st`` is not one of them."""
        return False

    def finish(self, st: Statement, opts: dict[str, object], inh: Inherit) -> object:
        """The kind's options once its block is read; raise :class:`Invalid` (at ``st``) when the
        block cannot make a checker (a required keyword is missing)."""
        return None

    def weight_mode(self, options: object) -> str:
        """How the weight this checker's probe reports acts on the real server (WEIGHT_*)."""
        return ""

    def interpret(self, st: Statement, inh: Inherit, dest: DestSpec, ctx: CheckerContext) -> CheckerConfig:
        """The checker block ``st`` of a real server ``dest``; ``inh`` is the real server's
        settings (a copy this checker may change). Raises :class:`Invalid` to drop it."""
        report = ctx.report
        opts: dict[str, object] = {}
        end = Endpoint(dest.addr, dest.port)
        for s in st.block or ():
            k = s.keyword
            try:
                if k in self.retry_aliases:
                    inh.retry = integer(s, 0, 2**31 - 1)
                elif inh.read(s) or end.read(s) or self.option(s, opts, end, report):
                    pass
                elif k in _NO_EFFECT:
                    report.warn(s, f"'{k}' is accepted but has no effect in pylvs")
                else:
                    report.warn(s, f"unknown keyword '{k}' in {st.keyword}, ignored")
            except Invalid as exc:
                report.invalid(exc)
        options = self.finish(st, opts, inh)
        if end.connect_port == 0 and self.needs_port:
            end.connect_port = self.default_port
            if end.connect_port == 0:
                raise Invalid(st, f"{st.keyword} needs a port: the real server has none and connect_port is not set")
        delay_loop = inh.delay_loop if inh.delay_loop is not None else DEFAULT_DELAY_LOOP
        dbr = self.default_delay_before_retry
        return CheckerConfig(
            kind=st.keyword, file=st.file, line=st.line, connect_ip=end.connect_ip,
            connect_port=end.connect_port, bindto=end.bindto, bind_port=end.bind_port,
            connect_timeout=inh.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            retry=inh.retry if inh.retry is not None else self.default_retry,
            delay_before_retry=(inh.delay_before_retry if inh.delay_before_retry is not None
                                else delay_loop if dbr is None else dbr),
            delay_loop=delay_loop,
            warmup=inh.warmup if inh.warmup is not None else delay_loop,
            alpha=bool(inh.alpha), options=options, weight_mode=self.weight_mode(options),
        )


_default: Mapping[str, CheckerKind] | None = None


def set_default_kinds(kinds: Mapping[str, CheckerKind]) -> None:
    """Install the registry used when a caller passes none (``pylvs.health.checkers`` does)."""
    global _default
    _default = kinds


def default_kinds() -> Mapping[str, CheckerKind]:
    if _default is None:
        raise RuntimeError("no checker kinds: import pylvs.health.checkers (the registry) "
                           "or pass kinds= to the virtual_server interpreter")
    return _default
