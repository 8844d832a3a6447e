"""What lblc and lblcr share: the weighted least-connection pick over the whole service, the
"overloaded" test of a cached server, and the kernel's garbage collection of stale cache entries.

What this is for: the kernel runs a 60 s timer per service (``ip_vs_lblc_check_expire``) that
either does a full check every 30th run (dropping entries unused for ``lblc_expiration``, 24 h by
default) or, when the table holds more than 16384 entries, drops entries unused for 6 minutes,
bucket by bucket from a rover, until 4/3 of the excess is gone (at most half the maximum). Here
no timer runs: ``advance(now)`` replays every tick that fell due up to ``now``, in order, each
with its own time, before a decision reads the cache. The first tick is due 60 s after the first
decision (the kernel counts from the service's creation, which a scheduler is not told).

What this is not for: anything per connection; entries are per destination address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from pylvs.core.model import RealServer, VirtualService
from pylvs.core.schedulers._hash import fold_addr, hash_32
from pylvs.core.schedulers.base import Scheduler

CHECK_EXPIRE_INTERVAL = 60.0
ENTRY_TIMEOUT = 6 * 60.0
DEFAULT_EXPIRATION = 24 * 60 * 60.0
COUNT_FOR_FULL_EXPIRATION = 30
TAB_BITS = 10
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1
MAX_SIZE = TAB_SIZE * 16



class Entry(Protocol):
    lastuse: float


def bucket_of(addr: bytes) -> int:
    """The hash bucket of a destination address (``hash_32(ntohl(addr_fold), 10)``)."""
    return hash_32(fold_addr(addr), TAB_BITS)


def busy_while_others_idle(dest: RealServer, service: VirtualService) -> bool:
    """The kernel's ``is_overloaded``: more active connections than its weight while some
    server of the service has fewer than half its weight."""
    if dest.activeconns > dest.weight:
        for d in service.destinations:
            if d.activeconns * 2 < d.weight:
                return True
    return False


class ExpiryClock:
    """The periodic garbage collector of an lblc/lblcr table, replayed from ``now`` values.

    ``entries`` maps destination address to an entry with ``lastuse``; insertion order stands for
    the kernel's bucket order (newest first within a bucket). ``count`` mirrors the kernel's
    ``tbl->entries`` counter, which is what the size test reads.
    """

    def __init__(
        self, entries: dict[bytes, Entry], drop: Callable[[bytes], None], expiration: float
    ) -> None:
        self.entries = entries
        self.drop = drop
        self.expiration = expiration
        self.next_tick: float | None = None
        self.counter = 1
        self.rover = 0
        self.count = 0

    def advance(self, now: float) -> None:
        nt = self.next_tick
        if nt is None:
            self.next_tick = now + CHECK_EXPIRE_INTERVAL
            return
        period = COUNT_FOR_FULL_EXPIRATION
        while nt <= now:
            if self.count <= MAX_SIZE and self.counter % period:
                # Ticks that only count up to the next full check: skip them in one step.
                due = int((now - nt) // CHECK_EXPIRE_INTERVAL) + 1
                k = min(period - self.counter % period, due)
                self.counter += k
                nt += k * CHECK_EXPIRE_INTERVAL
                continue
            self._tick(nt)
            nt += CHECK_EXPIRE_INTERVAL
        self.next_tick = nt

    def _tick(self, now: float) -> None:
        if self.counter % COUNT_FOR_FULL_EXPIRATION == 0:
            self._full_check(now)
            self.counter = 1
            return
        if self.count <= MAX_SIZE:
            self.counter += 1
            return
        goal = (self.count - MAX_SIZE) * 4 // 3
        goal = min(goal, MAX_SIZE // 2)
        by_bucket: dict[int, list[bytes]] = {}
        for addr in reversed(self.entries):
            by_bucket.setdefault(bucket_of(addr), []).append(addr)
        j = self.rover
        for _ in range(TAB_SIZE):
            j = (j + 1) & TAB_MASK
            for addr in by_bucket.get(j, ()):
                if now < self.entries[addr].lastuse + ENTRY_TIMEOUT:
                    continue
                self.drop(addr)
                self.count -= 1
                goal -= 1
            if goal <= 0:
                break
        self.rover = j

    def _full_check(self, now: float) -> None:
        exp = self.expiration
        for addr in [a for a, e in self.entries.items() if not now < e.lastuse + exp]:
            self.drop(addr)
            self.count -= 1
        # The kernel's full check walks every bucket once from the rover: it ends where it began.


E = TypeVar("E", bound=Entry)


class LocalityScheduler(Scheduler, Generic[E]):
    """What lblc and lblcr share: the per-destination-address table and its expiry clock.

    ``_dead`` is set once the service is gone (the kernel's ``done_service``): a decision in
    flight may still pick a server, but no new entry is stored.
    """

    def __init__(self, service: VirtualService, expiration: float = DEFAULT_EXPIRATION) -> None:
        super().__init__(service)
        self.entries: dict[bytes, E] = {}
        self._dead = False
        self.expiration = expiration
        entries: dict[bytes, Entry] = self.entries  # type: ignore[assignment]
        self.clock = ExpiryClock(entries, self._drop, expiration)

    def _drop(self, addr: bytes) -> None:
        del self.entries[addr]

    def done(self) -> None:
        self._dead = True
        self.entries.clear()
        self.clock.count = 0
