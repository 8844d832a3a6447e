"""Rule files read strictly (the director's start-up file) and the table written as one.

What this is for: ``pylvsadm -R`` is ipvsadm's line-at-a-time restore (``runner``); a daemon
restoring its own table needs all or nothing instead. ``parse_restore`` parses every line
first (blank lines and ``#`` comments skipped) and raises ``RestoreError("source:LINE: ...")``
before anything is applied; ``apply_commands`` rehearses the commands on an in-memory copy of
the table, so a line the table would refuse is reported with its line number before anything
changes, and only then applies them. ``save_rules`` is ``ipvsadm -S``'s text, which both read.

What this is not for: where the file lives or how it is written durably (``pylvs.director``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from pylvs.core.api import IPVSBackend, IPVSError
from pylvs.core.model import IPAddress, ServiceKey, Timeouts
from pylvs.ipvsadm import listing as L
from pylvs.ipvsadm.command import (
    CMD_ADD,
    CMD_ADDDEST,
    CMD_DEL,
    CMD_DELDEST,
    CMD_EDIT,
    CMD_EDITDEST,
    CMD_FLUSH,
    CMD_TIMEOUT,
    CMD_ZERO,
    PROG,
    IpvsadmCommand,
)
from pylvs.ipvsadm.errors import IpvsadmExit, LineError, RestoreError
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.parse import parse_command, restore_words
from pylvs.ipvsadm.runner import Runner

__all__ = ["RestoreError", "apply_commands", "parse_restore", "save_rules", "table_rules"]

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
        except LineError as exc:
            raise RestoreError(f"{where}: {exc}") from None
        except IpvsadmExit as exc:
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
    runner = Runner(lambda: backend, sink, sink, io.StringIO, Resolver.from_environment())
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


def table_rules(backend: IPVSBackend) -> str:
    """Every setting ipvsadm commands can give the table, as lines ``-R`` reads back.

    That is ``ipvsadm -Sn`` plus what ``-S`` leaves out: a real server's ``-x``/``-y``
    thresholds (appended to its ``-a`` line) and ``--set`` when the timeouts are not the
    kernel's defaults. Without thresholds and timeouts it is exactly ``-Sn``, so a file a
    daemon keeps is still the file an operator knows. A daemon's own state is written this
    way, so restoring it gives back the whole table, not only the part ``-S`` shows.
    """
    text = save_rules(backend, numeric=True)
    limits: dict[tuple[ServiceKey, IPAddress | None, int], tuple[int, int]] = {
        (svc.spec.key, d.spec.addr, d.spec.port): (d.spec.u_threshold, d.spec.l_threshold)
        for svc in backend.get_services()
        for d in svc.dests
        if d.spec.u_threshold or d.spec.l_threshold
    }
    lines = text.split("\n")
    if limits:
        for ce in parse_restore(text, "<table>", Resolver("/nonexistent", "/nonexistent")):
            if ce.cmd != CMD_ADDDEST:
                continue
            u_l = limits.get((ce.svc.key(), ce.dest.addr, ce.dest.port))
            if u_l is not None:
                lines[ce.lineno - 1] += f" -x {u_l[0]} -y {u_l[1]}"
    timeouts = backend.get_timeouts()
    if timeouts != Timeouts():
        lines.insert(0, f"--set {timeouts.tcp} {timeouts.tcp_fin} {timeouts.udp}")
    return "\n".join(lines)
