"""IPVS's defences against a full connection table: ``drop_entry``, ``drop_packet``,
``secure_tcp`` and ``amemthresh``, with the kernel's sysctl names, modes and arithmetic.

What this is for: a spoofed-SYN flood makes one half-open entry per packet. Without a defence
the table fills and every new client is refused until the flood's entries time out. The kernel
(``update_defense_level`` and ``ip_vs_random_dropentry`` in ``ip_vs_ctl.c``/``ip_vs_conn.c``,
``ip_vs_todrop`` in ``ip_vs.h``) answers with three strategies, each a sysctl with four modes:

- 0: off; 1: automatic, currently idle (switched to 2 when memory is low); 2: automatic,
  currently on (switched back to 1 when memory recovers); 3: always on.
- ``drop_entry``: every second, drop some half-open entries (SYN_RECV, SYNACK) so the flood's
  entries go long before their timeout.
- ``drop_packet``: drop one new-connection packet in ``drop_rate`` before it is scheduled;
  ``drop_rate = amemthresh / (amemthresh - available)`` while automatic (it reaches 1, every
  packet, as available memory reaches 0), ``am_droprate`` when always on.
- ``secure_tcp``: the stricter TCP state table (``tcp_states_dos``) and, as in Linux 2.4's
  ``vs_timeout_table_dos``, shorter timeouts: SYN_RECV 10 s instead of 60 s.

pylvs has no kernel memory to measure: its memory is its table, bounded by
``Director.max_connections``. So here *available memory* is the number of free entries,
``max_connections - stored``, and ``amemthresh`` is counted in entries, not pages (default: an
eighth of ``max_connections``): the automatic modes arm when fewer entries than that are free.

One addition the kernel does not need (its table has no fixed size): while ``drop_entry`` is
not 0, a new connection that finds the table full takes the place of the oldest half-open entry
instead of being refused (``Director`` does it, with this module's queue of half-open entries).
A legitimate handshake completes in one round trip; a spoofed one never does, so the oldest
half-open entries are the flood's and legitimate clients keep being served.

Defaults: ``drop_entry`` and ``secure_tcp`` automatic (1), ``drop_packet`` off (0): when the
table is nearly full its automatic drop rate drops nearly every new packet, the legitimate
clients' SYNs among them, which is what the half-open eviction avoids. The kernel's defaults are
all 0; pylvs arms two because the issue it answers is a table full of a flood's entries.

Sans-IO: ``update`` is given the free-entry count and the Director calls it once a second of its
own clock, as the kernel's ``defense_work`` runs once a second.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable

from pylvs.core.api import IPVSError
from pylvs.core.conntrack import CONN_F_HASHED, TCP_S_SYN_RECV, TCP_S_SYNACK, Connection

MODES = (0, 1, 2, 3)
DEFAULT_AM_DROPRATE = 10  # net.ipv4.vs.am_droprate
DEFENSE_PERIOD = 1.0  # DEFENSE_TIMER_PERIOD: seconds between update_defense_level runs
# ip_vs_random_dropentry scans 1/32 of the table a second; here the oldest 1/32 of the
# half-open queue is examined each period.
DROPENTRY_SHARE = 32

# The settings a control request may read and write, with their meaning (and pylvs's own
# ``max_connections``, the table's size, which the kernel has no word for).
SYSCTL_NAMES = (
    "am_droprate", "amemthresh", "drop_entry", "drop_packet", "max_connections", "secure_tcp",
)


class Defense:
    """The defence state: the three sysctls, the derived switches and their counters."""

    def __init__(self, max_connections: int,
                 drop: Callable[[Connection], None] = lambda c: None) -> None:
        self.max_connections = max_connections
        self._drop = drop  # the Director's: unbind an entry and take it out of the table
        self.half_open = HalfOpen()
        # run after a sysctl write (the Director updates the level and its tables)
        self.on_change: Callable[[], None] = lambda: None
        self.refused: Callable[[], int] = lambda: 0  # the Director's refused_full
        self.drop_entry = 1
        self.drop_packet = 0
        self.secure_tcp = 1
        self.am_droprate = DEFAULT_AM_DROPRATE
        self._amemthresh: int | None = None  # None: an eighth of max_connections
        # derived, as the kernel's atomic dropentry, drop_rate/drop_counter, old_secure_tcp
        self.dropentry = False
        self.drop_rate = 0
        self.drop_counter = 0
        self.old_secure_tcp = 0
        # counters
        self.dropped_entries = 0  # half-open entries dropped by drop_entry's periodic scan
        self.evicted_entries = 0  # half-open entries replaced by a new connection (table full)
        self.dropped_packets = 0  # new-connection packets dropped by drop_packet

    @property
    def amemthresh(self) -> int:
        if self._amemthresh is not None:
            return self._amemthresh
        return max(1, self.max_connections // 8)

    @amemthresh.setter
    def amemthresh(self, value: int) -> None:
        self._amemthresh = value

    @property
    def secure(self) -> bool:
        """The secure TCP state and timeout tables are in force (sysctl at 2 or 3)."""
        return self.old_secure_tcp >= 2

    def periodic(self, stored: int) -> bool | None:
        """defense_work_handler, once a second with ``stored`` entries in the table: the level,
        then drop_entry's share of the oldest half-open entries. Returns as ``update``."""
        change = self.update(self.max_connections - stored)
        q = self.half_open
        if self.dropentry:
            for _ in range(max(1, len(q) // DROPENTRY_SHARE)):
                c = q.pop_oldest()
                if c is None:
                    break
                self._drop(c)
                self.dropped_entries += 1
                stored -= 1
        q.compact(stored)
        return change

    def make_room(self) -> bool:
        """The table is full: drop the oldest half-open entry for a new connection (while
        drop_entry is not 0). False when there is none, or the defence is off."""
        if not self.drop_entry:
            return False
        c = self.half_open.pop_oldest()
        if c is None:
            return False
        self._drop(c)
        self.evicted_entries += 1
        return True

    def update(self, available: int) -> bool | None:
        """update_defense_level with ``available`` free entries. Returns the new value of the
        secure switch when it changes (the caller swaps its tables), else None."""
        thresh = max(self.amemthresh, 0)
        nomem = available < thresh
        # drop_entry
        mode = self.drop_entry
        if mode == 0:
            self.dropentry = False
        elif mode == 3:
            self.dropentry = True
        else:
            self.dropentry = nomem
            self.drop_entry = 2 if nomem else 1
        # drop_packet
        mode = self.drop_packet
        if mode == 0:
            self.drop_rate = 0
        elif mode == 3:
            self.drop_rate = self.am_droprate
        elif nomem:
            self.drop_rate = self.drop_counter = thresh // max(1, thresh - max(available, 0))
            self.drop_packet = 2
        else:
            self.drop_rate = 0
            self.drop_packet = 1
        # secure_tcp
        mode = self.secure_tcp
        if mode in (1, 2):
            self.secure_tcp = 2 if nomem else 1
        was = self.old_secure_tcp >= 2
        self.old_secure_tcp = self.secure_tcp
        now = self.secure_tcp >= 2
        return now if now != was else None

    def todrop(self) -> bool:
        """ip_vs_todrop: drop this new-connection packet? One in ``drop_rate`` is."""
        if not self.drop_rate:
            return False
        self.drop_counter -= 1
        if self.drop_counter > 0:
            return False
        self.drop_counter = self.drop_rate
        self.dropped_packets += 1
        return True

    # ---- the sysctl interface ----------------------------------------------------------------

    def get_sysctl(self) -> dict[str, int]:
        """The settings by sysctl name, plus pylvs's own ``max_connections``."""
        return {
            "am_droprate": self.am_droprate,
            "amemthresh": self.amemthresh,
            "drop_entry": self.drop_entry,
            "drop_packet": self.drop_packet,
            "max_connections": self.max_connections,
            "secure_tcp": self.secure_tcp,
        }

    def set_sysctl(self, values: dict[str, object]) -> None:
        """Write settings, every one checked before any is set (IPVSError and nothing changed
        on a bad one); then the level is updated at once, as a write to the kernel's is."""
        checked = {name: self.check(name, value) for name, value in values.items()}
        for name, value in checked.items():
            if name == "amemthresh":
                self.amemthresh = value
            else:
                setattr(self, name, value)
        self.on_change()

    def counters(self) -> dict[str, int]:
        return {
            "dropped_entries": self.dropped_entries,
            "evicted_entries": self.evicted_entries,
            "dropped_packets": self.dropped_packets,
            "drop_rate": self.drop_rate,
            "secure": int(self.secure),
            "dropentry": int(self.dropentry),
            "half_open_queue": len(self.half_open),
            "refused_full": self.refused(),
        }

    @staticmethod
    def check(name: str, value: object) -> int:
        """The value a write of ``name`` would set, or IPVSError as the kernel's handlers
        refuse it (proc_do_defense_mode: 0..3; the others: a non-negative integer)."""
        if name not in SYSCTL_NAMES:
            raise IPVSError(errno.ENOENT, f"unknown setting {name!r} (known: "
                            f"{', '.join(SYSCTL_NAMES)})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise IPVSError(errno.EINVAL, f"{name}: an integer is required")
        if name == "max_connections":
            if not 1 <= value <= 2**31 - 1:
                raise IPVSError(errno.EINVAL, "max_connections: must be 1 or more")
        elif name in ("drop_entry", "drop_packet", "secure_tcp"):
            if value not in MODES:
                raise IPVSError(errno.EINVAL, f"{name}: must be 0, 1, 2 or 3")
        elif not 0 <= value <= 2**31 - 1:
            raise IPVSError(errno.EINVAL, f"{name}: must be 0 or more")
        return value


class HalfOpen:
    """The TCP entries created half-open (SYN_RECV, SYNACK), oldest first: whom ``drop_entry``
    drops, and whose place a new connection takes when the table is full.

    A deque of references appended when an entry is made (one append per new TCP connection);
    entries that have since moved on (established, closed, expired) are skipped and forgotten
    when they reach the head, and the queue is rebuilt when such stale references outnumber
    the table's entries, so it never holds more than about twice the table."""

    def __init__(self) -> None:
        self.queue: deque[Connection] = deque()

    def __len__(self) -> int:
        return len(self.queue)

    def note(self, c: Connection) -> None:
        """An entry that came in half-open otherwise than by a SYN the Director scheduled (a
        sync message, a table restored at start, a connection an XDP program made): queued
        too, as the kernel's drop_entry sees every half-open entry of its table."""
        if _droppable(c):
            self.queue.append(c)

    def pop_oldest(self) -> Connection | None:
        """The oldest entry still half-open and controlling nothing, taken off the queue."""
        q = self.queue
        while q:
            c = q.popleft()
            if c.bucket is not None and c.state in _HALF_OPEN and not c.n_control \
                    and c.flags & CONN_F_HASHED:
                return c
        return None

    def compact(self, stored: int) -> None:
        """Forget stale references at the head, and rebuild when most are stale."""
        q = self.queue
        while q and not _droppable(q[0]):
            q.popleft()
        if len(q) > 2 * stored + 1024:
            keep = [c for c in q if _droppable(c)]  # in place: the Director holds the deque
            q.clear()
            q.extend(keep)


_HALF_OPEN = frozenset({TCP_S_SYN_RECV, TCP_S_SYNACK})


def _droppable(c: Connection) -> bool:
    return c.bucket is not None and c.state in _HALF_OPEN and not c.n_control \
        and bool(c.flags & CONN_F_HASHED)
