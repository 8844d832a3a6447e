"""keepalived 2.2's signals by function name, as ``keepalived --signum=NAME`` prints them.

Why a table: operators and monitoring agents (keepalived-exporter) send these by number, taking it
from ``keepalived --signum``; the numbers must be keepalived 2.2.7's on this platform (JSON is the
third real-time signal, STATS_CLEAR the one before the last).
"""

from __future__ import annotations

import signal

SIGDATA = signal.SIGUSR1  # keepalived.data
SIGSTATS = signal.SIGUSR2  # keepalived.stats
SIGJSON = signal.SIGRTMIN + 2  # keepalived.json (36 on Linux with glibc)
SIGSTATS_CLEAR = signal.SIGRTMAX - 1  # keepalived.stats, then every counter cleared (63 on Linux)

SIGFUNCS: dict[str, int] = {
    "STOP": signal.SIGTERM,
    "RELOAD": signal.SIGHUP,
    "DATA": SIGDATA,
    "STATS": SIGSTATS,
    "STATS_CLEAR": SIGSTATS_CLEAR,
    "JSON": SIGJSON,
}


def signum(name: str) -> int | None:
    """The number for a keepalived signal function name (None when it is not one)."""
    return SIGFUNCS.get(name)


def describe(num: int) -> str:
    """A signal's keepalived function name where it has one, else its system name."""
    for name, n in SIGFUNCS.items():
        if n == num:
            return name
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
