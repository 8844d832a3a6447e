"""Maglev hashing (``ip_vs_mh.c``): consistent hashing with a prime-sized lookup table.

What this is for: the kernel's exact table, so a client lands on the same real server as under
kernel IPVS, and removing one of N servers moves only about 1/N of the clients. Each server gets a
permutation of the slots from two keyed hashes of its address and port (``offset`` and ``skip``,
``hsiphash`` with the kernel's fixed keys), and servers take turns, in list order, claiming their
next free preferred slot; a server claims ``(last_weight / gcd) >> rshift`` slots per turn. A
client is hashed (address, plus source port with ``mh-port`` = ``SCHED2``) to a slot; a server with
weight 0 or OVERLOAD keeps its slots but is refused, and with ``mh-fallback`` (``SCHED1``) the
table is probed with increasing offsets until an available server is found. Decisions were
compared with Debian 12's kernel (weights, both flags, quiesced, removed servers, IPv6) and agree.

``last_weight`` is the kernel's "latest non-zero weight" of a real server; this scheduler records
it from the add/edit hooks it sees. A scheduler switched to ``mh`` on a service whose servers
were edited to weight 0 earlier cannot know their earlier weight and uses the current one.

The table size is ``primes[CONFIG_IP_VS_MH_TAB_INDEX - 8]``; the Kconfig default (and Debian's
kernels) use index 12, i.e. 4093 slots (251 would be index 8). ``MaglevHashing.tab_size`` can be
set per instance for a kernel built otherwise.

What this is not for: anything but source-address (and port) keyed selection.
"""

from __future__ import annotations

from math import gcd

from pylvs.core.model import DestFlags, RealServer, ServiceFlags, VirtualService
from pylvs.core.schedulers._hash import fold_addr, hsiphash_u32
from pylvs.core.schedulers.base import Scheduler

PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
TAB_INDEX = 12
TAB_BITS = TAB_INDEX // 2
TAB_SIZE = PRIMES[TAB_INDEX - 8]
# generate_hash_secret(): fixed, so every kernel builds the same table for the same servers.
HASH1 = (2654435761, 2654435761)
HASH2 = (2654446892, 2654446892)

MH_FALLBACK = ServiceFlags.SCHED1
MH_PORT = ServiceFlags.SCHED2

_AVAIL = DestFlags.AVAILABLE
_NONE = DestFlags.NONE
_OVERLOAD = DestFlags.OVERLOAD
_M32 = 0xFFFFFFFF

# hsiphash values of (address fold + port + offset) keyed by HASH1; a client's hash is pure, so
# it is remembered (bounded) to keep repeated lookups cheap.
_CACHE: dict[int, int] = {}
_CACHE_MAX = 1 << 16


def hashkey(addr: bytes, port: int, key: tuple[int, int], offset: int = 0) -> int:
    """``ip_vs_mh_hashkey``: hsiphash of the u32 ``offset + port + ntohl(addr_fold)``."""
    return hsiphash_u32((offset + port + fold_addr(addr)) & _M32, key[0], key[1])


def _client_hash(v: int) -> int:
    h = _CACHE.get(v)
    if h is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        h = _CACHE[v] = hsiphash_u32(v, HASH1[0], HASH1[1])
    return h


def remember_client_hash(v: int, h: int, verify: bool = False) -> bool:
    """A client's hash ``h`` of ``v`` computed elsewhere with the same function (the XDP
    program hashes each client it schedules as ip_vs_mh does), remembered as if computed here,
    so entering that connection does not hash it again in Python (≈ 4 µs). The caller vouches
    for the value, or passes ``verify`` (the XDP plane does for a sample) to have it computed
    here too and remembered only if the same. Returns whether it was remembered."""
    v &= _M32
    if verify and hsiphash_u32(v, HASH1[0], HASH1[1]) != h:
        return False
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[v] = h & _M32
    return True


def _unavailable(d: RealServer) -> bool:
    if d.weight <= 0:
        return True
    f = d.flags
    return not (f is _AVAIL or f is _NONE) and bool(f & _OVERLOAD)


def build_table(
    dests: list[RealServer], last_weights: list[int], size: int = TAB_SIZE
) -> list[RealServer | None]:
    """``ip_vs_mh_permutate`` + ``ip_vs_mh_populate`` for servers in list order."""
    g = 0
    for w in last_weights:
        if w > 0:
            g = gcd(w, g) if g > 0 else w
    if g < 1:
        return [None] * size
    mw = max(last_weights) // g
    rshift = max(mw.bit_length() - TAB_BITS, 0)
    offsets: list[int] = []
    skips: list[int] = []
    turns: list[int] = []
    for d, lw in zip(dests, last_weights, strict=True):
        packed = d.addr_packed
        offsets.append(hashkey(packed, d.port, HASH1) % size)
        skips.append(hashkey(packed, d.port, HASH2) % (size - 1) + 1)
        turns.append(((lw // g) >> rshift) or (1 if lw != 0 else 0))
    perm = list(offsets)
    table: list[RealServer | None] = [None] * size
    taken = [False] * size
    n = 0
    count = len(dests)
    dt_count = 0
    while n < size:
        i = 0
        while i < count:
            t = turns[i]
            if t < 1:
                i += 1
                continue
            c = perm[i]
            while taken[c]:
                c += skips[i]
                if c >= size:
                    c -= size
            perm[i] = c
            taken[c] = True
            table[c] = dests[i]
            n += 1
            if n == size:
                return table
            dt_count += 1
            if dt_count >= t:
                dt_count = 0
                i += 1
    return table


class MaglevHashing(Scheduler):
    name = "mh"

    def __init__(self, service: VirtualService, tab_size: int = TAB_SIZE) -> None:
        super().__init__(service)
        self.tab_size = tab_size
        self._flags_seen: ServiceFlags | None = None
        self._use_port = self._fallback = False
        self._last_weight: dict[int, int] = {id(d): d.weight for d in service.destinations}
        self._table: list[RealServer | None] = [None] * tab_size
        self._rebuild()

    def _rebuild(self) -> None:
        dests = self.service.destinations
        if len(dests) > self.tab_size:
            return  # ip_vs_mh_reassign: -EINVAL, the old table stays
        lws = [self._last_weight.get(id(d), d.weight) for d in dests]
        self._table = build_table(dests, lws, self.tab_size)

    def add_dest(self, dest: RealServer) -> None:
        self._last_weight[id(dest)] = dest.weight
        self._rebuild()

    def del_dest(self, dest: RealServer) -> None:
        self._last_weight.pop(id(dest), None)
        self._rebuild()

    def upd_dest(self, dest: RealServer) -> None:
        if dest.weight != 0:
            self._last_weight[id(dest)] = dest.weight
        self._rebuild()

    def update(self) -> None:
        self._rebuild()

    def table_indexes(self) -> list[int]:
        """The lookup table as it stands, each slot as an index into the service's
        ``destinations`` (-1: no server). Read only: for a data plane that looks clients up in
        a copy of the table (the XDP plane's Maglev map), so that copy decides as this does."""
        index = {id(d): i for i, d in enumerate(self.service.destinations)}
        return [-1 if d is None else index.get(id(d), -1) for d in self._table]

    def schedule(
        self, caddr: bytes, cport: int, vaddr: bytes, vport: int, now: float
    ) -> RealServer | None:
        flags = self.service.flags
        if flags is not self._flags_seen:  # re-read the bits only when the flags object changes
            self._flags_seen = flags
            self._use_port = bool(flags & MH_PORT)
            self._fallback = bool(flags & MH_FALLBACK)
        port = cport if self._use_port else 0
        base = port + fold_addr(caddr)
        table = self._table
        size = self.tab_size
        ihash = _client_hash(base & _M32) % size
        d = table[ihash]
        if d is None:
            return None
        if not _unavailable(d):
            return d
        if not self._fallback:
            return None
        for offset in range(size):
            roffset = (offset + ihash) % size
            d = table[_client_hash((roffset + base) & _M32) % size]
            if d is None:
                break
            if not _unavailable(d):
                return d
        return None


SCHEDULER = MaglevHashing
