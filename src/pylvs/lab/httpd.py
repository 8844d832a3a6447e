"""A tiny HTTP/1.1 server that answers every request with one fixed body.

What this is for: standing in for nginx (real servers) or Tomcat (app servers) in the namespace lab
when those Debian packages are absent, so that ``curl http://VIP/`` still shows which real server
answered ("this is nginx1"). It speaks enough HTTP/1.1 for curl, health checkers and proxies:
keep-alive, ``Connection: close``, HEAD, and a ``Content-Length`` on every answer.

What this is not for: serving files, TLS, chunked request bodies or anything a benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

_MAX_HEADER = 16384


def build_response(body: bytes, head_only: bool, keep_alive: bool) -> bytes:
    """The bytes of one ``200 OK`` answer carrying ``body``."""
    conn = b"keep-alive" if keep_alive else b"close"
    header = (
        b"HTTP/1.1 200 OK\r\nServer: pylvs-lab\r\nContent-Type: text/plain\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: " + conn + b"\r\n\r\n"
    )
    return header if head_only else header + body


def _wants_keep_alive(head: bytes) -> bool:
    lines = head.split(b"\r\n")
    version = lines[0].rsplit(b" ", 1)[-1] if lines else b""
    conn = b""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            conn = value.strip().lower()
    if version == b"HTTP/1.0":
        return conn == b"keep-alive"
    return conn != b"close"


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return max(0, int(value.strip()))
            except ValueError:
                return 0
    return 0


async def _serve_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            length = _content_length(head)
            if length:
                await reader.readexactly(length)
            keep = _wants_keep_alive(head)
            writer.write(build_response(body, head.startswith(b"HEAD "), keep))
            await writer.drain()
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def serve(host: str, port: int, body: bytes) -> None:
    """Serve until SIGTERM/SIGINT."""
    server = await asyncio.start_server(
        lambda r, w: _serve_client(r, w, body), host, port, reuse_address=True, limit=_MAX_HEADER
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pylvs.lab.httpd")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--text", required=True, help="body of every answer (a newline is added)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.text.encode() + b"\n"))
    except OSError as exc:
        print(f"httpd: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
