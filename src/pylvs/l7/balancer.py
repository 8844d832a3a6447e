"""nginx's smooth weighted round robin over an upstream's servers, with failure accounting.

Each pick adds every eligible peer's ``effective_weight`` to its ``current_weight``, takes the
peer with the largest ``current_weight`` and subtracts the total from it: weights 2:1 give
a, b, a, a, b, a... spread evenly rather than in bursts. A failure raises ``fails`` and lowers
``effective_weight`` by ``weight / max_fails`` (recovering by one per pick); a peer with
``fails >= max_fails`` is skipped for ``fail_timeout``, one with ``max_conns`` requests in
progress (``conns``, counted from ``get`` to ``free``) until one ends. Backup peers are tried
only when no primary peer is eligible. When nothing is eligible nginx forgets all failures (so the next
request probes again) and answers 502; so does this.

The other methods of an ``upstream {}`` block are nginx's modules of the same names, each a
subclass falling back on round robin where nginx does: ``least_conn`` (fewest requests in
progress relative to weight, ties by round robin), ``ip_hash`` (the client's /24 or IPv6
address), ``hash KEY [consistent]`` (crc32 of a key with variables, or a ketama ring of 160
points per weight unit) and ``random [two [least_conn]]``. A hashed pick after a failure is
made again from the start of the hash chain, skipping the peers already tried: the same peer
nginx reaches by going on from where it stopped (its per-request state is not kept here, so
the 20-skip bound before round robin counts the tried peers as well).

Not for: I/O. The caller reports ``failed``/``succeeded``/``free`` and passes the clock and
the request's key (``key``) in.
"""

from __future__ import annotations

import bisect
import random
import zlib
from collections.abc import Iterable, Set

from pylvs.l7.config import UpstreamConfig, UpstreamServer


class Peer:
    __slots__ = (
        "accessed",
        "address",
        "backup",
        "checked",
        "conns",
        "current_weight",
        "down",
        "effective_weight",
        "fail_timeout",
        "fails",
        "index",
        "max_conns",
        "max_fails",
        "server",
        "weight",
    )

    def __init__(self, server: UpstreamServer, index: int) -> None:
        self.server = server
        self.address = server.address  # "host:port", as logged in $upstream_addr
        self.index = index
        self.weight = server.weight
        self.effective_weight = server.weight
        self.current_weight = 0
        self.fails = 0
        self.max_fails = server.max_fails
        self.max_conns = server.max_conns  # 0: no limit
        self.fail_timeout = server.fail_timeout
        self.accessed = 0.0
        self.checked = 0.0
        self.down = server.down
        self.backup = server.backup
        self.conns = 0  # requests in progress to this peer (least_conn, random two)

    def __repr__(self) -> str:
        return f"Peer({self.server.address} w={self.weight} cw={self.current_weight})"


class RoundRobin:
    """The peers of one upstream; one instance per upstream per worker, as in nginx."""

    keyed = False  # whether ``get`` needs the request's ``key`` (ip_hash, hash)

    def __init__(self, servers: Iterable[UpstreamServer]) -> None:
        all_peers = [Peer(s, i) for i, s in enumerate(servers)]
        self.primary = [p for p in all_peers if not p.backup]
        self.backup = [p for p in all_peers if p.backup]
        self.peers = all_peers

    @property
    def tries(self) -> int:
        return len(self.peers)

    def get(self, tried: Set[int], now: float, key: bytes = b"") -> Peer | None:
        """Next peer not in ``tried`` (peer indexes), or None: no live upstreams. The primary
        peers first, the backup ones only when no primary is eligible (one loop for both, no
        call per pass: this runs for every proxied request). ``key`` is for the hashing
        methods; the peer returned counts one more request in progress until ``free``."""
        peers = self.primary
        while True:
            if len(peers) == 1 and not self.backup and peers is self.primary:
                # nginx's single-peer upstream ignores max_fails: there is nowhere else to go.
                p = peers[0]
                if not p.down and p.index not in tried and not (
                        p.max_conns and p.conns >= p.max_conns):
                    p.conns += 1
                    return p
            else:
                best: Peer | None = None
                total = 0
                for p in peers:
                    if p.down or p.index in tried:
                        continue
                    if p.max_fails and p.fails >= p.max_fails and now - p.checked <= p.fail_timeout:
                        continue
                    if p.max_conns and p.conns >= p.max_conns:
                        continue
                    p.current_weight += p.effective_weight
                    total += p.effective_weight
                    if p.effective_weight < p.weight:
                        p.effective_weight += 1
                    if best is None or p.current_weight > best.current_weight:
                        best = p
                if best is not None:
                    best.current_weight -= total
                    if now - best.checked > best.fail_timeout:
                        best.checked = now
                    best.conns += 1
                    return best
            if peers is self.backup or not self.backup:
                break
            peers = self.backup
        _fails_reset(self.peers)
        return None

    def failed(self, peer: Peer, now: float) -> None:
        peer.fails += 1
        peer.accessed = now
        peer.checked = now
        if peer.max_fails:
            peer.effective_weight -= peer.weight // peer.max_fails
        if peer.effective_weight < 0:
            peer.effective_weight = 0

    def succeeded(self, peer: Peer) -> None:
        if peer.accessed < peer.checked:
            peer.fails = 0

    def free(self, peer: Peer) -> None:
        """The request to ``peer`` that ``get`` returned it for is over (its try ended)."""
        if peer.conns > 0:
            peer.conns -= 1

    def fallback(self, tried: Set[int], now: float) -> Peer | None:
        """nginx's round robin, as the other methods call it where they give up."""
        return RoundRobin.get(self, tried, now)

    def skipped(self, p: Peer, tried: Set[int], now: float) -> bool:
        """Not eligible now: tried by this request, down, failed within fail_timeout, or
        at its max_conns."""
        return p.index in tried or p.down or bool(
            p.max_fails and p.fails >= p.max_fails and now - p.checked <= p.fail_timeout) \
            or bool(p.max_conns and p.conns >= p.max_conns)

    def chosen(self, p: Peer, now: float) -> Peer:
        if now - p.checked > p.fail_timeout:
            p.checked = now
        p.conns += 1
        return p


def _fails_reset(peers: Iterable[Peer]) -> None:
    for q in peers:
        q.fails = 0


def _smooth(eligible: Iterable[Peer]) -> Peer | None:
    """One pass of nginx's smooth weighted round robin over peers already found eligible
    (``RoundRobin.get`` and ``LeastConn.get`` keep their own copy inline: they run for every
    proxied request)."""
    best: Peer | None = None
    total = 0
    for p in eligible:
        p.current_weight += p.effective_weight
        total += p.effective_weight
        if p.effective_weight < p.weight:
            p.effective_weight += 1
        if best is None or p.current_weight > best.current_weight:
            best = p
    if best is not None:
        best.current_weight -= total
    return best


class LeastConn(RoundRobin):
    """nginx's ngx_http_upstream_least_conn_module: the eligible peer with the fewest requests
    in progress relative to its weight (``conns * best.weight < best.conns * weight``); among
    peers tied with it, from it on, smooth weighted round robin decides. The backup peers are
    tried when no primary one is eligible; a single-peer upstream is plain round robin."""

    def get(self, tried: Set[int], now: float, key: bytes = b"") -> Peer | None:
        if len(self.primary) == 1:
            return self.fallback(tried, now)
        peers = self.primary
        while True:
            best: Peer | None = None
            many = False
            at = 0
            i = -1
            for p in peers:  # self.skipped, inline: this runs for every proxied request
                i += 1
                if p.down or p.index in tried \
                        or (p.max_fails and p.fails >= p.max_fails
                            and now - p.checked <= p.fail_timeout) \
                        or (p.max_conns and p.conns >= p.max_conns):
                    continue
                if best is None or p.conns * best.weight < best.conns * p.weight:
                    best, many, at = p, False, i
                elif p.conns * best.weight == best.conns * p.weight:
                    many = True
            if best is not None:
                total = 0
                if many:
                    for p in peers[at:]:
                        if p.conns * best.weight != best.conns * p.weight or p.down \
                                or p.index in tried \
                                or (p.max_fails and p.fails >= p.max_fails
                                    and now - p.checked <= p.fail_timeout) \
                                or (p.max_conns and p.conns >= p.max_conns):
                            continue
                        p.current_weight += p.effective_weight
                        total += p.effective_weight
                        if p.effective_weight < p.weight:
                            p.effective_weight += 1
                        if p.current_weight > best.current_weight:
                            best = p
                best.current_weight -= total
                return self.chosen(best, now)
            if peers is self.backup or not self.backup:
                break
            peers = self.backup
        _fails_reset(self.peers)
        return None


class _Hashed(RoundRobin):
    """What ip_hash and hash share: a walk of the primary peers by weight (a hash modulo the
    total weight, counting down servers too, as nginx does) and the bound of 20 skips."""

    keyed = True

    def __init__(self, servers: Iterable[UpstreamServer]) -> None:
        super().__init__(servers)
        self.total_weight = sum(p.weight for p in self.primary)

    def by_weight(self, h: int) -> Peer:
        w = h % self.total_weight
        for p in self.primary:
            if w < p.weight:
                return p
            w -= p.weight
        raise AssertionError("weights walked past their total")


class IpHash(_Hashed):
    """nginx's ngx_http_upstream_ip_hash_module. ``key`` is the client address: the first
    three bytes of an IPv4 address (its /24), the 16 of an IPv6 one. From 89, each round
    folds the bytes in (``h = (h * 113 + byte) % 6271``) and walks the peers by weight; an
    ineligible pick goes another round, and after 20 rounds round robin decides."""

    def get(self, tried: Set[int], now: float, key: bytes = b"") -> Peer | None:
        if len(self.primary) < 2:
            return self.fallback(tried, now)
        h = 89
        skips = 0
        while True:
            for b in key:
                h = (h * 113 + b) % 6271
            p = self.by_weight(h)
            if not self.skipped(p, tried, now):
                return self.chosen(p, now)
            skips += 1
            if skips > 20 + len(tried):
                return self.fallback(tried, now)


class Hash(_Hashed):
    """nginx's ngx_http_upstream_hash_module without ``consistent`` (Cache::Memcached's
    rule): round n adds ``(crc32(REHASH KEY) >> 16) & 0x7fff`` to the hash, REHASH being n in
    decimal from the second round on, and walks the peers by weight; an empty key, a single
    peer or more than 20 ineligible rounds leave the choice to round robin."""

    def get(self, tried: Set[int], now: float, key: bytes = b"") -> Peer | None:
        if len(self.primary) == 1 or not key:
            return self.fallback(tried, now)
        h = 0
        rehash = 0
        skips = 0
        while True:
            c = zlib.crc32(b"%d%s" % (rehash, key) if rehash else key)
            h = (h + ((c >> 16) & 0x7FFF)) & 0xFFFFFFFF
            rehash += 1
            p = self.by_weight(h)
            if not self.skipped(p, tried, now):
                return self.chosen(p, now)
            skips += 1
            if skips > 20 + len(tried):
                return self.fallback(tried, now)


def _chash_base(server: str) -> bytes:
    """What nginx hashes for a server's points (Cache::Memcached::Fast): HOST NUL PORT, the
    port being the digits after the last colon, none for ``unix:`` paths."""
    if server[:5].lower() == "unix:":
        return server[5:].encode() + b"\0"
    head, colon, port = server.rpartition(":")
    if colon and port.isdigit():
        return head.encode() + b"\0" + port.encode()
    if colon and not port:  # "host:" : nginx's scan stops at the colon, the port is empty
        return head.encode() + b"\0"
    return server.encode() + b"\0"


class ConsistentHash(RoundRobin):
    """``hash KEY consistent``: nginx's ketama ring. Each primary server line has 160 points
    per unit of weight, point j hashing ``crc32(HOST NUL PORT prev)`` where prev is point j-1's
    hash as 4 little-endian bytes (0 first); the points are sorted and equal hashes kept once.
    A request starts at the first point at or after crc32(KEY) and takes, among the eligible
    addresses of that point's server line, the round robin's choice; else the next point,
    and round robin after 20 of them."""

    keyed = True

    def __init__(self, servers: Iterable[UpstreamServer]) -> None:
        super().__init__(servers)
        points: list[tuple[int, str]] = []
        for p in self.primary:
            base = zlib.crc32(_chash_base(p.server.name or p.address))
            prev = 0
            for _ in range(p.weight * 160):
                prev = zlib.crc32(prev.to_bytes(4, "little"), base)
                points.append((prev, p.server.name or p.address))
        points.sort(key=lambda x: x[0])  # stable: equal hashes keep the servers' order
        self.hashes: list[int] = []
        self.servers: list[str] = []
        for h, name in points:
            if not self.hashes or self.hashes[-1] != h:
                self.hashes.append(h)
                self.servers.append(name)

    def get(self, tried: Set[int], now: float, key: bytes = b"") -> Peer | None:
        if len(self.primary) == 1 or not key:
            return self.fallback(tried, now)
        at = bisect.bisect_left(self.hashes, zlib.crc32(key))
        n = len(self.hashes)
        skips = 0
        while True:
            server = self.servers[at % n]
            best = _smooth(p for p in self.primary if not self.skipped(p, tried, now)
                           and (p.server.name or p.address) == server)
            if best is not None:
                return self.chosen(best, now)
            at += 1
            skips += 1
            if skips > 20 + len(tried):
                return self.fallback(tried, now)


class Random(RoundRobin):
    """nginx's ngx_http_upstream_random_module: a peer drawn with probability proportional to
    its weight; with ``two``, two different eligible peers are drawn and the one with fewer
    requests in progress relative to weight taken (the second on a tie). Each ineligible draw
    (and, with ``two``, the first) is a try; after 20, round robin decides."""

    def __init__(self, servers: Iterable[UpstreamServer], two: bool = False,
                 rng: random.Random | None = None) -> None:
        super().__init__(servers)
        self.two = two
        self.rng = rng or random.Random()
        self.starts: list[int] = []
        total = 0
        for p in self.primary:
            self.starts.append(total)
            total += p.weight
        self.total_weight = total

    def peek(self) -> Peer:
        x = self.rng.randrange(self.total_weight)
        return self.primary[bisect.bisect_right(self.starts, x) - 1]

    def get(self, tried: Set[int], now: float, key: bytes = b"") -> Peer | None:
        if len(self.primary) < 2:
            return self.fallback(tried, now)
        skips = 0
        prev: Peer | None = None
        while True:
            p = self.peek()
            if p is not prev and not self.skipped(p, tried, now):
                if not self.two:
                    return self.chosen(p, now)
                if prev is not None:
                    if p.conns * prev.weight > prev.conns * p.weight:
                        p = prev
                    return self.chosen(p, now)
                prev = p
            skips += 1
            if skips > 20 + len(tried):
                return self.fallback(tried, now)


def balancer_for(config: UpstreamConfig) -> RoundRobin:
    """The balancer of an upstream block's method, with its servers."""
    m = config.method
    if m == "least_conn":
        return LeastConn(config.servers)
    if m == "ip_hash":
        return IpHash(config.servers)
    if m == "hash":
        return ConsistentHash(config.servers) if config.consistent else Hash(config.servers)
    if m == "random":
        return Random(config.servers, config.two)
    return RoundRobin(config.servers)
