"""The cyclic garbage collector's full passes on a timer, not set off by the table's growth.

Why: every entry of a packet plane's connection table is a Python object the collector
tracks, and CPython runs a full pass (over every tracked object) each time the objects that
reached its oldest generation since the last pass number a quarter of that generation. A
table growing at a SYN flood's rate is then walked whole each time it grows by a quarter, and
a steady churn of R new entries a second over a table of T entries costs a pass every T/4R
seconds: 320 ms of a stopped process for each pass over 1,000,000 entries, every 2.5 s at
100,000 new connections a second. Measured in process (the forwarder deciding new SYNs of an
``rr`` DR service, 400,000 of them): 7.5 µs a SYN with CPython's schedule, 6.4 µs without its
full passes.

The entries never need the collector: the connection table unlinks an entry (``next``,
``bucket``, ``control``) when it leaves, so reference counting frees it
(``tests/dataplane/packet/test_heap.py`` holds that true). What can need it are reference
cycles elsewhere (asyncio's transports, an exception's traceback, a deleted service and its
servers). So while a packet plane is open, the oldest generation is collected every
``FULL_EVERY`` seconds from the director's tick, and the two younger ones as CPython schedules
them: a cycle that survived those waits at most ``FULL_EVERY`` seconds to be freed.

Process-wide, as the collector is: the first plane opened sets the schedule, the last one
closed puts CPython's back."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

FULL_EVERY = 60.0
_NEVER = 2**31 - 1  # gen-1 passes before a full one: never reached

_users = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The collector held off while connections are entered in bulk. Why: each entry allocates
    a few container objects, so a batch of thousands runs dozens of the younger generations'
    passes: entering cost 7 µs a connection at 40,000 entries and 11 µs at 240,000 (before the
    full passes went on a timer), against a flat 6.5-7 µs with the collector held off for the
    batch (the XDP plane's import, ``BPF_PROG_TEST_RUN``, 40,000 per batch). It runs after,
    over the batch's objects at once: nothing is lost by its waiting."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class FullCollections:
    """One plane's share of the schedule: ``start`` when it opens, ``tick`` from the
    director's tick, ``stop`` when it closes."""

    def __init__(self, every: float = FULL_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.passes = 0
        self.last_ms = 0.0
        self._due = 0.0
        self._started = False

    def start(self) -> None:
        global _users, _saved
        if self._started:
            return
        self._started = True
        if _users == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(_saved[0], _saved[1], _NEVER)
        _users += 1
        self._due = self.clock() + self.every

    def tick(self) -> None:
        if not self._started or self.clock() < self._due:
            return
        t0 = time.perf_counter()
        if gc.isenabled():  # a caller holding it off for a bulk load: not now
            gc.collect()
            self.passes += 1
        self.last_ms = (time.perf_counter() - t0) * 1e3
        self._due = self.clock() + self.every

    def stop(self) -> None:
        global _users, _saved
        if not self._started:
            return
        self._started = False
        _users -= 1
        if _users == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None

    def describe(self) -> dict[str, float | int]:
        return {"every_s": self.every, "passes": self.passes, "last_ms": round(self.last_ms, 1)}
