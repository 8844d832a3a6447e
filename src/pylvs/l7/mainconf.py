"""The main-context directives the process model acts on (``user``, ``pid``, ``daemon``,
``master_process``, ``worker_processes``, ``error_log``), read from the file and from ``-g``.

Why apart from the configuration reader (``config``): these directives decide how processes are
started (who the workers run as, where the master's pid goes, whether to fork to the
background), not how a request is answered; ``-s`` needs only the ``pid`` path, ``-T`` the list
of files. ``config`` accepts them and this module gives them their meaning.

nginx parses ``-g`` before the file and reports the same directive in both as duplicate. Here a
``-g`` directive replaces the file's (a documented difference): the shipped unit passes
``-g 'pid /run/pylvs-http.pid;'`` to Debian's ``/etc/nginx/nginx.conf``, which has its own
``pid`` line, so that pylvs and nginx never share a pid file.

Not for: anything inside ``http {}`` (``config``), the process handling itself (``master``).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass

from pylvs.l7.directives import DIRECTIVES, MAIN
from pylvs.l7.model import Config
from pylvs.l7.syntax import ConfigError, Directive, printable, read_tree
from pylvs.l7.syslogsink import is_syslog, parse_syslog

# Debian's nginx build (``nginx -V``): --prefix, --conf-path, --pid-path; no --user, so the
# compiled default user is nobody and its group nogroup.
PREFIX = "/usr/share/nginx/"
CONF_PATH = "/etc/nginx/nginx.conf"
PID_PATH = "/run/nginx.pid"
DEFAULT_USER = ("nobody", "nogroup")
COMMAND_LINE = "command line"
LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")


@dataclass(frozen=True)
class MainConf:
    """The process model's settings, with where ``user`` was written (for nginx's warning)."""

    pid: str = PID_PATH
    daemon: bool = False  # nginx's default is on: see ``master`` for why pylvs stays in front
    master_process: bool = True
    user: tuple[str, str] | None = None  # (user, group); None: not written
    user_where: str = ""  # " in FILE:LINE" or " in command line"
    worker_processes: int | None = None  # from -g only (the file's is in Config)
    error_log: tuple[str | None, str] | None = None  # from -g only: (target or None, level)


def _where(d: Directive) -> str:
    return f" in {d.file}:{d.line}" if d.file != COMMAND_LINE else " in command line"


def _err(message: str, d: Directive) -> ConfigError:
    if d.file == COMMAND_LINE:
        return ConfigError(f"{message} in command line")
    return ConfigError(message, d.file, d.line)


def parse_params(text: str) -> list[Directive]:
    """``-g``'s directives, with nginx's messages for a malformed string."""
    out: list[Directive] = []
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == ";":
            if not words:
                raise ConfigError('unexpected ";" in command line')
            out.append(Directive(words[0], words[1:], COMMAND_LINE, 0))
            words = []
            i += 1
        elif c in "{}":
            raise ConfigError(f'unexpected "{c}" in command line')
        elif c in "\"'":
            end = text.find(c, i + 1)
            if end < 0:
                raise ConfigError('unexpected end of parameter, expecting ";" in command line')
            words.append(text[i + 1:end])
            i = end + 1
        else:
            start = i
            while i < n and text[i] not in " \t\r\n;{}\"'":
                i += 1
            words.append(text[start:i])
    if words:
        raise ConfigError('unexpected end of parameter, expecting ";" in command line')
    return out


def _main_level(path: str) -> list[Directive]:
    """The file's main-level directives, main-level ``include`` spliced in."""
    out: list[Directive] = []
    prefix = os.path.dirname(os.path.abspath(path))
    for d in read_tree(path):
        if d.name == "include" and d.block is None and d.args:
            pattern = d.args[0] if os.path.isabs(d.args[0]) else os.path.join(prefix, d.args[0])
            paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            for p in paths:
                out.extend(read_tree(p))
        else:
            out.append(d)
    return out


def config_files(path: str) -> list[str]:
    """Every file the configuration reads, in the order nginx's ``-T`` dumps them."""
    seen: list[str] = []
    prefix = os.path.dirname(os.path.abspath(path))

    def walk(p: str) -> None:
        if p not in seen:
            seen.append(p)
        for d in read_tree(p):
            visit(d)

    def visit(d: Directive) -> None:
        if d.name == "include" and d.block is None and d.args:
            pattern = d.args[0] if os.path.isabs(d.args[0]) else os.path.join(prefix, d.args[0])
            for q in (sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]):
                walk(q)
        for sub in d.block or ():
            visit(sub)

    walk(os.path.abspath(path))
    return seen


def _on_off(d: Directive) -> bool:
    if len(d.args) != 1:
        raise _err(f'invalid number of arguments in "{d.name}" directive', d)
    if d.args[0] not in ("on", "off"):
        raise _err(f'invalid value "{d.args[0]}" in "{d.name}" directive, '
                   'it must be "on" or "off"', d)
    return d.args[0] == "on"


def _one(d: Directive, lo: int = 1, hi: int = 1) -> list[str]:
    if not lo <= len(d.args) <= hi:
        raise _err(f'invalid number of arguments in "{d.name}" directive', d)
    return d.args


def read_main(path: str, params: str = "", prefix: str = PREFIX) -> MainConf:
    """The process settings of ``path`` with ``-g``'s ``params`` over them; raises
    ``ConfigError`` in nginx's words."""
    extra = parse_params(params)
    for d in extra:
        spec = DIRECTIVES.get(d.name)
        if spec is None:
            raise _err(f'unknown directive "{printable(d.name)}"', d)
        if MAIN not in spec.contexts or spec.block:
            raise _err(f'"{d.name}" directive is not allowed here', d)
    given = {d.name for d in extra}
    seen: set[str] = set()
    values: dict[str, object] = {}
    for d in [*(d for d in _main_level(path) if d.name not in given), *extra]:
        if d.name not in ("pid", "daemon", "master_process", "user", "worker_processes",
                          "error_log"):
            continue
        if d.name != "error_log":
            if d.name in seen:
                raise _err(f'"{d.name}" directive is duplicate', d)
            seen.add(d.name)
        if d.name == "pid":
            p = _one(d)[0]
            values["pid"] = p if os.path.isabs(p) else os.path.join(prefix, p)
        elif d.name in ("daemon", "master_process"):
            values[d.name] = _on_off(d)
        elif d.name == "user":
            args = _one(d, 1, 2)
            values["user"] = (args[0], args[-1])
            values["user_where"] = _where(d)
        elif d.file == COMMAND_LINE and d.name == "worker_processes":
            v = _one(d)[0]
            if v == "auto":
                values["worker_processes"] = os.cpu_count() or 1
            elif v.isdigit():
                values["worker_processes"] = int(v)
            else:
                raise _err(f'invalid value "{v}" in "worker_processes" directive', d)
        elif d.file == COMMAND_LINE and d.name == "error_log":
            args = _one(d, 1, 2)
            if len(args) == 2 and args[1] not in LEVELS:
                raise _err(f'invalid log level "{args[1]}"', d)
            if is_syslog(args[0]):
                try:
                    parse_syslog(args[0])
                except ValueError as e:
                    raise _err(str(e), d) from None
            target = None if args[0] == "stderr" else (
                args[0] if os.path.isabs(args[0]) or is_syslog(args[0])
                else os.path.join(prefix, args[0]))
            values["error_log"] = (target, args[1] if len(args) == 2 else "error")
    return MainConf(**values)  # type: ignore[arg-type]


def apply(cfg: Config, main: MainConf) -> Config:
    """``cfg`` with ``-g``'s ``worker_processes`` and ``error_log`` over the file's."""
    if main.worker_processes is not None:
        cfg = dataclasses.replace(cfg, worker_processes=main.worker_processes)
    if main.error_log is not None:
        cfg = dataclasses.replace(cfg, error_log=main.error_log[0], error_level=main.error_log[1])
    return cfg
