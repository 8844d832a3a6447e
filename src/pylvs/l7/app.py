"""A small dynamic app server standing in for the seed's Tomcat ``index.jsp`` pages.

It answers ``dynamic page N`` (N given at start) and shows what the proxy forwarded, so tests and
the lab can check the 2:1 weighting and the X-Real-IP / X-Forwarded-For / Host headers without a
JVM. Query parameters make it serve the shapes a proxy must carry: ``size=N`` (N bytes of a
fixed pattern), ``chunked=1`` (chunked encoding), ``echo=body`` (the request body back) and
``echo=headers`` (the request head back). The request is parsed with httptools.

Not for: production use or anything Tomcat does beyond answering pages.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import parse_qs

import httptools

PATTERN = bytes(range(33, 127)) * 64  # deterministic printable bytes for size=N bodies


def pattern_body(n: int) -> bytes:
    reps = n // len(PATTERN) + 1
    return (PATTERN * reps)[:n]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'invalid listen address "{text}", expected HOST:PORT')
    return host.strip("[]") or "0.0.0.0", int(port)


class AppProtocol(asyncio.Protocol):
    def __init__(self, page: str) -> None:
        self.page = page
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        self.keep_alive = self.parser.should_keep_alive()
        url = httptools.parse_url(self.url)
        query = parse_qs((url.query or b"").decode("latin-1"))
        hmap = {k.lower(): v for k, v in self.headers}
        echo = query.get("echo", [""])[0]
        if echo == "body":
            body = b"".join(self.body)
        elif echo == "headers":
            body = b"%s %s HTTP/%s\r\n" % (method, self.url,
                                          self.parser.get_http_version().encode())
            body += b"".join(k + b": " + v + b"\r\n" for k, v in self.headers)
        elif "size" in query:
            body = pattern_body(int(query["size"][0]))
        else:
            body = b"dynamic page " + self.page.encode() + b"\n"
        head = [b"HTTP/1.1 200 OK\r\n", b"Content-Type: text/plain\r\n",
                b"X-App-Page: " + self.page.encode() + b"\r\n"]
        for src, dst in ((b"x-real-ip", b"X-Seen-Real-IP"), (b"x-forwarded-for", b"X-Seen-Forwarded-For"),
                         (b"host", b"X-Seen-Host")):
            if src in hmap:
                head.append(dst + b": " + hmap[src] + b"\r\n")
        if not self.keep_alive:
            head.append(b"Connection: close\r\n")
        chunked = query.get("chunked", [""])[0] == "1"
        if chunked:
            head.append(b"Transfer-Encoding: chunked\r\n\r\n")
            out = [b"".join(head)]
            if method != b"HEAD":
                step = 1000
                for i in range(0, len(body), step):
                    piece = body[i:i + step]
                    out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
                out.append(b"0\r\n\r\n")
            self.transport.write(b"".join(out))
        else:
            head.append(b"Content-Length: %d\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + (b"" if method == b"HEAD" else body))
        if not self.keep_alive:
            self.transport.close()


async def start_app(host: str, port: int, page: str) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: AppProtocol(page), host, port, reuse_address=True)
