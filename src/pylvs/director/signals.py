"""Which signals pylvsd acts on, and that no other stray signal can end it.

What this is for: a director is a service; supervisors, log rotators and monitoring agents send
signals, and a default action of "terminate" on a signal the daemon does not use would take the
load balancer down (and, before the state file, lose its table). The meanings follow what
operators know from ipvsadm's init script and other daemons:

- HUP: re-read the ``--restore`` file, if one was given (checked whole first; a bad file keeps
  the running table and logs ``FILE:LINE: ...``); without one, logged and nothing else.
- TERM, INT, QUIT: clean stop (the table is saved where asked, sockets closed).
- USR1: the table (ipvsadm-save form) and the connection count, to the log.
- USR2: the daemon's counters (data plane, connections, sync, state file), to the log.
- PIPE: ignored (a client that goes away is an error on that socket, not the end of the daemon).
- XFSZ: ignored, so a write past a file size limit fails with EFBIG (and the change is refused)
  instead of killing the daemon.
- ALRM, VTALRM, PROF, IO, PWR, XCPU, STKFLT and the real-time signals: not used; each is logged
  and ignored.

Every signal acted on (or deliberately ignored through a handler) is logged with its name.
Signals that report a fault of the process itself (SEGV, BUS, ILL, FPE, ABRT, TRAP, SYS) keep
their default action: continuing after them would not be safe.

What this is not for: what a reload or a dump does (``pylvs.director.main``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

log = logging.getLogger("pylvs.director")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
IGNORED_SILENTLY = (signal.SIGPIPE, signal.SIGXFSZ)


def unused_signals() -> list[int]:
    """Catchable signals whose default action ends a process and that pylvsd does not use."""
    names = ("SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR", "SIGXCPU", "SIGSTKFLT")
    out = [int(getattr(signal, n)) for n in names if hasattr(signal, n)]
    rt_min, rt_max = getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", -1)
    valid = signal.valid_signals()
    out += [n for n in range(int(rt_min), int(rt_max) + 1) if n in valid]
    return out


def signal_name(sig: int) -> str:
    """``SIGALRM``, ``SIGRTMIN+3``: the names ``kill -s`` takes."""
    rt_min = int(getattr(signal, "SIGRTMIN", 0))
    if rt_min and rt_min < sig <= int(getattr(signal, "SIGRTMAX", 0)):
        return f"SIGRTMIN+{sig - rt_min}"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def install(
    loop: asyncio.AbstractEventLoop,
    actions: dict[signal.Signals, Callable[[], None]],
) -> list[int]:
    """Handle ``actions`` (each logged by name first), ignore the rest as described above.

    Returns the signals given handlers. The loop removes them when it is closed.
    """
    for sig in IGNORED_SILENTLY:
        signal.signal(sig, signal.SIG_IGN)
    installed: list[int] = []

    def acting(sig: signal.Signals, action: Callable[[], None]) -> Callable[[], None]:
        def handler() -> None:
            log.info("received %s", sig.name)
            action()

        return handler

    def ignoring(sig: int) -> Callable[[], None]:
        def handler() -> None:
            log.info("received %s: not used by pylvsd, ignored", signal_name(sig))

        return handler

    todo: list[tuple[int, Callable[[], None]]] = [
        (sig, acting(sig, action)) for sig, action in actions.items()
    ]
    todo += [(sig, ignoring(sig)) for sig in unused_signals() if sig not in actions]
    for signum, handler in todo:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, OSError):
            loop.add_signal_handler(signum, handler)
            installed.append(signum)
    return installed

