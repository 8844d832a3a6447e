"""pylvsd's table on disk: a state file that outlives any death of the daemon.

What this is for: the kernel's IPVS table lives in the kernel, so ipvsadm users expect the table
to survive whatever happens to a user-space process. pylvsd holds its table in its own memory,
so it keeps a copy on disk that is always the table it last acknowledged: every change that
arrives on the control socket is made durable *before* the client is told it succeeded, and the
file is restored at the next start (a SIGKILL, an OOM kill or a crash loses nothing that was
acknowledged).

Why a whole-file atomic write and not an append-only journal: the file stays, at every instant,
a complete ipvsadm rule file (``ipvsadm -Sn`` plus thresholds and ``--set``) that an operator can
read, diff, edit and feed to ``ipvsadm -R``; there is no compaction step, no replay of a
half-written record and no second format to keep in step with ipvsadm's. A table is small (a
line per service and per real server), so rewriting it on a change costs little next to the
fsync that either design needs. The write is: a temporary file in the same directory, written
and fsync'ed, renamed over the old file, then the directory fsync'ed (so the rename itself is
durable). A reader (or a restart after a crash at any point) sees either the old file or the new
one, never a mix.

Order of a change (``DurableTable``): the change is first made on an in-memory copy of the table
(a change the table would refuse is refused with the table's own error and nothing is written),
the copy's rules are written durably, and only then is the live table changed. If the write
fails (disk full, a file size limit, a read-only file system), the temporary file is removed,
the previous file is untouched, the live table is unchanged and the client gets the write's
errno (``pylvsadm`` prints "No space left on device"): the change is refused, not acknowledged.

What this is not for: the rule language (``pylvs.ipvsadm.rules``) or when to restore
(``pylvs.director.main``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

from pylvs.core.api import IPVSBackend, IPVSError, ServiceStatus, SyncDaemonStatus
from pylvs.core.model import (
    ConnEntry,
    DestSpec,
    IPAddress,
    ServiceInfo,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)
from pylvs.core.table import IPVSTable
from pylvs.ipvsadm.rules import table_rules

log = logging.getLogger("pylvs.director")

STATE_NAME = "ipvsadm.rules"
SYSTEM_STATE_DIR = "/var/lib/pylvs"


class StateError(Exception):
    """A rule or state file cannot be read or written: one line, ``PATH: what is wrong``."""


def default_state_path(uid: int | None = None, environ: dict[str, str] | None = None) -> str:
    """Where a director keeps its table by default: ``/var/lib/pylvs/ipvsadm.rules`` for root,
    else ``$XDG_STATE_HOME/pylvs/ipvsadm.rules`` (``~/.local/state`` when unset)."""
    uid = os.geteuid() if uid is None else uid
    env = os.environ if environ is None else environ
    if uid == 0:
        return os.path.join(SYSTEM_STATE_DIR, STATE_NAME)
    base = env.get("XDG_STATE_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "pylvs", STATE_NAME)


def read_rules_file(path: str) -> str | None:
    """The text of a rule file, None if it does not exist, or ``StateError`` in one line.

    A directory, an unreadable file and bytes that are not UTF-8 text are each named plainly
    instead of surfacing as a traceback.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise StateError(f"{path}: is a directory, not a rule file") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise StateError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}), not a rule file"
        ) from None


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` durably, or raise ``OSError`` with the file untouched.

    No temporary file is left behind on any failure.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def copy_table(backend: IPVSBackend) -> IPVSTable:
    """An in-memory copy of everything ipvsadm can set in ``backend``: services, real servers
    (in their kernel order), timeouts."""
    copy = IPVSTable()
    for svc in backend.get_services():
        copy.add_service(svc.spec)
        for d in reversed(svc.dests):
            copy.add_dest(svc.spec.key, d.spec)
    copy.set_timeouts(backend.get_timeouts())
    return copy


class DurableTable:
    """An ``IPVSBackend`` over the live table whose changes are on disk before they return.

    The control socket serves this instead of the table itself. Reads go straight to the live
    table; each change is rehearsed on a copy, written (``write_atomically``), then applied.
    Anything else the table offers (flood-defence sysctls, ...) is passed through.

    ``extra`` gives lines written after the rules (comments ``ipvsadm -R`` skips: the proxy's
    ``# pylvs-proxy:`` timeouts, ``pylvs.director.proxyopts``), so they last as the table does.
    """

    def __init__(self, table: IPVSTable, path: str) -> None:
        self.table = table
        self.path = path
        self.writes = 0
        self.write_failures = 0
        self.extra: Callable[[], list[str]] = list

    def save(self, source: IPVSBackend | None = None, extra: list[str] | None = None) -> None:
        """Write ``source`` (the live table by default) and ``extra`` (by default
        ``self.extra()``) to the state file, or raise OSError."""
        lines = self.extra() if extra is None else extra
        text = table_rules(source if source is not None else self.table)
        write_atomically(self.path, text + "".join(f"{line}\n" for line in lines))
        self.writes += 1

    def _change(self, op: str, *args: Any) -> None:
        rehearsal = copy_table(self.table)
        getattr(rehearsal, op)(*args)  # the table's own refusal, before anything is written
        try:
            self.save(rehearsal)
        except OSError as exc:
            self.write_failures += 1
            log.error("%s refused: cannot save the table to %s: %s", op, self.path,
                      exc.strerror or exc)
            raise IPVSError(exc.errno or errno.EIO, f"cannot save the table: {exc}") from None
        try:
            getattr(self.table, op)(*args)
        except IPVSError:
            # The copy took it and the live table did not: put the file back in step.
            with contextlib.suppress(OSError):
                self.save()
            raise

    # -- changes --

    def add_service(self, spec: ServiceSpec) -> None:
        self._change("add_service", spec)

    def edit_service(self, spec: ServiceSpec) -> None:
        self._change("edit_service", spec)

    def del_service(self, key: ServiceKey) -> None:
        self._change("del_service", key)

    def flush(self) -> None:
        self._change("flush")

    def add_dest(self, key: ServiceKey, dest: DestSpec) -> None:
        self._change("add_dest", key, dest)

    def edit_dest(self, key: ServiceKey, dest: DestSpec) -> None:
        self._change("edit_dest", key, dest)

    def del_dest(self, key: ServiceKey, addr: IPAddress, port: int) -> None:
        self._change("del_dest", key, addr, port)

    def set_timeouts(self, timeouts: Timeouts) -> None:
        self._change("set_timeouts", timeouts)

    def zero(self, key: ServiceKey | None = None) -> None:
        self.table.zero(key)  # counters only: nothing on disk changes

    # -- reads --

    def get_info(self) -> ServiceInfo:
        return self.table.get_info()

    def get_services(self) -> list[ServiceStatus]:
        return self.table.get_services()

    def get_service(self, key: ServiceKey) -> ServiceStatus:
        return self.table.get_service(key)

    def get_timeouts(self) -> Timeouts:
        return self.table.get_timeouts()

    def get_connections(self) -> list[ConnEntry]:
        return self.table.get_connections()

    def get_daemons(self) -> list[SyncDaemonStatus]:
        return self.table.get_daemons()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def sync_table(live: IPVSBackend, desired: IPVSBackend) -> int:
    """Make ``live`` hold what ``desired`` holds with the fewest changes; returns their number.

    A reload must not reset what did not change: a service and a real server that are the
    same in both keep their connections and counters; only the differences are deleted, added
    or edited.
    """
    changes = 0
    want = {s.spec.key: s for s in desired.get_services()}
    have = {s.spec.key: s for s in live.get_services()}
    for key in have.keys() - want.keys():
        live.del_service(key)
        changes += 1
    for key, svc in want.items():
        old = have.get(key)
        if old is None:
            live.add_service(svc.spec)
            changes += 1
        elif old.spec != svc.spec:
            live.edit_service(svc.spec)
            changes += 1
        old_dests = {(d.spec.addr, d.spec.port): d.spec for d in (old.dests if old else [])}
        new_dests = {(d.spec.addr, d.spec.port): d.spec for d in svc.dests}
        for addr, port in old_dests.keys() - new_dests.keys():
            live.del_dest(key, addr, port)
            changes += 1
        for d in reversed(svc.dests):  # reversed: the kernel adds at the front
            spec = d.spec
            prev = old_dests.get((spec.addr, spec.port))
            if prev is None:
                live.add_dest(key, spec)
                changes += 1
            elif prev != spec:
                live.edit_dest(key, spec)
                changes += 1
    if live.get_timeouts() != desired.get_timeouts():
        live.set_timeouts(desired.get_timeouts())
        changes += 1
    return changes

