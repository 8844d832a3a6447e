"""What VRRP instances track, as keepalived.conf defines it: ``vrrp_script``, ``track_file``
(``vrrp_track_file``) and ``vrrp_track_process`` blocks, and the ``track_*`` lists inside an
instance or a sync group that name them.

Not for: watching anything (``pylvs.trackers``, ``pylvs.keepalived``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.values import VRRP_WORDING, Invalid, Report, arg, command, integer, number

__all__ = [
    "TrackFile", "TrackFileRef", "TrackInterface", "TrackProcess", "TrackScript", "VRRPScript",
    "track_file", "track_process", "vrrp_script",
]


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


def _unknown(report: Report, st: Statement) -> None:
    report.warn(st, f"Unknown keyword '{st.keyword}'")


def _weight(s: Statement, kw: dict[str, object], lo: int, hi: int, report: Report,
            reverse: bool = True) -> None:
    """``weight W [reverse]``: a bad number is an error (and leaves the weight as it was), a
    stray word after it a warning."""
    try:
        kw["weight"] = integer(s, lo, hi, wording=VRRP_WORDING)
    except Invalid as exc:
        report.invalid(exc)
    if len(s.args) > 1:
        if s.args[1] != "reverse":
            report.warn(s, f"unexpected '{s.args[1]}' after weight")
        elif reverse:
            kw["reverse"] = True


def vrrp_script(st: Statement, report: Report) -> VRRPScript | None:
    if not st.args:
        report.error(st, "vrrp_script needs a name")
        return None
    kw: dict[str, object] = {}
    script = None
    for s in st.block or ():
        k = s.keyword
        try:
            if k == "script":
                script = None
                script = command(s)
            elif k == "interval":
                kw[k] = 1.0
                kw[k] = number(s, 0.000001, 86400, wording=VRRP_WORDING)
            elif k == "timeout":
                kw[k] = None
                kw[k] = number(s, 0.000001, 86400, wording=VRRP_WORDING)
            elif k == "weight":
                _weight(s, kw, -253, 253, report, reverse=False)
            elif k in ("rise", "fall"):
                kw[k] = 1
                kw[k] = integer(s, 1, 65535, wording=VRRP_WORDING)
            elif k == "user":
                kw[k] = None
                kw[k] = arg(s)
            elif k == "init_fail":
                kw[k] = True
            else:
                _unknown(report, s)
        except Invalid as exc:
            report.invalid(exc)
    if script is None:
        report.error(st, f"vrrp_script {st.args[0]} has no script")
        return None
    return VRRPScript(st.args[0], script, file=st.file, line=st.line, **kw)  # type: ignore[arg-type]


def track_process(st: Statement, report: Report) -> TrackProcess | None:
    if not st.args:
        report.error(st, "vrrp_track_process needs a name")
        return None
    kw: dict[str, object] = {}
    process = None
    for s in st.block or ():
        k = s.keyword
        try:
            if k == "process":
                if not s.args:
                    raise Invalid(s, "'process' needs a command")
                process = s.args[0]
                kw["params"] = tuple(s.args[1:])
            elif k == "param_match":
                v = s.args[0] if s.args else None
                if v is None:
                    report.error(s, "'param_match' needs a value")
                if v not in ("initial", "partial"):
                    raise Invalid(s, f"param_match must be initial or partial, not '{v}'")
                kw[k] = v
            elif k == "weight":
                _weight(s, kw, -254, 254, report)
            elif k in ("quorum", "quorum_max"):
                kw[k] = integer(s, 0, 2**31 - 1, wording=VRRP_WORDING)
            elif k in ("fork_delay", "terminate_delay", "delay"):
                d = number(s, 0, 3600, wording=VRRP_WORDING)
                if k != "terminate_delay":
                    kw["fork_delay"] = d
                if k != "fork_delay":
                    kw["terminate_delay"] = d
            elif k == "full_command":
                kw[k] = True
            else:
                _unknown(report, s)
        except Invalid as exc:
            report.invalid(exc)
    if process is None:
        report.error(st, f"vrrp_track_process {st.args[0]} has no process")
        return None
    tp = TrackProcess(st.args[0], process, file=st.file, line=st.line, **kw)  # type: ignore[arg-type]
    if tp.quorum > tp.quorum_max:
        report.error(st, f"vrrp_track_process {tp.name}: quorum {tp.quorum} above quorum_max {tp.quorum_max}")
        return None
    return tp


def track_file(st: Statement, report: Report) -> TrackFile | None:
    if not st.args:
        report.error(st, f"{st.keyword} needs a name")
        return None
    kw: dict[str, object] = {}
    path = None
    for s in st.block or ():
        k = s.keyword
        try:
            if k == "file":
                path = None
                path = arg(s)
            elif k == "weight":
                _weight(s, kw, -2147483647, 2147483647, report)
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
                        raise Invalid(s, f"init_file value '{args[0]}' is not a number") from None
                kw["init_value"] = value
            else:
                _unknown(report, s)
        except Invalid as exc:
            report.invalid(exc)
    if not path:
        report.error(st, f"track_file {st.args[0]} has no file")
        return None
    return TrackFile(st.args[0], path, file=st.file, line=st.line, **kw)  # type: ignore[arg-type]


def _ref_weight(s: Statement, what: str, report: Report) -> int | None:
    """The ``weight W`` after a tracked name (None when absent or malformed)."""
    if len(s.args) >= 2 and s.args[0] == "weight":
        try:
            return int(s.args[1])
        except ValueError:
            report.error(s, f"{what} {s.keyword}: invalid weight '{s.args[1]}'")
    return None


def file_refs(st: Statement, report: Report, what: str = "track_file") -> tuple[TrackFileRef, ...]:
    """``track_file`` / ``track_process`` in an instance or a sync group."""
    return tuple(
        TrackFileRef(s.keyword, _ref_weight(s, what, report),
                     len(s.args) >= 3 and s.args[2] == "reverse")
        for s in st.block or ()
    )


def interface_refs(st: Statement, report: Report) -> tuple[TrackInterface, ...]:
    return tuple(TrackInterface(s.keyword, _ref_weight(s, "track_interface", report) or 0)
                 for s in st.block or ())


def script_refs(st: Statement, report: Report) -> tuple[TrackScript, ...]:
    return tuple(TrackScript(s.keyword, _ref_weight(s, "track_script", report))
                 for s in st.block or ())
