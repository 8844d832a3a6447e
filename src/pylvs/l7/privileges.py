"""Who the workers run as, and the tie that ends a worker with its master.

Why: nginx's master binds the ports and opens the logs as root, and its workers serve as the
``user`` directive's user (compiled default ``nobody:nogroup`` in Debian's build; Debian's
shipped nginx.conf says ``www-data``), so a file only root may read answers 403. A master not
started as root switches no user and warns about a ``user`` line, as nginx does; ``user root``
is allowed, as nginx allows it (no warning either).

A worker must never outlive its master: an orphaned worker keeps the inherited listening
sockets and the next start fails with ``bind() ... Address already in use``. The kernel's
parent-death signal (``prctl(PR_SET_PDEATHSIG)``) ends the worker when the master dies; it is
set after the user switch, because changing credentials clears it, and followed by a check that
the master is still the parent (it may have died before the call).

Not for: reading the ``user`` directive (``mainconf``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
import signal
from dataclasses import dataclass

from pylvs.l7.mainconf import DEFAULT_USER
from pylvs.l7.syntax import ConfigError

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Credentials:
    user: str
    uid: int
    gid: int


def resolve(user: tuple[str, str] | None, where: str) -> Credentials | None:
    """The workers' credentials; None when the master is not root (nothing to switch).
    An unknown user or group is nginx's ``[emerg]``."""
    if os.geteuid() != 0:
        return None
    name, group = user if user is not None else DEFAULT_USER
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f'getpwnam("{name}") failed{where}') from None
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        raise ConfigError(f'getgrnam("{group}") failed{where}') from None
    return Credentials(name, pw.pw_uid, gr.gr_gid)


def user_warning(user: tuple[str, str] | None, where: str) -> str | None:
    """nginx's warning for a ``user`` line a non-root master cannot act on."""
    if user is None or os.geteuid() == 0:
        return None
    return ('the "user" directive makes sense only if the master process runs with '
            f"super-user privileges, ignored{where}")


def drop(creds: Credentials | None) -> None:
    """Become the workers' user (group, supplementary groups, then user: the order that
    still has the right to do each step)."""
    if creds is None:
        return
    os.setgid(creds.gid)
    os.initgroups(creds.user, creds.gid)
    os.setuid(creds.uid)


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel for ``signum`` when the parent dies; False when it already has."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed ({err}: {os.strerror(err)})")
    return os.getppid() == parent
