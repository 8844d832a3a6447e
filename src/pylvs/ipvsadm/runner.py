"""Runs ipvsadm commands against a table, writing what ipvsadm writes and returning its code.

What this is for: the part of ipvsadm after parsing: one call on the table per command (a
refusal printed in libipvs's words), the listings, and ``-R``, which executes a rule stream
line by line exactly as ipvsadm does (a refused line prints the kernel's error and the next
line still runs; an unparsable line stops the restore with ipvsadm's exit code after the lines
before it were applied). ``run`` is one whole command line: every ending ipvsadm has (exit
codes 0, 1, 2, 255) is turned into bytes on the two streams and the code.

The table is reached through ``get_backend``, called only when a command needs it, so ``-h``,
``-v`` and a bad command line never need a director; standard input likewise through
``get_input``, opened only by ``-R``.

What this is not for: choosing the table (``pylvs.ipvsadm.backend``) or a process's streams
and signals (``pylvs.cli.ipvsadm``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO, Any

from pylvs.core.api import BackendUnavailable, IPVSBackend, IPVSError, SyncDaemonStatus
from pylvs.core.model import ServiceKey
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
    CMD_RESTORE,
    CMD_SAVE,
    CMD_STARTDAEMON,
    CMD_STOPDAEMON,
    CMD_TIMEOUT,
    CMD_ZERO,
    OPTC_CONNECTION,
    OPTC_DAEMON,
    OPTC_SERVICE,
    OPTC_TIMEOUT,
    PROG,
    IpvsadmCommand,
    bit,
)
from pylvs.ipvsadm.errors import IpvsadmExit, LineError, ipvs_strerror, tryhelp
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.parse import parse_command, restore_words

__all__ = ["Runner", "run"]


class Runner:
    """Runs parsed commands against a backend, writing what ipvsadm writes."""

    def __init__(
        self,
        get_backend: Callable[[], IPVSBackend],
        out: IO[str],
        err: IO[str],
        get_input: Callable[[], IO[str]],
        resolver: Resolver,
    ) -> None:
        self._get_backend = get_backend
        self.out = out
        self.err = err
        self._get_input = get_input
        self.resolver = resolver

    @property
    def backend(self) -> IPVSBackend:
        return self._get_backend()

    def process_options(self, argv: Sequence[str], reading_stdin: bool) -> int:
        try:
            ce = parse_command(argv, self.resolver)
        except LineError as exc:
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
            self._list(ce)
            return 0
        if cmd == CMD_RESTORE:
            return self.restore(ce.argv[0] if ce.argv else PROG, reading_stdin)
        if cmd == CMD_SAVE:
            self.list_all(ce.fmt | L.FMT_RULE)
            return 0
        if cmd in (CMD_STARTDAEMON, CMD_STOPDAEMON):
            return self._daemon(ce)
        return self._change(ce)

    def _change(self, ce: IpvsadmCommand) -> int:
        """A command that changes the table: one backend call."""
        cmd = ce.cmd
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
        return 0

    def _daemon(self, ce: IpvsadmCommand) -> int:
        """``--start-daemon`` / ``--stop-daemon``, where the backend has sync daemons."""
        func = "start_daemon" if ce.cmd == CMD_STARTDAEMON else "stop_daemon"
        if not hasattr(self.backend, func):
            self.err.write("Connection synchronisation daemons are not supported here\n")
            return -1
        d = ce.daemon
        if ce.cmd == CMD_STOPDAEMON:
            return self._call(func, d.state)
        return self._call(
            func,
            SyncDaemonStatus(
                d.state, d.mcast_ifn, d.syncid, d.sync_maxlen, d.mcast_group, d.mcast_port,
                d.mcast_ttl,
            ),
        )

    # -- listings --

    def _list(self, ce: IpvsadmCommand) -> None:
        if ce.options & bit(OPTC_CONNECTION):
            self.list_conn(ce.fmt)
        elif ce.options & bit(OPTC_SERVICE):
            self.list_service(ce.svc.key(), ce.fmt)
        elif ce.options & bit(OPTC_TIMEOUT):
            self.list_timeout()
        elif ce.options & bit(OPTC_DAEMON):
            self.list_daemon()
        else:
            self.list_all(ce.fmt)

    def list_all(self, fmt: int) -> None:
        backend = self.backend
        if not fmt & L.FMT_RULE:
            self.out.write(L.header(backend.get_info()))
        try:
            services = backend.get_services()
        except IPVSError as exc:
            raise IpvsadmExit(1, ipvs_strerror("get_services", exc.errno) + "\n") from None
        self.out.write(L.title(fmt))
        for svc in L.sort_services(services, fmt):
            self.out.write(L.service_entry(svc, fmt, self.resolver))

    def list_service(self, key: ServiceKey, fmt: int) -> None:
        try:
            svc = self.backend.get_service(key)
        except IPVSError as exc:
            raise IpvsadmExit(1, ipvs_strerror("get_service", exc.errno) + "\n") from None
        self.out.write(L.title(fmt))
        self.out.write(L.service_entry(svc, fmt, self.resolver))

    def list_timeout(self) -> None:
        try:
            t = self.backend.get_timeouts()
        except IPVSError:
            raise IpvsadmExit(1) from None
        self.out.write(L.timeouts_line(t))

    def list_daemon(self) -> None:
        try:
            daemons = self.backend.get_daemons()
        except IPVSError:
            raise IpvsadmExit(1) from None
        self.out.write(L.daemons_text(daemons))

    def list_conn(self, fmt: int) -> None:
        try:
            conns = self.backend.get_connections()
        except IPVSError:
            raise IpvsadmExit(1, "cannot open file /proc/net/ip_vs_conn\n") from None
        self.out.write(L.conn_title(fmt))
        for c in conns:
            self.out.write(L.conn_row(c, fmt, self.resolver))

    # -- restore --

    def restore(self, program: str, reading_stdin: bool) -> int:
        if reading_stdin:
            raise tryhelp(program)
        result = 0
        inp = self._get_input()
        while True:
            line = inp.readline()
            if not line:
                break
            words = restore_words(line)
            if words:
                result = self.process_options([program, *words], True)
        return result


def run(
    args: Sequence[str],
    get_backend: Callable[[], IPVSBackend],
    out: IO[str],
    err: IO[str],
    get_input: Callable[[], IO[str]],
    resolver: Resolver,
) -> int:
    """One ipvsadm command line (without the program name): ipvsadm's bytes and exit code.

    No argument is ``ipvsadm`` alone (list the table). Every way ipvsadm ends is answered here:
    its ``exit()`` codes, a missing table (``pylvsadm: ...``, 2) and a refusal where ipvsadm
    expects none (a query: libipvs's words, 255).
    """
    runner = Runner(get_backend, out, err, get_input, resolver)
    try:
        if not args:
            runner.list_all(L.FMT_NONE)
            rc = 0
        else:
            rc = runner.process_options([PROG, *args], False)
    except IpvsadmExit as exc:
        out.write(exc.stdout)
        err.write(exc.stderr)
        rc = exc.rc
    except BackendUnavailable as exc:
        err.write(f"pylvsadm: {exc}\n")
        rc = 2
    except IPVSError as exc:
        err.write(ipvs_strerror("", exc.errno) + "\n")
        rc = 255
    return rc & 0xFF
