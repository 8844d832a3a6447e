"""nginx's smooth weighted round robin over an upstream's servers, with failure accounting.

Each pick adds every eligible peer's ``effective_weight`` to its ``current_weight``, takes the
peer with the largest ``current_weight`` and subtracts the total from it: weights 2:1 give
a, b, a, a, b, a... spread evenly rather than in bursts. A failure raises ``fails`` and lowers
``effective_weight`` by ``weight / max_fails`` (recovering by one per pick); a peer with
``fails >= max_fails`` is skipped for ``fail_timeout``. Backup peers are tried only when no
primary peer is eligible. When nothing is eligible nginx forgets all failures (so the next
request probes again) and answers 502; so does this.

Not for: I/O. The caller reports ``failed``/``succeeded`` and passes the clock in.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from pylvs.l7.config import UpstreamServer


class Peer:
    __slots__ = (
        "accessed",
        "address",
        "backup",
        "checked",
        "current_weight",
        "down",
        "effective_weight",
        "fail_timeout",
        "fails",
        "index",
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
        self.fail_timeout = server.fail_timeout
        self.accessed = 0.0
        self.checked = 0.0
        self.down = server.down
        self.backup = server.backup

    def __repr__(self) -> str:
        return f"Peer({self.server.address} w={self.weight} cw={self.current_weight})"


class RoundRobin:
    """The peers of one upstream; one instance per upstream per worker, as in nginx."""

    def __init__(self, servers: Iterable[UpstreamServer]) -> None:
        all_peers = [Peer(s, i) for i, s in enumerate(servers)]
        self.primary = [p for p in all_peers if not p.backup]
        self.backup = [p for p in all_peers if p.backup]
        self.peers = all_peers

    @property
    def tries(self) -> int:
        return len(self.peers)

    def get(self, tried: Set[int], now: float) -> Peer | None:
        """Next peer not in ``tried`` (peer indexes), or None: no live upstreams. The primary
        peers first, the backup ones only when no primary is eligible (one loop for both, no
        call per pass: this runs for every proxied request)."""
        peers = self.primary
        while True:
            if len(peers) == 1 and not self.backup and peers is self.primary:
                # nginx's single-peer upstream ignores max_fails: there is nowhere else to go.
                p = peers[0]
                if not p.down and p.index not in tried:
                    return p
            else:
                best: Peer | None = None
                total = 0
                for p in peers:
                    if p.down or p.index in tried:
                        continue
                    if p.max_fails and p.fails >= p.max_fails and now - p.checked <= p.fail_timeout:
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
                    return best
            if peers is self.backup or not self.backup:
                break
            peers = self.backup
        for q in self.peers:
            q.fails = 0
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
