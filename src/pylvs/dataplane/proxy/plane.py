"""The ``proxy`` data plane: full NAT at the socket level, for TCP and UDP virtual services.

What this is for: forwarding without root, raw sockets or kernel IPVS, on Linux with asyncio
(uvloop when the daemon installs it; the plain loop works too). Every virtual service VIP:port of
the table gets a listening socket; each accepted client connection (or UDP client address) is
given to the real server the core's ``Director.schedule`` picks, over a second socket from the
director, so real servers see the director as the client (like ``-m`` NAT plus source NAT,
whatever forwarding method the table names). The core is told of each connection's life
(``proxy_established``, ``proxy_half_closed``, ``proxy_closed``) and traffic (``account``), so
``ipvsadm -L``/``-Lc``/``--stats`` read the same as with a packet data plane.

What this is not for:
- firewall-mark services: a socket sees no marks. They are logged once and skipped.
- port-0 ("all ports") services: a socket listens on one port. They are logged once and skipped;
  a packet data plane serves them.
- choosing servers, persistence, thresholds, connection states: the core's. The proxy marks no
  server down when a connect fails; it retries another one (see ``relay``) and leaves
  health to the checker.

Listeners follow the table through a ``TableListener``: adding a service binds its socket at once
(bind errors are logged with the service and reported by ``describe()``), deleting it closes the
listening socket while the connections already relayed carry on, as IPVS keeps existing
connections of a deleted service. Listening sockets set ``IP_FREEBIND`` so a VIP that VRRP has not
yet brought up can be bound.

TCP listening sockets and relays are not asyncio transports: they live in one edge-triggered
epoll that the loop watches (``engine.TcpEngine``), which keeps a proxied connection down to
the system calls that do its work. Bulk streams move to ``os.splice`` (``splice``) after a
few full-size reads, unless ``splice=False``; request/response traffic is read and written, and
a connection that keeps making requests is handed to an in-kernel relay (a BPF socket map,
``sockmap``) when the process may load one, unless ``sockmap=False`` or
``PYLVS_PROXY_SOCKMAP=0``.

Timeouts and limits (``settings``: connect, server, client, tunnel; the relay limit, its queue
and each real server's share of it) have HAProxy's meanings; ``ProxySettings`` documents them.
They come from ``settings=``, else from the environment (``PYLVS_PROXY_TIMEOUTS``,
``PYLVS_PROXY_SERVICE_TIMEOUTS``); ``set_service_timeouts`` changes one service's live.

The data plane also runs a housekeeping timer (``housekeeping_interval``, 1 s): it hands batched
traffic counts to the core, closes relays whose timeout ran out (keeping each open relay's core
entry, which ``ipvsadm -Lnc`` lists, expiring with the relay), recomputes each real server's share
of the relay limit, closes idle UDP flows, and calls ``Director.tick`` unless ``drive_tick=False``
(when the daemon drives the core's clock itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pylvs.core.model import Protocol, RealServer, ServiceKey, VirtualService
from pylvs.core.table import TableListener
from pylvs.dataplane.proxy.common import ProxyContext, ServiceEndpoint, ServiceLimits
from pylvs.dataplane.proxy.engine import TcpEngine
from pylvs.dataplane.proxy.listener import Listener
from pylvs.dataplane.proxy.settings import ProxySettings, Timeouts
from pylvs.dataplane.proxy.splice import AVAILABLE as splice_available
from pylvs.dataplane.proxy.udp import UdpService

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Director

log = logging.getLogger("pylvs.dataplane.proxy")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
DEFAULT_BACKLOG = 4096


def raise_nofile_limit(want: int = 1 << 20) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit: each relay holds two descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _bind_socket(ep: ServiceEndpoint, kind: int) -> socket.socket:
    sock = socket.socket(ep.af, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if ep.af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ep.host, ep.vport))
        if kind == socket.SOCK_STREAM:
            # Accepted sockets inherit it: request/response traffic is not held back by Nagle,
            # at no cost per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.listen(DEFAULT_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Listener:
    """The listening side of one virtual service: a TCP listening socket or a UDP VIP socket."""

    def __init__(self, ep: ServiceEndpoint) -> None:
        self.ep = ep
        self.tcp: Listener | None = None
        self.udp: UdpService | None = None
        self.error = ""

    def close(self) -> None:
        if self.tcp is not None:
            self.tcp.close()
            self.tcp = None
        if self.udp is not None:
            self.udp.close()
            self.udp = None

    def describe(self) -> dict[str, Any]:
        state = "error" if self.error else "listening"
        d: dict[str, Any] = {"service": str(self.ep), "state": state}
        if self.error:
            d["error"] = self.error
        if self.udp is not None:
            d["flows"] = len(self.udp.flows)
        return d


class _Follower(TableListener):
    """Keeps the listeners in step with the table."""

    def __init__(self, plane: ProxyDataPlane) -> None:
        self.plane = plane

    def service_added(self, svc: VirtualService) -> None:
        self.plane._open(svc.key)

    def service_deleted(self, svc: VirtualService) -> None:
        self.plane._close(svc.key)
        self.plane._reshare()

    # A server's share of the relay limit follows its weight and its service's servers at once:
    # waiting for the next housekeeping tick would let a hung server added (or the whole table
    # loaded) just before a burst take every relay until then.
    def dest_added(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane._reshare()

    def dest_changed(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane._reshare()

    def dest_deleted(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane._reshare()


class ProxyDataPlane:
    """Socket-level full-NAT forwarding of every TCP and UDP virtual service in the table."""

    name = "proxy"

    def __init__(
        self,
        director: Director,
        *,
        settings: ProxySettings | None = None,
        connect_timeout: float | None = None,
        retries: int | None = None,
        max_tcp_relays: int | None = None,
        max_udp_flows: int = 65_536,
        housekeeping_interval: float = 1.0,
        drive_tick: bool = True,
        splice: bool = True,
        sockmap: bool = True,
    ) -> None:
        """``settings`` (default: from the environment, ``ProxySettings.from_env``);
        ``connect_timeout``, ``retries`` and ``max_tcp_relays``, when given, override its
        connect timeout, retries and maxconn. ``ValueError`` (``SettingsError``) when invalid."""
        if settings is None:
            settings = ProxySettings.from_env()
        if connect_timeout is not None:
            settings = replace(settings, timeouts=replace(settings.timeouts, connect=connect_timeout))
        if retries is not None:
            settings = replace(settings, retries=retries)
        if max_tcp_relays is not None:
            settings = replace(settings, maxconn=max_tcp_relays)
        self.director = director
        self.settings = settings
        self.max_tcp_relays = settings.maxconn
        self.max_udp_flows = max_udp_flows
        self.housekeeping_interval = housekeeping_interval
        self.drive_tick = drive_tick
        self.splice = splice and splice_available
        self.sockmap = sockmap and os.environ.get("PYLVS_PROXY_SOCKMAP", "1") != "0"
        self.listeners: dict[ServiceKey, _Listener] = {}
        self._limits: dict[ServiceKey, ServiceLimits] = {}
        self.skipped: dict[ServiceKey, str] = {}
        self.ctx: ProxyContext | None = None
        self.engine: TcpEngine | None = None
        self._follower: _Follower | None = None
        self._housekeeping: asyncio.TimerHandle | None = None

    # ---- DataPlane -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.ctx is not None:
            return
        loop = asyncio.get_running_loop()
        nofile = raise_nofile_limit()
        # A relay holds two descriptors (two more per spliced direction), a UDP flow one: keep
        # both below what the process may open, so running out shows as refused connections
        # and dropped datagrams rather than as errors deep in the event loop.
        fd_budget = max(256, nofile - 64) if nofile != resource.RLIM_INFINITY else 1 << 30
        self.ctx = ProxyContext(
            loop, self.director, self.settings,
            min(self.max_tcp_relays, fd_budget // 3), min(self.max_udp_flows, fd_budget // 4),
            self.splice, self.sockmap,
        )
        self.engine = TcpEngine(self.ctx)
        self._follower = _Follower(self)
        self.director.table.listeners.append(self._follower)
        for svc in list(self.director.table.services()):
            self._open(svc.key)
        self.ctx.update_shares()
        self._housekeeping = loop.call_later(self.housekeeping_interval, self._housekeep)

    async def stop(self) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        if self._follower is not None:
            with contextlib.suppress(ValueError):
                self.director.table.listeners.remove(self._follower)
            self._follower = None
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        for key in list(self.listeners):
            self._close(key)
        for relay in list(ctx.relays):
            relay.abort()
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        # Let the UDP transports' connection_lost callbacks run before the loop may close.
        await asyncio.sleep(0)
        self.ctx = None

    def describe(self) -> dict[str, Any]:
        ctx = self.ctx
        d: dict[str, Any] = {
            "name": self.name,
            "running": ctx is not None,
            "listeners": [lst.describe() for lst in self.listeners.values()],
            "skipped": {str(k): why for k, why in self.skipped.items()},
        }
        if ctx is not None:
            d["counters"] = {
                "tcp_relays": len(ctx.relays),
                "udp_flows": len(ctx.udp_flows),
                "accepted": ctx.accepted,
                "refused": ctx.refused,
                "connect_failures": ctx.connect_failures,
                "retried": ctx.retried,
                "udp_dropped": ctx.udp_dropped,
                "spliced": ctx.spliced,
                "offloaded": ctx.offloaded,
                "timed_out_server": ctx.timed_out["server"],
                "timed_out_client": ctx.timed_out["client"],
                "timed_out_tunnel": ctx.timed_out["tunnel"],
                "refused_limit": ctx.refused_limit,
                "limit_reached": ctx.limit_reached,
                "share_redispatched": ctx.share_redispatched,
            }
            d["limits"] = {
                "tcp_relays": ctx.max_tcp_relays, "udp_flows": ctx.max_udp_flows,
                "queue": self.settings.queue, "retries": self.settings.retries,
            }
        d["timeouts"] = {
            "default": self.settings.timeouts.words(),
            **{str(k): lim.timeouts.words() for k, lim in self._limits.items()
               if lim.timeouts != self.settings.timeouts},
        }
        return d

    # ---- settings --------------------------------------------------------------------------

    def service_timeouts(self, key: ServiceKey) -> Timeouts:
        """The timeouts relays of ``key`` get (the service's own, else the defaults)."""
        lim = self._limits.get(key)
        return lim.timeouts if lim is not None else self.settings.for_service(key)

    def set_service_timeouts(self, key: ServiceKey, timeouts: Timeouts | None) -> None:
        """Give one service its own timeouts (None: back to the defaults), for its open relays
        too; kept across the service being deleted and added again."""
        services = dict(self.settings.services)
        if timeouts is None:
            services.pop(key, None)
        else:
            services[key] = timeouts
        self.settings = replace(self.settings, services=services)
        if self.ctx is not None:
            self.ctx.settings = self.settings
        lim = self._limits.get(key)
        if lim is not None:
            lim.timeouts = self.settings.for_service(key)

    # ---- counters --------------------------------------------------------------------------

    def flush_stats(self) -> None:
        """Hand every live relay's batched counts to the core now (the timer does it each second)."""
        if self.ctx is not None:
            for relay in self.ctx.relays:
                relay.flush()

    # ---- listeners -------------------------------------------------------------------------

    def _open(self, key: ServiceKey) -> None:
        ctx = self.ctx
        if ctx is None or key in self.listeners or key in self.skipped:
            return
        if key.is_fwmark:
            self._skip(key, "firewall-mark services cannot be served at socket level")
            return
        if key.port == 0:
            self._skip(key, "port-0 (all ports) services cannot be served at socket level")
            return
        if key.protocol not in (Protocol.TCP, Protocol.UDP):
            self._skip(key, "only TCP and UDP services are proxied")
            return
        lim = self._limits.get(key)
        if lim is None:
            lim = self._limits[key] = ServiceLimits(self.settings.for_service(key))
        ep = ServiceEndpoint.of(key, lim)
        lst = _Listener(ep)
        self.listeners[key] = lst
        kind = socket.SOCK_STREAM if key.protocol == Protocol.TCP else socket.SOCK_DGRAM
        try:
            sock = _bind_socket(ep, kind)
        except OSError as e:
            lst.error = f"cannot bind {ep.host}:{ep.vport}: {e.strerror or e}"
            log.error("proxy: %s: %s", key, lst.error)
            return
        if kind == socket.SOCK_DGRAM:
            lst.udp = UdpService(ctx, ep, sock)
            return
        assert self.engine is not None
        lst.tcp = Listener(self.engine, ep, sock)

    def _skip(self, key: ServiceKey, why: str) -> None:
        self.skipped[key] = why
        log.warning("proxy: %s skipped: %s", key, why)

    def _reshare(self) -> None:
        if self.ctx is not None:
            self.ctx.update_shares()

    def _close(self, key: ServiceKey) -> None:
        self.skipped.pop(key, None)
        lst = self.listeners.pop(key, None)
        if lst is not None:
            lst.close()

    # ---- housekeeping ----------------------------------------------------------------------

    def _housekeep(self) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        try:
            now = self.director.clock()
            expired: list[tuple[Any, str]] = []
            for relay in ctx.relays:
                relay.flush()
                kind = relay.tick(now)
                if kind is not None:
                    expired.append((relay, kind))
            for relay, kind in expired:
                relay.time_out(kind)
            ctx.update_shares()
            idle = float(self.director.table.timeouts.udp)
            now = time.monotonic()
            for lst in self.listeners.values():
                if lst.udp is not None:
                    lst.udp.expire(now, idle)
            if self.drive_tick:
                self.director.tick()
        except Exception:  # keep the timer alive whatever one pass hit
            log.exception("proxy: housekeeping failed")
        self._housekeeping = ctx.loop.call_later(self.housekeeping_interval, self._housekeep)
