"""Upgraded connections (WebSocket): a proxied request with ``Upgrade`` that the upstream answers
``101`` becomes a byte tunnel both ways, as nginx's; any other answer leaves the connection HTTP
and the bytes after the request are the next request. Compared with real nginx 1.22 on the same
file, then the tunnel itself: volume both ways, proxy_read_timeout, either side's end."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
import time

from tests.l7.conftest import Stack, interop_head, wait_for
from tests.l7.test_nginx_interop import _raw_answer, _real_nginx, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-upgrade.pid", "{tmp}/error-upgrade.log info",
                    access_log="{tmp}/access-upgrade.log") + """\
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /ws/ {{
            proxy_pass http://127.0.0.1:{up};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout {idle};
        }}
        location /wsh/ {{
            proxy_pass http://127.0.0.1:{up};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_hide_header X-Up;
            proxy_pass_header Server;
            proxy_redirect http://upstream/ /here/;
            proxy_cookie_path /up/ /down/;
            add_header X-Always a always;
            add_header X-Not b;
        }}
        location /wsh-server-only/ {{
            proxy_pass http://127.0.0.1:{up};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_pass_header Server;
        }}
        location /plain/ {{ proxy_pass http://127.0.0.1:{up}; }}
        location = /r {{ return 200 "ret\\n"; }}
    }}
}}
"""


def _upgrade_head(path: str, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n{extra}\r\n").encode()


async def _switching_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 101 to a request with Upgrade (with ``X-With-Server``, also Server, Location and
    Set-Cookie lines), then every byte back prefixed per read ("echo:"), or
    with ``X-Sink`` the SHA-256 of what came, and ``X-Send: N`` N bytes of its own first. A
    request without Upgrade gets a 200 saying what it saw (the headers the proxy passed)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            hdrs = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip()
                    for ln in lines[1:] if ":" in ln}
            if "upgrade" not in hdrs:
                body = (f"no upgrade: {lines[0]} connection={hdrs.get('connection', '-')}\n"
                        ).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
                continue
            extra = (b"Server: upsrv\r\nLocation: http://upstream/x\r\n"
                     b"Set-Cookie: a=1; Path=/up/\r\n" if "x-with-server" in hdrs else b"")
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\nX-Up: 1\r\n"
                         + extra + b"\r\n")
            await writer.drain()
            if "x-send" in hdrs:
                writer.write(bytes(range(256)) * (int(hdrs["x-send"]) // 256))
            if "x-sink" in hdrs:
                digest = hashlib.sha256(await reader.readexactly(int(hdrs["x-sink"])))
                writer.write(digest.hexdigest().encode())
                await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(b"echo:" + data)
                await writer.drain()
            writer.close()
            return
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _switch(port: int, head: bytes, early: bytes = b"") -> tuple[list[str], bytes, socket.socket]:
    """Send an upgrade request; the 101 head's lines (Date and Server dropped, sorted) and the
    bytes after it once the echo of ``early`` arrived."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(head + early)
    raw = b""
    want = b"echo:" + early if early else b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if b"\r\n\r\n" in raw and raw.partition(b"\r\n\r\n")[2].startswith(want) and \
                len(raw.partition(b"\r\n\r\n")[2]) >= len(want):
            break
        got = s.recv(65536)
        if not got:
            break
        raw += got
    head_part, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    kept = [ln for ln in lines[1:] if ln.split(":")[0].lower() not in ("date", "server")]
    return [lines[0], *sorted(kept)], rest, s


def test_a_101_and_what_surrounds_it_as_nginx(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    (stack.tmp / "html").mkdir()
    (stack.tmp / "html" / "f.txt").write_text("file\n")
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    fmt = {"up": stack.upstream(_switching_upstream), "idle": "60s"}
    ours_port = stack.proxy(CONF, **fmt)
    follow = b"GET /r HTTP/1.1\r\nHost: localhost\r\n\r\n"
    not_switched = [
        _upgrade_head("/plain/a") + follow,  # the proxy drops Upgrade unless told to pass it
        _upgrade_head("/f.txt") + follow,  # a file: the Upgrade is ignored
        _upgrade_head("/r") + follow,
        _upgrade_head("/f.txt") + b"EARLY",  # the bytes after it are a (bad) next request
    ]
    ours = [_raw_answer(ours_port, r) for r in not_switched]
    ours_101 = _switch(ours_port, _upgrade_head("/ws/x"), b"EARLY")
    with _real_nginx(stack, nginx_bin, "upgrade", CONF, **fmt) as port:
        theirs = [_raw_answer(port, r) for r in not_switched]
        theirs_101 = _switch(port, _upgrade_head("/ws/x"), b"EARLY")
        for r, a, b in zip(not_switched, ours, theirs, strict=True):
            assert a == b, r
        assert ours_101[:2] == theirs_101[:2]
        assert ours_101[0][0] == "HTTP/1.1 101 Switching Protocols"
        assert "Connection: upgrade" in ours_101[0] and "Upgrade: websocket" in ours_101[0]
        assert ours_101[1] == b"echo:EARLY"
        for _, _, s in (ours_101, theirs_101):  # and the tunnel goes on both ways
            s.sendall(b"hello")
            assert s.recv(100) == b"echo:hello"
            s.close()


def _head_101(port: int, head: bytes) -> list[str]:
    """A 101 head's lines in the order sent, the Date line's value, the front end's own Server
    line and its port in URLs masked."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(head)
    raw = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in raw and time.monotonic() < deadline:
        got = s.recv(65536)
        if not got:
            break
        raw += got
    s.close()
    lines = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return [("Date: -" if ln.startswith("Date: ") else
             "Server: (own)" if ln.startswith(("Server: nginx", "Server: pylvs")) else
             ln.replace(f":{port}/", ":(port)/")) for ln in lines]


def test_header_rules_apply_to_a_101_as_nginx(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    """proxy_hide_header, proxy_pass_header, proxy_redirect, proxy_cookie_path and add_header
    on a 101, with and without the upstream's own Server line: nginx's lines in nginx's order
    (a Location it made absolute after Date, a passed Server in the upstream's place)."""
    (stack.tmp / "html").mkdir()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    fmt = {"up": stack.upstream(_switching_upstream), "idle": "60s"}
    asks = [_upgrade_head(path, extra) for path in ("/wsh/a", "/wsh-server-only/a", "/ws/a")
            for extra in ("", "X-With-Server: 1\r\n")]
    ours_port = stack.proxy(CONF, **fmt)
    ours = [_head_101(ours_port, a) for a in asks]
    with _real_nginx(stack, nginx_bin, "upgrade", CONF, **fmt) as port:
        theirs = [_head_101(port, a) for a in asks]
    for a, mine, real in zip(asks, ours, theirs, strict=True):
        assert mine == real, a


def _tunnel_stack(stack: Stack, idle: str = "60s") -> int:
    (stack.tmp / "html").mkdir(exist_ok=True)
    return stack.proxy(CONF, up=stack.upstream(_switching_upstream), idle=idle)


def test_megabytes_both_ways_at_once_arrive_whole(stack: Stack) -> None:
    port = _tunnel_stack(stack)
    n = 8 << 20
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.sendall(_upgrade_head("/ws/big", f"X-Sink: {n}\r\nX-Send: {n}\r\n"))
    sent = os.urandom(n)
    sender = threading.Thread(target=s.sendall, args=(sent,))
    sender.start()  # both directions at once: each side's flow control holds the other
    raw = b""
    want = None
    while want is None or len(raw) < want:
        got = s.recv(1 << 20)
        if not got:
            break
        raw += got
        if want is None and b"\r\n\r\n" in raw:
            want = raw.index(b"\r\n\r\n") + 4 + n + 64
    sender.join(10)
    s.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    # the upstream's own bytes, then its digest of what the client sent
    assert rest[:n] == bytes(range(256)) * (n // 256)
    assert rest[n:] == hashlib.sha256(sent).hexdigest().encode()


def test_idle_for_proxy_read_timeout_closes_both_sides(stack: Stack) -> None:
    port = _tunnel_stack(stack, idle="1s")
    _, rest, s = _switch(port, _upgrade_head("/ws/idle"), b"x")
    assert rest == b"echo:x"
    t0 = time.monotonic()
    for _ in range(3):  # traffic keeps it open past the timeout
        time.sleep(0.6)
        s.sendall(b"y")
        assert s.recv(100) == b"echo:y"
    assert time.monotonic() - t0 > 1.5
    s.settimeout(5)
    t1 = time.monotonic()
    assert s.recv(100) == b""  # then a second without a byte: closed
    assert 0.7 < time.monotonic() - t1 < 3
    s.close()
    log = stack.tmp / "error-upgrade.log"
    assert wait_for(lambda: log.exists() and b"while proxying upgraded connection"
                    in log.read_bytes(), 5)


def test_either_side_ending_ends_the_tunnel_and_it_is_logged(stack: Stack) -> None:
    port = _tunnel_stack(stack)
    _, rest, s = _switch(port, _upgrade_head("/ws/end"), b"ab")
    assert rest == b"echo:ab"
    s.shutdown(socket.SHUT_WR)
    s.settimeout(5)
    with contextlib.suppress(ConnectionResetError):
        while s.recv(100):
            pass
    s.close()
    access = stack.tmp / "access-upgrade.log"
    assert wait_for(lambda: access.exists() and b'"GET /ws/end HTTP/1.1" 101 '
                    in access.read_bytes(), 5)
    # the server answering keeps serving others
    _, rest, s2 = _switch(port, _upgrade_head("/ws/again"), b"cd")
    assert rest == b"echo:cd"
    s2.close()
