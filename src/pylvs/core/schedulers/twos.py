"""Power of two choices (``ip_vs_twos.c``): two weighted random picks, the less loaded wins.

What this is for: the kernel's rule. With ``T`` the sum of the positive weights of the
non-OVERLOADed servers, two numbers are drawn in ``[0, T]`` (the kernel's ``% (T + 1)``); walking
the list, each number is reduced by each eligible weight and a choice is made where it first
drops to 0 or below. The second choice wins if ``w2 * overhead1 > w1 * overhead2``.

The kernel draws from ``get_random_u32()``, which cannot be reproduced; this module draws 32-bit
numbers from an injectable ``random.Random`` (``rng``) so that tests can be deterministic and a
comparison with the kernel can only be statistical.

What this is not for: anything deterministic per client (that is sh/mh).
"""

from __future__ import annotations

import random
from bisect import bisect_left
from itertools import accumulate
from operator import attrgetter

from pylvs.core.model import DestFlags, RealServer, VirtualService
from pylvs.core.schedulers.base import Scheduler

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD
_flags_of = attrgetter("flags")


class PowerOfTwoChoices(Scheduler):
    name = "twos"

    def __init__(self, service: VirtualService, rng: random.Random | None = None) -> None:
        super().__init__(service)
        self.rng = rng if rng is not None else random.Random()
        self.update()

    def update(self) -> None:
        # Servers with weight > 0 in list order and their running weight sums: with no OVERLOAD
        # flag set, the kernel's "subtract weights until <= 0" walk is a bisect on the sums.
        self._positive = [d for d in self.service.destinations if d.weight > 0]
        self._sums = list(accumulate(d.weight for d in self._positive))

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        positive = self._positive
        if positive and list(map(_flags_of, positive)).count(_AVAIL) == len(positive):
            sums = self._sums
            total = sums[-1] + 1
            bits = self.rng.getrandbits
            c1 = positive[bisect_left(sums, bits(32) % total)]
            c2 = positive[bisect_left(sums, bits(32) % total)]
            oh1 = (c1.activeconns << 8) + c1.inactconns
            oh2 = (c2.activeconns << 8) + c2.inactconns
            return c2 if c2.weight * oh1 > c1.weight * oh2 else c1
        return self._walk()

    def _walk(self) -> RealServer | None:
        """``ip_vs_twos_schedule`` step by step (some server is OVERLOADed)."""
        eligible = []
        total = 0
        for d in self.service.destinations:
            w = d.weight
            if w > 0:
                f = d.flags
                if f is _AVAIL or f is _NONE or not f & _OVERLOAD:
                    eligible.append(d)
                    total += w
        if not eligible:
            return None
        total += 1
        bits = self.rng.getrandbits
        r1 = bits(32) % total
        r2 = bits(32) % total
        choice1 = choice2 = None
        w1 = w2 = -1
        oh1 = oh2 = 0
        for d in eligible:
            w = d.weight
            r1 -= w
            r2 -= w
            if r1 <= 0 and w1 == -1:
                choice1, w1 = d, w
                oh1 = (d.activeconns << 8) + d.inactconns
            if r2 <= 0 and w2 == -1:
                choice2, w2 = d, w
                oh2 = (d.activeconns << 8) + d.inactconns
            if w1 != -1 and w2 != -1:
                break
        assert choice1 is not None
        if choice2 is not None and w2 * oh1 > w1 * oh2:
            return choice2
        return choice1


SCHEDULER = PowerOfTwoChoices
