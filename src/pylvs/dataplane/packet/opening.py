"""A TCP connection's flow at its SYN: which SYNs get one (``OpenGuard``, shared by the XDP
program's sink and the C table), and the C table's side of it (``CFlowOpener``).

Why: a flow installed only once the handshake's ACK has come up to the core and moved the
entry to ESTABLISHED costs every connection a second pass through the Python core. Installed
with the SYN (after the core scheduled and forwarded it), the ACK and what follows stay where
the flow is; the first packet that flow forwards is reported, and the core's entry moves on
from SYN_RECV as that ACK would have moved it. A real client's ACK follows the server's
SYN-ACK, hence the SYN's transmission, so it cannot overtake a flow written before the SYN
leaves.

A SYN flood would fill the table with flows of connections that never open (half the table at
most: ``admit``) and cost the core the flow's making for nothing, so while few of the opened
flows see their ACK only a sample of SYNs gets one (``_judge``): after OPEN_STRIKES windows of
OPEN_WINDOW seconds in a row in which at least OPEN_JUDGE_MIN flows were opened and fewer than
OPEN_MIN_ACKED of them saw their ACK, one SYN in OPEN_SAMPLE gets a flow (enough to see the
flood end) until a window looks healthy again: a flood is seen within half a second. Two
windows, not one: traffic that starts late in a window has its SYNs there and their ACKs in the
next."""

from __future__ import annotations

import logging
import time
from typing import Any

from pylvs.core.conntrack import TCP_S_SYN_RECV
from pylvs.core.director import DIR_INPUT, Director

log = logging.getLogger("pylvs.dataplane")

OPEN_WINDOW = 0.25
OPEN_STRIKES = 2
OPEN_JUDGE_MIN = 256
OPEN_MIN_ACKED = 0.25
OPEN_SAMPLE = 16
_TCP_ACK = 0x10


class OpenGuard:
    """The policy, kept by the flow table's owner (``open`` asks ``_admit``, counts what it
    opened in ``opened`` and ``_win_opened``, and what saw its ACK in ``_win_acked``; ``_tick``
    ends a window when one is over)."""

    guard_name = "flows"  # the log lines' prefix

    def __init__(self) -> None:
        self.opened = 0  # flows installed at a connection's SYN
        self.open_skipped = 0  # SYNs whose flow was not installed (half the table is taken)
        self.open_paused = False  # a SYN flood: one SYN in OPEN_SAMPLE gets a flow
        self.open_sampled_out = 0  # SYNs without a flow because of that
        self._win_start = time.monotonic()
        self._win_opened = 0
        self._win_acked = 0
        self._sample = 0
        self._strikes = 0  # windows in a row that looked like a flood

    def _admit(self, held: int, limit: int) -> bool:
        """May the SYN the core just scheduled get its flow, ``held`` of ``limit`` taken?"""
        if held >= limit >> 1:
            self.open_skipped += 1
            return False
        if self.open_paused:
            self._sample += 1
            if self._sample % OPEN_SAMPLE:
                self.open_sampled_out += 1
                return False
        return True

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._win_start >= OPEN_WINDOW:
            self._judge(now)

    def _judge(self, now: float) -> None:
        """End an OPEN_WINDOW: did the flows opened at SYNs see their ACKs (reported by the
        flow's table, or come up to the core)? A SYN flood's never do; a client's do one round
        trip later (a window's first ACKs are the previous window's SYNs', so steady traffic
        scores about 1)."""
        opened, acked = self._win_opened, self._win_acked
        self._win_start, self._win_opened, self._win_acked = now, 0, 0
        if opened >= OPEN_JUDGE_MIN and acked < opened * OPEN_MIN_ACKED:
            self._strikes += 1
            paused = self._strikes >= OPEN_STRIKES
        elif opened == 0 or acked >= opened * OPEN_MIN_ACKED:
            self._strikes = 0
            paused = False
        else:
            return  # too few to tell: as it was
        if paused != self.open_paused:
            self.open_paused = paused
            if paused:
                log.warning("%s: %d of %d connections opened in the last %g s completed their "
                            "handshake: a SYN flood? new connections get their flow at the ACK "
                            "(one in %d at the SYN)", self.guard_name, acked, opened,
                            OPEN_WINDOW, OPEN_SAMPLE)
            else:
                log.info("%s: handshakes complete again: new connections get their flow at "
                         "the SYN", self.guard_name)

    def describe_opening(self) -> dict[str, Any]:
        return {"opened_at_syn": self.opened, "open_skipped": self.open_skipped,
                "open_paused": self.open_paused, "open_sampled_out": self.open_sampled_out}


class CFlowOpener(OpenGuard):
    """The packet plane's C flow table (``_fastpath.FlowTable``) as the forwarder's ``opens``:
    a SYN's flow is installed at once, marked opening; the C ring walk appends the connection
    to the table's ``acked`` list when that flow forwards its first packet, and ``take_acked``
    (run before the next frame that goes up to Python, and after each ring drain) moves each
    such entry on from SYN_RECV. IPv4 only, as the table is."""

    guard_name = "packet"

    def __init__(self, flows: Any, director: Director) -> None:
        super().__init__()
        self.flows = flows
        self.director = director
        self.acked: list[Any] = flows.acked  # the C table's list, emptied here in place

    def open(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
             new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
             first_len: int, tun_src: bytes | None = None, mtu: int = 0) -> bool:
        flows = self.flows
        if len(saddr) != 4 or not self._admit(flows.count, flows.limit):
            return False
        if not flows.install(proto, saddr, sport, daddr, dport, kind, new_ip, new_port,
                             out_ifindex, macs, conn, DIR_INPUT, tun_src, mtu, True):
            return False
        self.opened += 1
        self._win_opened += 1
        return True

    def take_acked(self) -> None:
        """The handshake's ACK of each connection in ``acked`` was forwarded in C: its entry
        moves on from SYN_RECV as that ACK would have moved it (its counters come with the
        flow's at the next sync)."""
        acked = self.acked
        d = self.director
        for conn in acked:
            if conn.bucket is not None and conn.state == TCP_S_SYN_RECV:
                d.tcp_packet(conn, DIR_INPUT, _TCP_ACK)
        self._win_acked += len(acked)
        acked.clear()

    def tick(self) -> None:
        """Before a drain's frames are sent: the ACKs seen so far, then the window's verdict."""
        if self.acked:
            self.take_acked()
        self._tick()
