"""``pylvs http -c FILE`` (run), ``pylvs http -t -c FILE`` (check, as ``nginx -t``) and
``pylvs http-app`` (the built-in dynamic app standing in for Tomcat).

Not for: anything but argument handling and the process around ``listen.L7Server``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from pylvs.l7.config import Config, ConfigError, load

PREFIX = "pylvs http:"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "http", help="nginx-syntax HTTP/1.1 reverse proxy and static file server",
        description="Serve HTTP from an nginx-syntax configuration (http/server/location/upstream).")
    p.add_argument("-c", dest="config", default="/etc/nginx/nginx.conf",
                   help="configuration file (default /etc/nginx/nginx.conf)")
    p.add_argument("-t", dest="test", action="store_true",
                   help="test the configuration and exit, as nginx -t")
    p.add_argument("-q", dest="quiet", action="store_true",
                   help="with -t, print only errors")
    p.set_defaults(func=run_http)

    a = subparsers.add_parser(
        "http-app", help="built-in dynamic app server (stands in for Tomcat)",
        description="Answer *.jsp with 'dynamic page N' and echo what the proxy forwarded.")
    a.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    a.add_argument("--page", default="1", help="the N of 'dynamic page N'")
    a.set_defaults(func=run_app)


def check(path: str, quiet: bool = False) -> tuple[int, Config | None]:
    try:
        cfg = load(path)
    except ConfigError as e:
        print(f"{PREFIX} [emerg] {e}", file=sys.stderr)
        print(f"{PREFIX} configuration file {os.path.abspath(path)} test failed", file=sys.stderr)
        return 1, None
    if not quiet:
        print(f"{PREFIX} the configuration file {cfg.path} syntax is ok", file=sys.stderr)
        print(f"{PREFIX} configuration file {cfg.path} test is successful", file=sys.stderr)
    return 0, cfg


def run_http(args: argparse.Namespace) -> int:
    if args.test:
        return check(args.config, args.quiet)[0]
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"{PREFIX} [emerg] {e}", file=sys.stderr)
        return 1
    if cfg.worker_processes <= 1:
        return _run(_serve_http(cfg, None))
    return _master(cfg)


def _master(cfg: Config) -> int:
    """nginx's process model: bind once, fork ``worker_processes`` workers sharing the
    listening sockets, pass SIGTERM/SIGINT/SIGQUIT on to them, exit when they have ended.
    Each worker balances its upstreams on its own, as nginx's workers do without a zone."""
    from pylvs.l7.listen import bind_listener, listen_groups

    bound: dict[tuple[str, int], Any] = {}
    try:
        for host, port in listen_groups(cfg):
            bound[(host, port)] = bind_listener(host, port)
    except OSError as e:
        print(f"{PREFIX} [emerg] {e.strerror}", file=sys.stderr)
        return 1
    pids: list[int] = []
    for _ in range(cfg.worker_processes):
        pid = os.fork()
        if pid == 0:
            rc = 1
            try:
                rc = _run(_serve_http(cfg, bound))
            finally:
                os._exit(rc)
        pids.append(pid)
    for s in bound.values():
        s.close()

    def forward(signum: int, _frame: Any) -> None:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, forward)
    rc = 0
    for p in pids:
        while True:
            try:
                _, status = os.waitpid(p, 0)
                break
            except InterruptedError:
                continue
        rc = rc or os.waitstatus_to_exitcode(status)
    return 0 if rc in (0, -signal.SIGTERM, -signal.SIGINT) else 1


async def _serve_http(cfg: Config, bound: dict[tuple[str, int], Any] | None) -> int:
    from pylvs.l7.listen import L7Server

    loop = asyncio.get_running_loop()
    try:
        server = L7Server(cfg, loop)
    except OSError as e:
        print(f'{PREFIX} [emerg] open() "{e.filename}" failed ({e.errno}: {e.strerror})',
              file=sys.stderr)
        return 1
    try:
        await server.start(bound)
    except OSError as e:
        await server.close()
        print(f"{PREFIX} [emerg] {e.strerror}", file=sys.stderr)
        return 1
    await _until_signal(loop)
    await server.close()
    return 0


def run_app(args: argparse.Namespace) -> int:
    from pylvs.l7.app import parse_listen

    try:
        host, port = parse_listen(args.listen)
    except ValueError as e:
        print(f"pylvs http-app: {e}", file=sys.stderr)
        return 2
    return _run(_serve_app(host, port, args.page))


async def _serve_app(host: str, port: int, page: str) -> int:
    from pylvs.l7.app import start_app

    loop = asyncio.get_running_loop()
    try:
        srv = await start_app(host, port, page)
    except OSError as e:
        print(f"pylvs http-app: bind() to {host}:{port} failed ({e.errno}: {e.strerror})",
              file=sys.stderr)
        return 1
    await _until_signal(loop)
    srv.close()
    return 0


async def _until_signal(loop: asyncio.AbstractEventLoop) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _run(coro: Any) -> int:
    try:
        import uvloop

        rc: int = uvloop.run(coro)
    except ImportError:
        rc = asyncio.run(coro)
    return rc
