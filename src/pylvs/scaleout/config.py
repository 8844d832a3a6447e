"""The ``pylvs_bgp`` block: what a director announces, to whom, and how it leaves.

keepalived has no words for BGP, so pylvs adds one block in keepalived.conf's syntax. It may sit
in keepalived.conf itself (real keepalived and ``pylvs keepalived`` both log ``Unknown keyword
'pylvs_bgp'`` and ignore it) or in a file of its own; ``pylvs scaleout run --config FILE`` reads
the ``pylvs_bgp`` block of FILE and nothing else of it::

    pylvs_bgp {
        router_id 10.20.0.11          # required: this speaker's BGP identifier (IPv4)
        local_as 65001                # required: 1 to 4294967295
        neighbor 10.20.0.1 {          # one or more: the router(s) this director peers with
            remote_as 65000           # required
            source_address 10.20.0.11 # optional: the local address of the session
            hold_time 3               # optional seconds (0, or 3 to 65535; default 9)
            keepalive_time 1          # optional seconds (default hold_time / 3)
            connect_retry 1           # optional seconds between connection attempts (default 5)
            bfd                       # optional: ask for BFD on the session (fast failure)
        }
        vip 192.0.2.10                # optional, repeatable: announce only these VIPs (default:
                                      # every VIP of the director's services)
        withdraw_wait 2               # seconds between withdrawing and stopping (default 2)
        poll_interval 1               # seconds between looks at the director (default 1)
        announce_delay auto           # the first announcement's wait: auto (default) or seconds
    }

``announce_delay`` holds back the first announcement after ``pylvs scaleout run`` starts, so
that a director joining directors that share connections by sync has learnt the live ones
before the router sends it any (``pylvs.scaleout.policy.JoinGate``): ``auto`` waits one
``sync_refresh_period`` cycle plus the senders' flush while a backup sync daemon runs and the
refresh period is set, and not at all otherwise; a number waits that many seconds; 0 never.

IPv4 VIPs (/32) are announced to IPv4 neighbours, IPv6 VIPs (/128) to IPv6 neighbours (a BGP
session carries the families of its own address: no extended next hop).

Every error is a ``FILE:LINE: message`` and nothing is started (``BGPConfigError``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pylvs.config.grammar import Reader, Statement, parse_tree

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
BLOCK = "pylvs_bgp"


class BGPConfigError(Exception):
    """A ``pylvs_bgp`` block that must not be started; the message is ``FILE:LINE: ...``."""


@dataclass(frozen=True, slots=True)
class Neighbor:
    address: IPAddress
    remote_as: int
    source_address: IPAddress | None = None
    hold_time: int = 9
    keepalive_time: int | None = None  # None: hold_time / 3
    connect_retry: int = 5
    bfd: bool = False


@dataclass(frozen=True, slots=True)
class BGPConfig:
    router_id: ipaddress.IPv4Address
    local_as: int
    neighbors: tuple[Neighbor, ...]
    vips: tuple[IPAddress, ...] = ()  # empty: every VIP of the director's services
    withdraw_wait: float = 2.0
    poll_interval: float = 1.0
    announce_delay: float | None = None  # None: auto (policy.refresh_wait)

    def describe(self) -> list[str]:
        """Lines for ``pylvs scaleout check`` (what would run, in words)."""
        out = [f"router id {self.router_id}, local AS {self.local_as}"]
        for n in self.neighbors:
            extra = f", source {n.source_address}" if n.source_address else ""
            ka = n.keepalive_time if n.keepalive_time is not None else n.hold_time // 3
            out.append(f"neighbor {n.address} AS {n.remote_as}: hold {n.hold_time} s, keepalive "
                       f"{ka} s, connect retry {n.connect_retry} s{', BFD' if n.bfd else ''}{extra}")
        if self.vips:
            out.append("announces only: " + " ".join(str(v) for v in self.vips))
        else:
            out.append("announces every VIP of the director's services while each has quorum")
        out.append(f"withdraw wait {self.withdraw_wait:g} s, poll interval {self.poll_interval:g} s")
        if self.announce_delay is None:
            out.append("first announcement: after one sync refresh cycle when a backup sync "
                       "daemon runs with sync_refresh_period set, else at once (auto)")
        else:
            out.append(f"first announcement: {self.announce_delay:g} s after the director is "
                       "ready")
        return out


def load(path: str) -> BGPConfig:
    """The ``pylvs_bgp`` block of ``path`` (BGPConfigError on any problem)."""
    cfg = find(path)
    if cfg is None:
        raise BGPConfigError(f"{path}: no {BLOCK} block")
    return cfg


def find(path: str) -> BGPConfig | None:
    """The ``pylvs_bgp`` block of ``path``, None when it has none (``pylvs keepalived -t``
    shows it when present); BGPConfigError when the file or the block is bad."""
    reader = Reader()
    tree = parse_tree(reader.read(path), reader)
    errors = [d for d in reader.diagnostics if d.severity == "error"]
    if errors:
        raise BGPConfigError(str(errors[0]))
    blocks = [st for st in tree if st.keyword == BLOCK]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise BGPConfigError(f"{blocks[1].where}: a second {BLOCK} block (one is allowed)")
    return interpret(blocks[0])


def _fail(st: Statement, message: str) -> BGPConfigError:
    return BGPConfigError(f"{st.where}: {message}")


def _one(st: Statement) -> str:
    if len(st.args) != 1:
        raise _fail(st, f"{st.keyword} takes one value")
    return st.args[0]


def _int(st: Statement, low: int, high: int) -> int:
    text = _one(st)
    try:
        value = int(text, 10)
    except ValueError:
        raise _fail(st, f"{st.keyword}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise _fail(st, f"{st.keyword}: {value} is out of range ({low} to {high})")
    return value


def _seconds(st: Statement, low: float, high: float) -> float:
    text = _one(st)
    try:
        value = float(text)
    except ValueError:
        raise _fail(st, f"{st.keyword}: {text!r} is not a number of seconds") from None
    if not low <= value <= high:
        raise _fail(st, f"{st.keyword}: {text} is out of range ({low:g} to {high:g} s)")
    return value


def _addr(st: Statement, text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _fail(st, f"{st.keyword}: {text!r} is not an IP address") from None


def _no_block(st: Statement) -> None:
    if st.block is not None:
        raise _fail(st, f"{st.keyword} takes no block")


def interpret(block: Statement) -> BGPConfig:
    if block.args:
        raise _fail(block, f"{BLOCK} takes no arguments")
    router_id: ipaddress.IPv4Address | None = None
    local_as: int | None = None
    neighbors: list[Neighbor] = []
    vips: list[IPAddress] = []
    withdraw_wait, poll = 2.0, 1.0
    announce_delay: float | None = None
    for st in block.block or ():
        k = st.keyword
        if k != "neighbor":
            _no_block(st)
        if k == "router_id":
            rid = _addr(st, _one(st))
            if rid.version != 4:
                raise _fail(st, "router_id must be an IPv4 address (a BGP identifier)")
            router_id = rid
        elif k == "local_as":
            local_as = _int(st, 1, 2**32 - 1)
        elif k == "neighbor":
            n = _neighbor(st)
            if any(x.address == n.address for x in neighbors):
                raise _fail(st, f"neighbor {n.address} is given twice")
            neighbors.append(n)
        elif k == "vip":
            if not st.args:
                raise _fail(st, "vip takes one or more addresses")
            for text in st.args:
                a = _addr(st, text)
                if a not in vips:
                    vips.append(a)
        elif k == "withdraw_wait":
            withdraw_wait = _seconds(st, 0, 600)
        elif k == "poll_interval":
            poll = _seconds(st, 0.1, 60)
        elif k == "announce_delay":
            announce_delay = None if _one(st) == "auto" else _seconds(st, 0, 600)
        else:
            raise _fail(st, f"unknown keyword {k!r} in {BLOCK}")
    if router_id is None:
        raise _fail(block, f"{BLOCK}: router_id is required")
    if local_as is None:
        raise _fail(block, f"{BLOCK}: local_as is required")
    if not neighbors:
        raise _fail(block, f"{BLOCK}: at least one neighbor is required")
    return BGPConfig(router_id, local_as, tuple(neighbors), tuple(vips), withdraw_wait, poll,
                     announce_delay)


def _neighbor(st: Statement) -> Neighbor:
    address = _addr(st, _one(st))
    if st.block is None:
        raise _fail(st, f"neighbor {address} needs a block with remote_as")
    remote_as: int | None = None
    source: IPAddress | None = None
    hold, keepalive, retry, bfd = 9, None, 5, False
    for s in st.block:
        _no_block(s)
        k = s.keyword
        if k == "remote_as":
            remote_as = _int(s, 1, 2**32 - 1)
        elif k == "source_address":
            source = _addr(s, _one(s))
            if source.version != address.version:
                raise _fail(s, "source_address must be of the neighbor's address family")
        elif k == "hold_time":
            hold = _int(s, 0, 65535)
            if hold in (1, 2):
                raise _fail(s, "hold_time must be 0 or at least 3 seconds (RFC 4271)")
        elif k == "keepalive_time":
            keepalive = _int(s, 1, 65535)
        elif k == "connect_retry":
            retry = _int(s, 1, 65535)
        elif k == "bfd":
            if s.args:
                raise _fail(s, "bfd takes no value")
            bfd = True
        else:
            raise _fail(s, f"unknown keyword {k!r} in neighbor")
    if remote_as is None:
        raise _fail(st, f"neighbor {address}: remote_as is required")
    if keepalive is not None and hold and keepalive >= hold:
        raise _fail(st, f"neighbor {address}: keepalive_time must be below hold_time")
    return Neighbor(address, remote_as, source, hold, keepalive, retry, bfd)
