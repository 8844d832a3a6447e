"""keepalived's ``vrrp_track_process``: whether enough copies of a process are running.

What this is for: a director whose haproxy or nginx has died should give up the VIP without a
track_script forking ``pidof`` twice a second. A tracked process is "up" while the number of
matching processes lies within [quorum, quorum_max]; a change must last ``fork_delay`` (going
up) or ``terminate_delay`` (going down) before it counts, so a restart does not bounce the
instance. Matching is keepalived's: exact, not a regular expression: the process name (what
``/proc/PID/comm`` holds) equals ``process``, or, with parameters or ``full_command``, the
command line matches (``param_match partial``: the first parameters match and more may follow;
``initial``: the last configured parameter may be the start of the real one).

What this is not for: applying the result to a router (the driver's ``_update_tracking``).
``ProcessTracker.update(processes, now)`` is sans-IO; ``scan_proc`` reads ``/proc`` once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pylvs.config.keepalived import TrackProcess

Process = tuple[str, tuple[str, ...]]  # (comm, argv)
COMM_MAX = 15  # the kernel keeps TASK_COMM_LEN - 1 characters of a process name


def scan_proc(root: str = "/proc") -> list[Process]:
    """(comm, argv) of every process; ones that exit while being read are skipped."""
    out: list[Process] = []
    for entry in os.listdir(root):
        if not entry.isdigit():
            continue
        try:
            with open(f"{root}/{entry}/comm", "rb") as f:
                comm = f.read().rstrip(b"\n").decode(errors="replace")
            with open(f"{root}/{entry}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1]) if raw else ()
        out.append((comm, argv))
    return out


def matches(spec: TrackProcess, proc: Process) -> bool:
    comm, argv = proc
    if not spec.params and spec.param_match is None and not spec.full_command:
        return comm == spec.process[:COMM_MAX]
    if not argv:
        return False  # kernel threads and zombies have no command line
    if spec.full_command and not spec.params and spec.param_match is None:
        return " ".join(argv) == spec.process
    if argv[0] != spec.process:
        return False
    got, want = argv[1:], spec.params
    if spec.param_match is None:
        return got == want
    if len(got) < len(want):
        return False
    if not want:
        return not got  # param_match with no parameters: the command must have none
    if spec.param_match == "partial":
        return got[:len(want)] == want
    # initial: all but the last exactly, the last as a prefix, nothing after it
    return (len(got) == len(want) and got[:-1] == want[:-1]
            and got[len(want) - 1].startswith(want[-1]))


@dataclass(slots=True)
class _State:
    spec: TrackProcess
    up: bool
    count: int = 0
    pending_since: float | None = None  # when the count first said the other thing


@dataclass(slots=True)
class ProcessTracker:
    """Up/down of every tracked process, from successive process lists."""

    states: dict[str, _State] = field(default_factory=dict)

    @classmethod
    def start(cls, specs: tuple[TrackProcess, ...], used: set[str],
              processes: list[Process], now: float) -> ProcessTracker:
        t = cls()
        for spec in specs:
            if spec.name in used:
                n = sum(1 for p in processes if matches(spec, p))
                t.states[spec.name] = _State(spec, spec.quorum <= n <= spec.quorum_max, n)
        return t

    def update(self, processes: list[Process], now: float) -> list[str]:
        """Count again; the names whose up/down changed (after their delay)."""
        changed = []
        for name, st in self.states.items():
            spec = st.spec
            st.count = sum(1 for p in processes if matches(spec, p))
            ok = spec.quorum <= st.count <= spec.quorum_max
            if ok == st.up:
                st.pending_since = None
                continue
            if st.pending_since is None:
                st.pending_since = now
            delay = spec.fork_delay if ok else spec.terminate_delay
            if now - st.pending_since >= delay:
                st.up = ok
                st.pending_since = None
                changed.append(name)
        return changed

    def up(self, name: str) -> bool | None:
        st = self.states.get(name)
        return None if st is None else st.up

    def weight(self, name: str) -> int:
        st = self.states.get(name)
        return 1 if st is None else st.spec.weight

    def reverse(self, name: str) -> bool:
        st = self.states.get(name)
        return False if st is None else st.spec.reverse
