"""How an ipvsadm command ends when it does not succeed, and libipvs's words for a refusal.

What this is for: ipvsadm has two ways to stop and scripts depend on both. ``exit()`` ends the
whole run (even a ``-R`` restore half-way) with a code: ``IpvsadmExit``. A popt error inside the
option loop prints popt's text and makes only that line's result -1: ``LineError``. A refused
call prints ``ipvs_strerror``'s text, whose words depend on which call failed ("Service already
exists" for an add, "No such service" for a delete). ``RestoreError`` is the director's strict
reading of a rule file: ``source:LINE: what is wrong``.

What this is not for: deciding that something is wrong (``parse``, ``runner``, ``rules`` do).
"""

from __future__ import annotations

import errno as _errno
import os


class IpvsadmExit(Exception):
    """ipvsadm calls ``exit()``: the whole run (even a restore) ends with this code."""

    def __init__(self, rc: int, stderr: str = "", stdout: str = "") -> None:
        super().__init__(stderr or stdout)
        self.rc = rc & 0xFF
        self.stderr = stderr
        self.stdout = stdout


class LineError(Exception):
    """popt failed inside the option loop: ipvsadm prints it and the line's result is -1."""


class RestoreError(Exception):
    """A rule file line that is malformed or refused: ``source:LINE: what is wrong``."""


def fail(rc: int, msg: str) -> IpvsadmExit:
    """ipvsadm's ``fail(rc, msg)``: the message and a newline on stderr, then exit(rc)."""
    return IpvsadmExit(rc, msg + "\n")


def tryhelp(program: str) -> IpvsadmExit:
    """ipvsadm's ``tryhelp_exit``: the hint line and exit status 255 (``exit(-1)``)."""
    return IpvsadmExit(255, f"Try `{program} -h' or '{program} --help' for more information.\n")


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
