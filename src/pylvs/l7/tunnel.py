"""An upgraded connection (WebSocket and any other ``Upgrade``): after the upstream's
``101 Switching Protocols`` the client's and the upstream's sockets are joined and bytes go
both ways unchanged until either side closes, as nginx's ``ngx_http_upstream_upgrade`` does.

Why apart from ``proxying``: once switched nothing is HTTP any more (no framing, no retries,
no keepalive); what is left is flow control both ways and nginx's one timer, proxy_read_timeout,
which it re-arms on every event of either side, so the tunnel closes after that long with no
byte in either direction. The first end (EOF or close) of either side ends both, as nginx
finalizes the request then.

Not for: deciding to switch (``upstream`` sees the 101, ``connection`` the client's Upgrade
request) or the 101 head itself (``proxying``).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class ClientSide(Protocol):
    """What the tunnel needs of the client connection (``connection.ClientConnection``)."""

    transport: asyncio.Transport | None
    closed: bool
    write_paused: bool


class UpstreamSide(Protocol):
    """What the tunnel needs of the upstream connection (``upstream.UpstreamConnection``)."""

    closed: bool

    def write(self, data: bytes | memoryview) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def write_blocked(self) -> bool: ...

    def end(self) -> None: ...


class Tunnel:
    """The relay of one upgraded connection; ``done`` resolves with why it ended."""

    def __init__(self, client: ClientSide, upstream: UpstreamSide, idle_timeout: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.upstream = upstream
        self.loop = loop
        self.idle_timeout = idle_timeout
        self.done: asyncio.Future[str] = loop.create_future()
        self.to_client = 0  # bytes relayed upstream -> client
        self.to_upstream = 0
        self._last = loop.time()
        self._client_paused = False  # the client's socket is not read: the upstream's is full
        self._upstream_paused = False  # the reverse
        self._timer: asyncio.TimerHandle | None = loop.call_later(idle_timeout, self._check)

    def from_client(self, data: bytes) -> None:
        if self.done.done() or not data:
            return
        self._last = self.loop.time()
        self.to_upstream += len(data)
        self.upstream.write(data)
        if self.upstream.write_blocked() and not self._client_paused:
            t = self.client.transport
            if t is not None and not self.client.closed:
                self._client_paused = True
                t.pause_reading()

    def from_upstream(self, data: bytes) -> None:
        if self.done.done() or not data:
            return
        self._last = self.loop.time()
        t = self.client.transport
        if t is None or self.client.closed:
            return
        self.to_client += len(data)
        t.write(data)
        if self.client.write_paused and not self._upstream_paused:
            self._upstream_paused = True
            self.upstream.pause_reading()

    # -- the Sink a client connection notifies (``worker.Sink``) ---------------------------

    def client_drained(self) -> None:
        if self._upstream_paused:
            self._upstream_paused = False
            self.upstream.resume_reading()

    def client_gone(self) -> None:
        self.close("client")

    # -- from the upstream connection -----------------------------------------------------

    def upstream_drained(self) -> None:
        if self._client_paused:
            self._client_paused = False
            t = self.client.transport
            if t is not None and not self.client.closed:
                t.resume_reading()

    def close(self, why: str) -> None:
        """End both sides (once): a socket's own buffered bytes still go out on close."""
        if self.done.done():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.done.set_result(why)
        if not self.upstream.closed:
            self.upstream.end()
        t = self.client.transport
        if t is not None and not self.client.closed:
            t.close()

    def _check(self) -> None:
        self._timer = None
        if self.done.done():
            return
        due = self._last + self.idle_timeout
        if self.loop.time() < due - 0.001:
            self._timer = self.loop.call_at(due, self._check)
            return
        self.close("timeout")
