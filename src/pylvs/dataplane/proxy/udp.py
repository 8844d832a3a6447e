"""UDP relay of the socket-level proxy: datagrams to a VIP forwarded to a real server and back.

What this is for: UDP virtual services in ``ProxyDataPlane``. Each client address is one
"connection" (as IPVS has one entry per UDP client address/port): the first datagram asks the core
for a real server and opens an upstream socket connected to it; later datagrams reuse it; replies
read from the upstream socket are sent back to the client from the VIP socket, so the client sees
the VIP answer. A flow idle for the core's UDP timeout (``ipvsadm --set``'s third value) is
closed, and the number of flows is bounded (new clients are dropped, not queued, beyond it).

What this is not for: choosing servers (the core's) or reliability (a datagram that finds a full
socket buffer is dropped, as the network would).

Both sockets are plain non-blocking sockets driven by ``loop.add_reader``: no coroutine per
datagram and no transport buffers that could grow without bound. Every datagram is counted as one
packet in the core (``udp_packet`` keeps the core's entry alive, ``account`` counts it).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Any

from pylvs.core.director import DIR_INPUT, DIR_OUTPUT

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Connection
    from pylvs.dataplane.proxy.common import ProxyContext, ServiceEndpoint

MAX_DATAGRAM = 65535
# Datagrams handled per readiness callback, so one busy socket cannot starve the loop.
BATCH = 64


class UdpFlow:
    """One client address of a UDP service, with its own socket to the chosen real server."""

    __slots__ = ("caddr", "conn", "ctx", "last", "service", "sock")

    def __init__(
        self, ctx: ProxyContext, service: UdpService, caddr: Any, conn: Connection,
        sock: socket.socket,
    ) -> None:
        self.ctx = ctx
        self.service = service
        self.caddr = caddr
        self.conn = conn
        self.sock = sock
        self.last = time.monotonic()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        director = self.ctx.director
        director.udp_packet(self.conn, DIR_INPUT)
        director.account(self.conn, DIR_INPUT, 1, len(data))
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            self.ctx.udp_dropped += 1
        except OSError:  # e.g. ECONNREFUSED left by an ICMP port unreachable
            self.ctx.udp_dropped += 1

    def on_readable(self) -> None:
        director = self.ctx.director
        front = self.service.sock
        for _ in range(BATCH):
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP errors from the real server surface here; the flow stays, as in IPVS.
                continue
            self.last = time.monotonic()
            director.udp_packet(self.conn, DIR_OUTPUT)
            director.account(self.conn, DIR_OUTPUT, 1, len(data))
            try:
                front.sendto(data, self.caddr)
            except OSError:
                self.ctx.udp_dropped += 1

    def close(self) -> None:
        self.ctx.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class UdpService:
    """The VIP socket of one UDP virtual service and the flows of its clients."""

    def __init__(self, ctx: ProxyContext, ep: ServiceEndpoint, sock: socket.socket) -> None:
        self.ctx = ctx
        self.ep = ep
        self.sock = sock
        self.flows: dict[Any, UdpFlow] = {}
        sock.setblocking(False)
        ctx.loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        sock = self.sock
        flows = self.flows
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            key = addr[:2]
            flow = flows.get(key)
            if flow is None:
                flow = self._new_flow(key, addr)
                if flow is None:
                    self.ctx.udp_dropped += 1
                    continue
            flow.send(data)

    def _new_flow(self, key: Any, addr: Any) -> UdpFlow | None:
        ctx = self.ctx
        ep = self.ep
        if len(ctx.udp_flows) >= ctx.max_udp_flows:
            return None
        try:
            caddr = socket.inet_pton(ep.af, addr[0])
        except OSError:
            return None
        conn = ctx.director.schedule(ep.protocol, caddr, addr[1], ep.vaddr, ep.vport)
        if conn is None:
            return None
        try:
            up = socket.socket(ep.af, socket.SOCK_DGRAM)
        except OSError:  # out of descriptors: drop, the client will retry
            ctx.director.proxy_closed(conn)
            return None
        try:
            up.setblocking(False)
            up.connect((ctx.host_of(ep.af, conn.daddr), conn.dport or ep.vport))
        except OSError:
            up.close()
            ctx.director.proxy_closed(conn)
            return None
        flow = UdpFlow(ctx, self, addr, conn, up)
        self.flows[key] = flow
        ctx.udp_flows[(id(self), key)] = flow
        ctx.loop.add_reader(up.fileno(), flow.on_readable)
        return flow

    def expire(self, now: float, idle: float) -> None:
        """Close the flows idle for ``idle`` seconds (the core's UDP timeout)."""
        for key, flow in list(self.flows.items()):
            if now - flow.last >= idle:
                self._drop(key, flow)

    def _drop(self, key: Any, flow: UdpFlow) -> None:
        del self.flows[key]
        self.ctx.udp_flows.pop((id(self), key), None)
        flow.close()

    def close(self) -> None:
        for key, flow in list(self.flows.items()):
            self._drop(key, flow)
        loop: asyncio.AbstractEventLoop = self.ctx.loop
        loop.remove_reader(self.sock.fileno())
        self.sock.close()
