"""Invariants of every scheduler under random tables and random changes (hypothesis).

- never a weight-0 server, never a non-member, never an OVERLOADed one (where the kernel checks);
- ``None`` only when no server is eligible (for the schedulers that always find one if any is);
- the O(1) index of lc/wlc/sed/nq (notified mode) decides exactly like the kernel's loop.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.model import (
    DestFlags,
    DestSpec,
    Protocol,
    RealServer,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    VirtualService,
)
from pylvs.core.schedulers import SCHEDULER_NAMES
from pylvs.core.schedulers._least import LeastLoadScheduler
from pylvs.core.schedulers.twos import PowerOfTwoChoices
from pylvs.core.schedulers.wrr import WeightedRoundRobin
from pylvs.core.table import IPVSTable

KEY = ServiceKey.inet(Protocol.TCP, "10.1.1.1", 80)
VADDRS = [ipaddress.ip_address(f"10.1.1.{i}").packed for i in (1, 2, 3)]

# Schedulers that return a server whenever one has weight > 0 and no OVERLOAD flag.
ALWAYS_FIND = {"rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "twos", "lblc", "lblcr"}

server = st.tuples(
    st.integers(0, 5),  # weight
    st.booleans(),  # overloaded
    st.integers(0, 6),  # activeconns
    st.integers(0, 6),  # inactconns
)
op = st.one_of(
    st.tuples(st.just("pick"), st.integers(0, 50), st.integers(0, 2)),
    st.tuples(st.just("weight"), st.integers(0, 20), st.integers(0, 6)),
    st.tuples(st.just("flag"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("conns"), st.integers(0, 20), st.integers(0, 6), st.integers(0, 6)),
    st.tuples(st.just("del"), st.integers(0, 20)),
    st.tuples(st.just("add"), st.integers(0, 6)),
    st.tuples(st.just("time"), st.floats(0, 100_000)),
)


def eligible(d: RealServer) -> bool:
    return d.weight > 0 and not d.flags & DestFlags.OVERLOAD


class Harness:
    def __init__(self, name: str, servers: list[tuple[int, bool, int, int]], flags: int,
                 notify: bool) -> None:
        self.table = IPVSTable()
        self.table.add_service(ServiceSpec(KEY, name, ServiceFlags(flags)))
        self.next_addr = 1
        self.notify = notify
        svc = self.table.lookup(KEY)
        assert svc is not None and svc.scheduler is not None
        self.svc: VirtualService = svc
        if name == "twos":
            svc.scheduler = PowerOfTwoChoices(svc, random.Random(42))
        for w, over, a, i in servers:
            d = self.add(w)
            d.activeconns, d.inactconns = a, i
            if over:
                d.flags |= DestFlags.OVERLOAD
        if notify and svc.destinations:
            svc.scheduler.conns_changed(svc.destinations[0])
        self.now = 0.0

    def add(self, weight: int) -> RealServer:
        addr = ipaddress.ip_address(f"10.0.{self.next_addr // 250}.{self.next_addr % 250 + 1}")
        self.next_addr += 1
        self.table.add_dest(KEY, DestSpec(addr, 80, weight=weight))
        d = self.svc.find_dest(addr, 80)
        assert d is not None
        return d

    def changed(self, d: RealServer) -> None:
        if self.notify:
            assert self.svc.scheduler is not None
            self.svc.scheduler.conns_changed(d)

    def apply(self, o: tuple[Any, ...]) -> RealServer | str | None:
        dests = self.svc.destinations
        kind = o[0]
        if kind == "pick":
            assert self.svc.scheduler is not None
            client = ipaddress.ip_address(0x64400000 + o[1]).packed
            return self.svc.scheduler.schedule(client, 1000 + o[1], VADDRS[o[2]], 80, self.now)
        if kind == "time":
            self.now += o[1]
            return "skip"
        if kind == "add":
            self.add(o[1])
            return "skip"
        if not dests:
            return "skip"
        d = dests[o[1] % len(dests)]
        if kind == "weight":
            self.table.edit_dest(KEY, DestSpec(d.addr, 80, weight=o[2]))
        elif kind == "flag":
            if o[2]:
                d.flags |= DestFlags.OVERLOAD
            else:
                d.flags &= ~DestFlags.OVERLOAD
            self.changed(d)
        elif kind == "conns":
            d.activeconns, d.inactconns = o[2], o[3]
            self.changed(d)
        elif kind == "del":
            self.table.del_dest(KEY, d.addr, 80)
        return "skip"


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(SCHEDULER_NAMES),
    servers=st.lists(server, max_size=8),
    flags=st.sampled_from([0, int(ServiceFlags.SCHED1), int(ServiceFlags.SCHED2), 0x18]),
    ops=st.lists(op, max_size=40),
)
def test_schedulers_never_pick_ineligible_and_find_one_when_any_is(
    name: str, servers: list[tuple[int, bool, int, int]], flags: int, ops: list[tuple[Any, ...]]
) -> None:
    h = Harness(name, servers, flags, notify=name in ("lc", "wlc", "sed", "nq"))
    for o in [*ops, ("pick", 1, 0), ("pick", 2, 1)]:
        before = list(h.svc.destinations)
        got = h.apply(o)
        if got == "skip":
            continue
        if got is None:
            if name in ALWAYS_FIND:
                assert not any(eligible(d) for d in before), (name, before)
            elif name == "ovf":
                assert not any(eligible(d) and d.activeconns <= d.weight for d in before)
            continue
        assert isinstance(got, RealServer)
        assert any(got is d for d in before), name
        assert got.weight > 0, name
        if name != "lblc":  # lblc reuses its cached server without looking at the flag
            assert not got.flags & DestFlags.OVERLOAD, name
        if name == "ovf":
            assert got.activeconns <= got.weight


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["lc", "wlc", "sed", "nq"]),
    servers=st.lists(server, min_size=1, max_size=10),
    ops=st.lists(op, max_size=60),
)
def test_least_connection_index_decides_like_the_kernel_loop(
    name: str, servers: list[tuple[int, bool, int, int]], ops: list[tuple[Any, ...]]
) -> None:
    h = Harness(name, servers, 0, notify=True)
    sched = h.svc.scheduler
    assert isinstance(sched, LeastLoadScheduler)
    for o in [*ops, ("pick", 0, 0)]:
        got = h.apply(o)
        if got != "skip":
            assert got is sched._scan()
        # The index must agree at every step, not only when asked.
        assert sched.schedule(b"\x01\x02\x03\x04", 1, VADDRS[0], 80, 0.0) is sched._scan()


@settings(max_examples=100, deadline=None)
@given(
    weights=st.lists(st.integers(0, 12), min_size=1, max_size=8),
    ops=st.lists(st.one_of(
        st.tuples(st.just("pick"), st.integers(0, 50), st.integers(0, 2)),
        st.tuples(st.just("weight"), st.integers(0, 20), st.integers(0, 12)),
        st.tuples(st.just("flag"), st.integers(0, 20), st.booleans()),
    ), max_size=80),
)
def test_wrr_gives_each_server_its_weight_share_over_a_cycle(
    weights: list[int], ops: list[tuple[Any, ...]]
) -> None:
    h = Harness("wrr", [(w, False, 0, 0) for w in weights], 0, notify=False)
    for o in ops:
        h.apply(o)
    for d in h.svc.destinations:
        d.flags &= ~DestFlags.OVERLOAD
    dests = h.svc.destinations
    total = sum(d.weight for d in dests)
    if total == 0:
        assert h.apply(("pick", 0, 0)) is None
        return
    from math import gcd

    g = 0
    for d in dests:
        g = gcd(g, d.weight)
    # Whatever the phase, any window of one full cycle holds weight / gcd picks of each server.
    cycle = total // g
    seq = [h.apply(("pick", 0, 0)) for _ in range(cycle * 2)]
    for start in (0, cycle // 2, cycle):
        window = seq[start : start + cycle]
        for d in dests:
            assert sum(1 for x in window if x is d) == d.weight // g


@settings(max_examples=150, deadline=None)
@given(
    servers=st.lists(server, min_size=1, max_size=8),
    ops=st.lists(op, max_size=80),
)
def test_wrr_laid_out_cycle_decides_like_the_step_by_step_walk(
    servers: list[tuple[int, bool, int, int]], ops: list[tuple[Any, ...]]
) -> None:
    fast = Harness("wrr", servers, 0, notify=False)
    slow = Harness("wrr", servers, 0, notify=False)
    slow_sched = slow.svc.scheduler
    assert isinstance(slow_sched, WeightedRoundRobin)
    slow_sched.max_cycle = 0
    slow_sched._layout()
    for o in [*ops, ("pick", 0, 0), ("pick", 0, 0)]:
        a, b = fast.apply(o), slow.apply(o)
        if a == "skip":
            continue
        assert (a is None) == (b is None)
        if isinstance(a, RealServer) and isinstance(b, RealServer):
            assert a.addr == b.addr


def test_wrr_laid_out_cycle_matches_the_walk_through_overload_storms() -> None:
    rng = random.Random(2024)
    for _ in range(300):
        servers = [(rng.randint(0, 4), False, 0, 0) for _ in range(rng.randint(1, 5))]
        fast = Harness("wrr", servers, 0, notify=False)
        slow = Harness("wrr", servers, 0, notify=False)
        slow_sched = slow.svc.scheduler
        assert isinstance(slow_sched, WeightedRoundRobin)
        slow_sched.max_cycle = 0
        slow_sched._layout()
        for _ in range(60):
            r = rng.random()
            if r < 0.35:
                o: tuple[Any, ...] = ("flag", rng.randint(0, 9), rng.random() < 0.6)
            elif r < 0.4:
                o = ("weight", rng.randint(0, 9), rng.randint(0, 4))
            else:
                o = ("pick", 0, 0)
            a, b = fast.apply(o), slow.apply(o)
            if a != "skip":
                assert (None if a is None else a.addr) == (None if b is None else b.addr)  # type: ignore[union-attr]


@settings(max_examples=100, deadline=None)
@given(
    servers=st.lists(server, min_size=1, max_size=8),
    ops=st.lists(op, max_size=60),
    seed=st.integers(0, 2**32),
)
def test_twos_bisect_path_decides_like_the_kernel_walk(
    servers: list[tuple[int, bool, int, int]], ops: list[tuple[Any, ...]], seed: int
) -> None:
    h = Harness("twos", servers, 0, notify=False)
    fast = PowerOfTwoChoices(h.svc, random.Random(seed))
    h.svc.scheduler = fast
    slow = PowerOfTwoChoices(h.svc, random.Random(seed))
    for o in [*ops, ("pick", 0, 0)]:
        if o[0] == "pick":
            a = fast.schedule(b"\x01\x02\x03\x04", 1, VADDRS[0], 80, 0.0)
            assert a is slow._walk()
        else:
            h.apply(o)


def _fo_loop(svc: VirtualService) -> RealServer | None:
    """ip_vs_fo_schedule as written: the first strictly highest weight, not OVERLOADed."""
    best, hw = None, 0
    for d in svc.destinations:
        if not d.flags & DestFlags.OVERLOAD and d.weight > hw:
            best, hw = d, d.weight
    return best


def _ovf_loop(svc: VirtualService) -> RealServer | None:
    """ip_vs_ovf_schedule as written."""
    best, hw = None, 0
    for d in svc.destinations:
        w = d.weight
        if d.flags & DestFlags.OVERLOAD or d.activeconns > w or w == 0:
            continue
        if best is None or w > hw:
            best, hw = d, w
    return best


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["fo", "ovf"]),
    servers=st.lists(server, min_size=1, max_size=8),
    ops=st.lists(op, max_size=50),
)
def test_fo_and_ovf_rankings_decide_like_the_kernel_loops(
    name: str, servers: list[tuple[int, bool, int, int]], ops: list[tuple[Any, ...]]
) -> None:
    h = Harness(name, servers, 0, notify=False)
    loop = _fo_loop if name == "fo" else _ovf_loop
    for o in [*ops, ("pick", 0, 0)]:
        got = h.apply(o)
        if got != "skip":
            assert got is loop(h.svc)
