"""``pylvs genhash``: the digest of a URL for HTTP_GET/SSL_GET ``digest``, as keepalived's genhash.

What this is for: an operator writing a keepalived.conf asks a healthy real server for its page
once and pastes the MD5 into the config; the checker then compares every answer with it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import sys
from typing import Any

from pylvs.config.keepalived import CheckerConfig
from pylvs.health.checkers.http import HttpOptions, UrlCheck, fetch_url


async def _fetch(cfg: CheckerConfig, url: UrlCheck, timeout: float) -> tuple[int, bytes]:
    async with asyncio.timeout(timeout):
        return await fetch_url(cfg, url)


def genhash(args: argparse.Namespace) -> int:
    try:
        addr = ipaddress.ip_address(args.server)
    except ValueError:
        print(f"genhash: '{args.server}' is not an IP address", file=sys.stderr)
        return 2
    port = args.port or (443 if args.use_ssl else 80)
    cfg = CheckerConfig(
        kind="SSL_GET" if args.use_ssl else "HTTP_GET", file="<genhash>", line=0,
        connect_ip=addr, connect_port=port, connect_timeout=args.timeout,
        options=HttpOptions(virtualhost=args.virtualhost, http_protocol=args.protocol,
                            enable_sni=args.sni),
    )
    url = UrlCheck(args.url)
    try:
        status, body = asyncio.run(_fetch(cfg, url, args.timeout))
    except TimeoutError:
        print(f"genhash: no answer from {addr}:{port} in {args.timeout:g} s", file=sys.stderr)
        return 1
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        print(f"genhash: {addr}:{port}{args.url}: {exc}", file=sys.stderr)
        return 1
    if args.verbose:
        print(f"HTTP status code: {status}")
        print(f"Body length: {len(body)}")
    print(f"MD5SUM = {hashlib.md5(body).hexdigest()}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("genhash", help="MD5 digest of a URL for HTTP_GET/SSL_GET checks")
    p.add_argument("-s", "--server", required=True, help="real server address")
    p.add_argument("-p", "--port", type=int, default=0, help="port (80, or 443 with -S)")
    p.add_argument("-u", "--url", required=True, help="path to fetch, e.g. /index.html")
    p.add_argument("-S", "--use-ssl", action="store_true", help="use TLS (SSL_GET)")
    p.add_argument("-V", "--virtualhost", help="Host header to send")
    p.add_argument("-P", "--protocol", default="1.0", choices=["1.0", "1.0C", "1.1"])
    p.add_argument("-I", "--sni", action="store_true", help="send SNI with -S")
    p.add_argument("-t", "--timeout", type=float, default=5.0)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=genhash)
