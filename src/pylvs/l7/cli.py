"""``pylvs http``: nginx 1.22's command line (``-?,-h -v -V -t -T -q -s signal -p prefix
-e filename -c filename -g directives``, each with nginx's meaning and output) and
``pylvs http-app`` (the built-in dynamic app standing in for Tomcat).

Why argparse with nginx's words: the man page and the bash completion are generated from this
parser, while errors and ``-h`` read as nginx's (``invalid option: "x"``, exit 1).

Not for: the processes (``master``), the main-context directives (``mainconf``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import signal
import sys
from typing import Any, NoReturn

from pylvs import __version__
from pylvs.l7.config import Config, ConfigError, load

PREFIX = "pylvs http:"
USAGE = """Usage: pylvs http [-?hvVtTq] [-s signal] [-p prefix]
                  [-e filename] [-c filename] [-g directives]

Options:
  -?,-h         : this help
  -v            : show version and exit
  -V            : show version and configure options then exit
  -t            : test configuration and exit
  -T            : test configuration, dump it and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to a master process: stop, quit, reopen, reload
  -p prefix     : set prefix path (default: {prefix})
  -e filename   : set error log file (default: stderr)
  -c filename   : set configuration file (default: {conf})
  -g directives : set global directives out of configuration file
"""


def register(subparsers: Any) -> None:
    from pylvs.l7.mainconf import CONF_PATH

    p = subparsers.add_parser(
        "http", help="nginx-syntax HTTP/1.1 reverse proxy and static file server", add_help=False,
        description="Serve HTTP from an nginx-syntax configuration (http/server/location/upstream) "
                    "with nginx's command line, process model and signals.")
    p.add_argument("-?", "-h", dest="help", action="store_true", help="this help")
    p.add_argument("-v", dest="version", action="store_true", help="show version and exit")
    p.add_argument("-V", dest="configure", action="store_true",
                   help="show version and configure options then exit")
    p.add_argument("-t", dest="test", action="store_true", help="test configuration and exit")
    p.add_argument("-T", dest="dump", action="store_true",
                   help="test configuration, dump it and exit")
    p.add_argument("-q", dest="quiet", action="store_true",
                   help="suppress non-error messages during configuration testing")
    p.add_argument("-s", dest="signal", metavar="signal",
                   help="send signal to a master process: stop, quit, reopen, reload")
    p.add_argument("-p", dest="prefix", metavar="prefix", help="set prefix path")
    p.add_argument("-e", dest="error_log", metavar="filename",
                   help="set error log file (default: stderr)")
    p.add_argument("-c", dest="config", metavar="filename", default=None,
                   help=f"set configuration file (default: {CONF_PATH})")
    p.add_argument("-g", dest="directives", metavar="directives", default="",
                   help="set global directives out of configuration file")
    p.add_argument("--metrics-address", dest="metrics_address", metavar="HOST:PORT",
                   default=None,
                   help="pylvs only (not an nginx option): serve Prometheus /metrics "
                        "(stub_status figures under nginx-prometheus-exporter's names, "
                        "per-upstream-server counters) on HOST:PORT; a bare PORT is loopback")
    p.set_defaults(func=run_http)
    _nginx_errors(p)

    a = subparsers.add_parser(
        "http-app", help="built-in dynamic app server (stands in for Tomcat)",
        description="Answer *.jsp with 'dynamic page N' and echo what the proxy forwarded.")
    a.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    a.add_argument("--page", default="1", help="the N of 'dynamic page N'")
    a.set_defaults(func=run_app)


def _nginx_errors(p: argparse.ArgumentParser) -> None:
    """nginx's words for a bad command line, on this parser's instance (the parent parser
    would otherwise report leftovers in argparse's words)."""
    parse_known = p.parse_known_args

    def fail(message: str) -> NoReturn:
        if "expected one argument" in message:
            opt = message.split()[1].rstrip(":").split("/")[0]
            print(f'{PREFIX} option "{opt}" requires parameter', file=sys.stderr)
        else:
            print(f"{PREFIX} {message}", file=sys.stderr)
        sys.exit(1)

    def known(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = parse_known(args, namespace)
        if rest:
            word = rest[0]
            print(f'{PREFIX} invalid option: "{word.lstrip("-") if word.startswith("-") else word}"',
                  file=sys.stderr)
            sys.exit(1)
        return ns, rest

    setattr(p, "error", fail)  # noqa: B010 - an instance override, not a new attribute
    setattr(p, "parse_known_args", known)  # noqa: B010


def _paths(args: argparse.Namespace) -> tuple[str, str]:
    """(prefix, configuration file) as nginx derives them: ``-c`` relative to ``-p``."""
    from pylvs.l7.mainconf import CONF_PATH
    from pylvs.l7.mainconf import PREFIX as DEFAULT_PREFIX

    prefix = args.prefix or DEFAULT_PREFIX
    if not prefix.endswith("/"):
        prefix += "/"
    conf = args.config or CONF_PATH
    if not os.path.isabs(conf):
        conf = os.path.join(prefix if args.prefix else os.getcwd(), conf)
    return prefix, conf


def check(path: str, quiet: bool = False, directives: str = "",
          prefix: str | None = None, default_log: str | None = None) -> tuple[int, Config | None]:
    """``-t``: the file and ``-g``, with nginx's two lines (or its ``[emerg]`` and "test
    failed")."""
    try:
        loaded = read_all(path, directives, prefix, default_log)
    except ConfigError as e:
        print(f"{PREFIX} [emerg] {e}", file=sys.stderr)
        print(f"{PREFIX} configuration file {os.path.abspath(path)} test failed", file=sys.stderr)
        return 1, None
    cfg = loaded.cfg
    if not quiet:
        print(f"{PREFIX} the configuration file {cfg.path} syntax is ok", file=sys.stderr)
        print(f"{PREFIX} configuration file {cfg.path} test is successful", file=sys.stderr)
    return 0, cfg


def read_all(path: str, directives: str = "", prefix: str | None = None,
             default_log: str | None = None) -> Any:
    """The configuration, the process settings and the workers' credentials (a ``Loaded``);
    nginx's warning for a ``user`` line a non-root master ignores; ``ConfigError`` else.
    ``default_log`` (``-e``) is the error log when neither the file nor ``-g`` names one."""
    from pylvs.l7.mainconf import PREFIX as DEFAULT_PREFIX
    from pylvs.l7.mainconf import apply, read_main
    from pylvs.l7.master import Loaded
    from pylvs.l7.privileges import resolve, user_warning

    cfg = load(path)
    for w in cfg.warnings:  # as nginx, while reading: before -t's verdict or the start
        print(f"{PREFIX} [warn] {w}", file=sys.stderr)
    main = read_main(path, directives, prefix or DEFAULT_PREFIX)
    warning = user_warning(main.user, main.user_where)
    if warning:
        print(f"{PREFIX} [warn] {warning}", file=sys.stderr)
    cfg = apply(cfg, main)
    if default_log is not None and cfg.error_log is None and main.error_log is None:
        cfg = dataclasses.replace(cfg, error_log=default_log)
    return Loaded(cfg, main, resolve(main.user, main.user_where))


def version_lines(configure: bool) -> str:
    from pylvs.l7.mainconf import CONF_PATH, DEFAULT_USER, PID_PATH
    from pylvs.l7.mainconf import PREFIX as DEFAULT_PREFIX

    out = f"pylvs http version: pylvs/{__version__} (nginx/1.22.1 compatible)\n"
    if configure:
        out += (f"built with Python {platform.python_version()}\n"
                f"configure arguments: --prefix={DEFAULT_PREFIX} --conf-path={CONF_PATH} "
                f"--error-log-path=stderr --pid-path={PID_PATH} --user={DEFAULT_USER[0]} "
                f"--group={DEFAULT_USER[1]}\n")
    return out


def run_http(args: argparse.Namespace) -> int:
    from pylvs.l7.mainconf import PREFIX as DEFAULT_PREFIX

    if args.help or args.version or args.configure:
        text = version_lines(args.configure)
        if args.help:
            text += USAGE.format(prefix=DEFAULT_PREFIX, conf="/etc/nginx/nginx.conf")
        sys.stderr.write(text)
        return 0
    if args.signal is not None and args.signal not in ("stop", "quit", "reopen", "reload"):
        print(f'{PREFIX} invalid option: "-s {args.signal}"', file=sys.stderr)
        return 1
    prefix, conf = _paths(args)
    args.default_log = None
    if args.error_log not in (None, "stderr"):
        args.default_log = os.path.join(prefix, args.error_log)
    if args.test or args.dump:
        rc = check(conf, args.quiet, args.directives, prefix, args.default_log)[0]
        if rc == 0 and args.dump:
            _dump(conf)
        return rc
    if args.signal is not None:
        return _signal(conf, args.directives, prefix, args.signal)
    metrics = None
    if args.metrics_address is not None:
        from pylvs.metrics.server import MetricsError, parse_listen

        try:
            metrics = parse_listen(args.metrics_address)
        except MetricsError as e:
            print(f"{PREFIX} [emerg] {e}", file=sys.stderr)
            return 1
    try:
        loaded = read_all(conf, args.directives, prefix, args.default_log)
    except ConfigError as e:
        print(f"{PREFIX} [emerg] {e}", file=sys.stderr)
        return 1
    from pylvs.l7.master import start

    def reload() -> Any:
        return read_all(conf, args.directives, prefix, args.default_log)

    return start(reload, loaded, metrics)


def _dump(conf: str) -> None:
    """``-T``: every file read, as nginx prints them."""
    from pylvs.l7.mainconf import config_files

    for path in config_files(conf):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        sys.stdout.write(f"# configuration file {path}:\n{text}")
        if not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.write("\n")


def _signal(conf: str, directives: str, prefix: str, command: str) -> int:
    """``-s``: the pid file of the file's (or ``-g``'s) ``pid`` names the master."""
    from pylvs.l7.mainconf import read_main
    from pylvs.l7.master import send_signal

    try:
        main = read_main(conf, directives, prefix)
    except ConfigError as e:
        print(f"{PREFIX} [emerg] {e}", file=sys.stderr)
        return 1
    failed = send_signal(main.pid, command)
    if failed is not None:
        print(f"{PREFIX} [{failed[0]}] {failed[1]}", file=sys.stderr)
        return 1
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
