"""Fixtures for the layer-7 tests: a uvloop thread running ``pylvs http`` and its upstreams on
loopback, and a small blocking HTTP client that reads responses with httptools.

Everything listens on 127.0.0.1 with ports picked at run time, so tests run in parallel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httptools
import pytest
import uvloop

from pylvs.l7.app import start_app
from pylvs.l7.config import load
from pylvs.l7.listen import L7Server

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopThread:
    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cleanups: list[Callable[[], Awaitable[None]]] = []

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def stop(self) -> None:
        for c in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                self.run(c(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Stack:
    """pylvs http plus upstreams, all in one event-loop thread."""

    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.lt = lt
        self.tmp = tmp
        self.server: L7Server | None = None
        self.port = 0

    def app(self, page: str) -> int:
        async def go() -> int:
            srv = await start_app("127.0.0.1", 0, page)

            async def close() -> None:
                srv.close()

            self.lt.cleanups.append(close)
            return int(srv.sockets[0].getsockname()[1])

        return self.lt.run(go())

    def upstream(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                         Awaitable[None]]) -> int:
        """A scripted upstream: ``handler`` runs for each connection."""

        async def go() -> int:
            srv = await asyncio.start_server(handler, "127.0.0.1", 0)

            async def close() -> None:
                srv.close()

            self.lt.cleanups.append(close)
            return int(srv.sockets[0].getsockname()[1])

        return self.lt.run(go())

    def proxy(self, conf: str, **fmt: Any) -> int:
        """Write ``conf`` (``{port}``, ``{tmp}`` and ``fmt`` substituted) and start it."""
        for _ in range(5):
            port = free_port()
            path = self.tmp / "nginx.conf"
            path.write_text(conf.format(port=port, tmp=self.tmp, **fmt))
            cfg = load(str(path))

            async def go(cfg: Any = cfg) -> L7Server:
                srv = L7Server(cfg, asyncio.get_running_loop())
                await srv.start()
                return srv

            try:
                self.server = self.lt.run(go())
            except OSError:
                continue
            server = self.server

            async def close(server: L7Server = server) -> None:
                await server.close()

            self.lt.cleanups.append(close)
            self.port = port
            return port
        raise RuntimeError("no free port")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    lt = LoopThread()
    try:
        yield Stack(lt, tmp_path)
    finally:
        lt.stop()


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw_headers: list[tuple[str, str]] = []
        self.body = b""
        self.complete = False
        self.chunked_seen = False


class Client:
    """A blocking HTTP/1.1 client over one socket, for byte-exact requests."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.done: list[Response] = []
        self.cur: Response | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.raw = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def on_message_begin(self) -> None:
        self.cur = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.cur is not None
        self.cur.headers[name.decode().lower()] = value.decode()
        self.cur.raw_headers.append((name.decode(), value.decode()))

    def on_headers_complete(self) -> None:
        assert self.cur is not None
        self.cur.status = self.parser.get_status_code()
        if self._head_only:
            self.cur.complete = True
            self.done.append(self.cur)
            self.cur = None
            self._reset = True

    def on_body(self, data: bytes) -> None:
        assert self.cur is not None
        self.cur.body += data

    def on_message_complete(self) -> None:
        if self.cur is not None:
            self.cur.complete = True
            self.done.append(self.cur)
            self.cur = None

    _head_only = False
    _reset = False

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        if not data:
            self.closed = True
        return data

    def read(self, n: int = 1, head_only: bool = False) -> list[Response]:
        """Read ``n`` complete responses (fewer if the server closes)."""
        self._head_only = head_only
        deadline = time.monotonic() + self.timeout
        while len(self.done) < n and not self.closed and time.monotonic() < deadline:
            data = self._recv()
            self.raw += data
            if data:
                self.parser.feed_data(data)
                if self._reset:
                    self._reset = False
                    self.parser = httptools.HttpResponseParser(self)
        out, self.done = self.done[:n], self.done[n:]
        return out

    def one(self, request: bytes, head_only: bool = False) -> Response:
        self.send(request)
        got = self.read(1, head_only)
        assert got, f"no response; raw so far: {self.raw[-500:]!r}"
        return got[0]

    def wait_closed(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.raw += data
        return False


def interop_head(pid: str, error_log: str, access_log: str = "off") -> str:
    """The main and http settings an nginx.conf compared with real nginx starts with (a
    ``str.format`` template like the rest of such a file: ``{tmp}`` is the test's directory):
    root as the user, one worker, and nginx's temp paths in the test's directory."""
    return ("\nuser root;\nworker_processes 1;\n"
            f"pid {pid};\nerror_log {error_log};\n"
            "events {{ worker_connections 64; }}\nhttp {{\n"
            f"    access_log {access_log};\n"
            + "".join(f"    {kind}_temp_path {{tmp}}/{d};\n" for kind, d in (
                ("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fastcgi"),
                ("uwsgi", "uwsgi"), ("scgi", "scgi"))))


def read_to_close(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection to 127.0.0.1:``port``; every byte until it closes."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(data)
        raw = b""
        while True:
            got = s.recv(65536)
            if not got:
                return raw
            raw += got


def get(path: str, host: str = "localhost", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


SEED_CONF = """
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/access.log;
    upstream tomcat {{
        server 127.0.0.1:{app1} weight=2;
        server 127.0.0.1:{app2} weight=1;
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        index index.html;
        keepalive_timeout 65;
        location ~ .*.jsp$ {{
            proxy_pass http://tomcat;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header HOST $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


@pytest.fixture
def seed(stack: Stack) -> Stack:
    """The seed's layer 7: two app servers 2:1 behind ``location ~ .*.jsp$``, static root."""
    html = stack.tmp / "html"
    html.mkdir()
    (html / "index.html").write_text("this is nginx1\n")
    (html / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    app1, app2 = stack.app("1"), stack.app("2")
    stack.proxy(SEED_CONF, app1=app1, app2=app2)
    return stack


def refused(tmp_path: Path, server_body: str) -> str:
    """The ConfigError ``load`` raises for a file whose one server block holds ``server_body``
    (its first line is line 5)."""
    from pylvs.l7.config import ConfigError

    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n server {\n  listen 127.0.0.1:8080;\n"
                    f"{server_body}\n }}\n}}\n")
    with pytest.raises(ConfigError) as e:
        load(str(conf))
    return str(e.value)
