"""FILE_CHECK { track_file NAME; weight W [reverse]; dynamic }: the number in a track_file, as
keepalived reads it. None of the other checkers' options; the file is read every
``FILE_CHECK_INTERVAL`` seconds (keepalived watches it with inotify), no retries, no warmup.

Weight 0: any non-zero value fails the check (with reverse, 0 does); otherwise value x weight is
the real server's weight change (reported in the result's ``weight``, added with ``dynamic``),
and a result at or below IPVS_WEIGHT_FAULT fails it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.checkers import WEIGHT_ADD, CheckerConfig, CheckerContext, Inherit
from pylvs.config.values import Invalid, arg, integer
from pylvs.core.model import DestSpec
from pylvs.health.checkers.base import CheckResult, HealthChecker
from pylvs.trackers.trackfile import read_value, weighted

FILE_CHECK_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class FileOptions:
    path: str = ""
    weight: int = 1  # 0: any non-zero value is a failure (reverse: 0 is)
    reverse: bool = False
    dynamic: bool = False  # value x weight moves the real server's weight


def options(cfg: CheckerConfig) -> FileOptions:
    return cfg.options if isinstance(cfg.options, FileOptions) else FileOptions()


class FileCheck(HealthChecker):
    keyword = "FILE_CHECK"

    def __init__(self) -> None:
        self._values: dict[str, int] = {}  # the last good value of each file

    def weight_mode(self, options: object) -> str:
        return WEIGHT_ADD if isinstance(options, FileOptions) and options.dynamic else ""

    def interpret(self, st: Statement, inh: Inherit, dest: DestSpec, ctx: CheckerContext) -> CheckerConfig:
        report = ctx.report
        tf = None
        named = False  # a track_file line was there (and its error reported)
        kw: dict[str, object] = {}
        for s in st.block or ():
            k = s.keyword
            try:
                if k == "track_file":
                    name = arg(s)
                    tf = ctx.track_files.get(name)
                    if tf is None:
                        named = True
                        raise Invalid(s, f"FILE_CHECK: no track_file named '{name}'")
                elif k == "weight":
                    kw["weight"] = integer(s, -2147483647, 2147483647)
                    if len(s.args) > 1:
                        if s.args[1] != "reverse":
                            report.error(s, f"FILE_CHECK: unexpected '{s.args[1]}' after weight")
                        kw["reverse"] = True
                elif k == "dynamic":
                    kw["dynamic"] = True
                else:
                    report.warn(s, f"unknown keyword '{k}' in FILE_CHECK, ignored")
            except Invalid as exc:
                report.invalid(exc)
        if tf is None:
            if not named:
                raise Invalid(st, "FILE_CHECK needs a track_file")
            raise Invalid.reported()
        if "weight" not in kw:
            kw["weight"], kw["reverse"] = tf.weight, tf.reverse
        opts = FileOptions(path=tf.path, **kw)  # type: ignore[arg-type]
        return CheckerConfig(
            kind="FILE_CHECK", file=st.file, line=st.line, connect_ip=dest.addr, connect_port=0,
            retry=0, delay_loop=FILE_CHECK_INTERVAL, warmup=0.0, options=opts,
            weight_mode=self.weight_mode(opts),
        )

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        """Missing file = 0, a value out of 32 bits keeps the last one."""
        opts = options(cfg)
        value = read_value(opts.path)
        if value is None:
            value = self._values.get(opts.path, 0)
        self._values[opts.path] = value
        offset = weighted(value, opts.weight, opts.reverse)
        if opts.weight == 0:
            return CheckResult(offset is not None, f"FILE_CHECK {opts.path}: {value}", 0)
        if offset is None or offset <= -(1 << 31):
            return CheckResult(False, f"FILE_CHECK {opts.path}: {value} (fault)")
        return CheckResult(True, f"FILE_CHECK {opts.path}: {value}, weight {offset:+d}", offset)


KINDS = (FileCheck(),)
