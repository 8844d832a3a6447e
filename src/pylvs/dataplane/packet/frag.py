"""IPv4 fragments followed to the connection their first fragment chose, without reassembly.

Why: kernel IPVS sits behind the kernel's defragmentation, so every fragment of a datagram goes
to the real server its first fragment (the only one with ports) was scheduled to. The packet
plane forwards fragments one by one instead of reassembling them (no copy, no latency), so it
must remember, per datagram (source, destination, protocol, IP ID), where the first fragment
went, and hold fragments that arrive before it. Like the kernel's defrag it refuses overlaps
(RFC 5722's stance: an overlapping datagram is an attack or a bug) and forgets datagrams that
never complete, with bounded memory.

What this is for: the bookkeeping only (sans-IO): ``FragTable.first``/``later`` say what to do
with a fragment; ``expire`` ages entries out. The forwarder sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FRAG_TIMEOUT = 5.0  # seconds a datagram may take to complete (the kernel's ipfrag_time is 30)
MAX_DATAGRAMS = 4096  # datagrams followed at once
MAX_HELD = 64  # fragments held before their first fragment, over all datagrams
MAX_PER_DATAGRAM = 64  # fragments of one datagram (64 KiB / 1 KiB)

Key = tuple[bytes, bytes, int, int]  # source, destination, protocol, IP ID


@dataclass(slots=True)
class Datagram:
    """What is known about one fragmented datagram."""

    born: float
    target: Any = None  # what the first fragment was given (the forwarder's choice)
    ranges: list[tuple[int, int]] = field(default_factory=list)  # payload byte ranges seen
    total: int = -1  # payload length, once the last fragment (MF clear) was seen
    held: list[bytearray] = field(default_factory=list)  # fragments waiting for the first


class FragTable:
    """Fragmented datagrams in flight; counters by outcome and drop reason."""

    def __init__(self, timeout: float = FRAG_TIMEOUT, max_datagrams: int = MAX_DATAGRAMS,
                 max_held: int = MAX_HELD) -> None:
        self.timeout = timeout
        self.max_datagrams = max_datagrams
        self.max_held = max_held
        self.datagrams: dict[Key, Datagram] = {}
        self.held = 0
        self.counters: dict[str, int] = {}

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _seen(self, key: Key, dg: Datagram, offset: int, length: int, more: bool) -> str | None:
        """Record a fragment's byte range; the drop reason, if it must go (and the datagram
        with it)."""
        end = offset + length
        if len(dg.ranges) >= MAX_PER_DATAGRAM:
            return "frag_too_many"
        for a, b in dg.ranges:
            if offset < b and a < end:
                return "frag_overlap"
        if not more:
            if dg.total >= 0 and dg.total != end:
                return "frag_overlap"
            dg.total = end
        elif dg.total >= 0 and end > dg.total:
            return "frag_overlap"
        dg.ranges.append((offset, end))
        return None

    def _complete(self, key: Key, dg: Datagram) -> None:
        if dg.total >= 0 and dg.target is not None and sum(b - a for a, b in dg.ranges) == dg.total:
            del self.datagrams[key]
            self._count("frag_datagrams")

    def _kill(self, key: Key, reason: str) -> None:
        dg = self.datagrams.pop(key, None)
        n = 1
        if dg is not None:
            n += len(dg.held)
            self.held -= len(dg.held)
        self._count(reason, n)

    def _get(self, key: Key, now: float) -> Datagram | None:
        dg = self.datagrams.get(key)
        if dg is None:
            if len(self.datagrams) >= self.max_datagrams:
                self.expire(now)
                if len(self.datagrams) >= self.max_datagrams:
                    self._count("frag_table_full")
                    return None
            dg = self.datagrams[key] = Datagram(now)
        return dg

    def first(self, key: Key, length: int, more: bool, target: Any,
              now: float) -> list[bytearray] | None:
        """The first fragment (offset 0) was given ``target`` (None: it was not forwarded).
        Returns the fragments held for it, to forward the same way, or None when the first
        fragment itself must be dropped (overlap, table full; counted)."""
        dg = self._get(key, now)
        if dg is None:
            return None
        if dg.target is not None:  # a second first fragment: a duplicate or an attack
            self._kill(key, "frag_overlap")
            return None
        reason = self._seen(key, dg, 0, length, more)
        if reason is not None:
            self._kill(key, reason)
            return None
        if target is None:  # nobody wants this datagram: its other fragments go too
            self._kill(key, "frag_unwanted")
            return None
        dg.target = target
        held, dg.held = dg.held, []
        self.held -= len(held)
        self._count("frag_forwarded", 1 + len(held))
        self._complete(key, dg)
        return held

    def later(self, key: Key, frame: bytearray | memoryview, offset: int, length: int,
              more: bool, now: float) -> Any:
        """A later fragment: the first fragment's target when it is known (forward there),
        else None (held until the first fragment comes, or dropped and counted)."""
        dg = self._get(key, now)
        if dg is None:
            return None
        reason = self._seen(key, dg, offset, length, more)
        if reason is not None:
            self._kill(key, reason)
            return None
        if dg.target is not None:
            self._count("frag_forwarded")
            target = dg.target
            self._complete(key, dg)
            return target
        if self.held >= self.max_held:
            self._count("frag_held_full")
            dg.ranges.pop()
            return None
        dg.held.append(bytearray(frame))  # the ring's view is only valid during the call
        self.held += 1
        return None

    def expire(self, now: float) -> None:
        """Forget datagrams older than the timeout: those that never completed (counted once
        each, with the fragments they held dropped)."""
        old = [k for k, dg in self.datagrams.items() if now - dg.born > self.timeout]
        for k in old:
            dg = self.datagrams.pop(k)
            self.held -= len(dg.held)
            self._count("frag_incomplete")
