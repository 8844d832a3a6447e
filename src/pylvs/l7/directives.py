"""The nginx directives ``pylvs http`` knows: one row each, carrying where it is allowed, how many
arguments it takes and, for a setting, the function that reads it.

Why a table: adding a directive is one decorated function here (and, if it feeds a new
behaviour, the field it sets on ``model.Location``); the reader (``config``) checks contexts,
argument counts, blocks and duplicates from the row, in nginx's words, for every directive
alike. Settings inherit http -> server -> location as nginx merges them: each level starts from
its parent's values, and list-valued ones (``proxy_set_header``, ``add_header``,
``access_log``, ``error_page``) are replaced as a whole by a level that has its own.

Not for: the block structure (``http``, ``server``, ``location``, ``upstream``, ``listen``,
``server_name``, ``log_format``: their rows have no parser and ``config`` reads them where they
occur) or the syntax (``syntax``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from pylvs.l7 import access, expires
from pylvs.l7.model import AccessLog, Return, Rewrite
from pylvs.l7.syntax import ConfigError, Directive
from pylvs.l7.syslogsink import is_syslog, parse_syslog
from pylvs.l7.variables import Template, compile_template

MAIN, EVENTS, HTTP, SERVER, LOCATION, UPSTREAM, TYPES = (
    "main", "events", "http", "server", "location", "upstream", "types")
# Inside ``if`` in a server (only the rewrite module's directives) and in a location.
SIF, LIF = "if@server", "if@location"
HSL = (HTTP, SERVER, LOCATION)
ALL = (MAIN, EVENTS, HTTP, SERVER, LOCATION, UPSTREAM, TYPES, SIF, LIF)
SCRIPT = (SERVER, LOCATION, SIF, LIF)  # rewrite, return, set, break
# Names with another meaning inside upstream {}: their rows are "NAME@upstream".
UPSTREAM_OWN = ("server", "keepalive_requests", "keepalive_timeout")


class Reader(Protocol):
    """What a setting's parser may use of the configuration reader."""

    log_formats: dict[str, Template]
    warnings: list[str]  # nginx's [warn] lines for the file, in order

    def abspath(self, path: str) -> str: ...

    def error_log(self, d: Directive) -> None: ...

    def expand(self, block: list[Directive], context: str) -> list[Directive]: ...


class Level:
    """One level's settings (http, server or location) while its block is read: its parent's
    values, overridden by its own; the list-valued settings it defines itself collect apart."""

    def __init__(self, reader: Reader, parent: dict[str, Any], context: str) -> None:
        self.reader = reader
        self.context = context
        self.s = dict(parent)
        self.headers: list[tuple[str, Template]] = []
        self.add_header: list[tuple[str, Template, bool]] = []
        self.logs: list[AccessLog] | None = None
        self.pages: list[tuple[int, Template, int | None]] = []
        self.seen: set[str] = set()

    def settings(self) -> dict[str, Any]:
        s = self.s
        if self.headers:
            s["proxy_set_header"] = tuple(self.headers)
        if self.add_header:
            s["add_header"] = tuple(self.add_header)
        if self.logs is not None:
            s["access_log"] = tuple(self.logs)
        if self.pages:  # as nginx: a level's own error_page lines replace the inherited ones
            s["error_pages"] = tuple(self.pages)
        return s


Parser = Callable[[Level, Directive], None]


@dataclass(frozen=True)
class Spec:
    """A directive's row: contexts, argument count (``hi`` -1: unbounded), whether it takes a
    block, whether it may appear once per level, and its parser (None: read by ``config``
    where it occurs). ``ignored``: accepted and without effect (no argument check)."""

    name: str
    contexts: frozenset[str]
    lo: int = 0
    hi: int = -1
    block: bool = False
    once: bool = False
    parse: Parser | None = None
    ignored: bool = False


DIRECTIVES: dict[str, Spec] = {}


def structural(name: str, contexts: tuple[str, ...], lo: int, hi: int,
               block: bool = False) -> None:
    DIRECTIVES[name] = Spec(name, frozenset(contexts), lo, hi, block)


def ignored(contexts: tuple[str, ...], *names: str) -> None:
    for name in names:
        DIRECTIVES[name] = Spec(name, frozenset(contexts), ignored=True)


def setting(name: str, contexts: tuple[str, ...], lo: int, hi: int, *, once: bool = False,
            block: bool = False) -> Callable[[Parser], Parser]:
    """Register ``name`` with the decorated function as its parser."""
    def register(parse: Parser) -> Parser:
        DIRECTIVES[name] = Spec(name, frozenset(contexts), lo, hi, block, once, parse)
        return parse
    return register


# -- values ------------------------------------------------------------------------------------


# nginx's numbers are C integers: larger values are refused, not wrapped
INT_MAX = (1 << 63) - 1


def time_value(value: str, d: Directive) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    ms = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}
    if not m or int(m.group(1)) * ms[m.group(2)] > INT_MAX:
        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
    return int(m.group(1)) * ms[m.group(2)] / 1000


def size_value(value: str, d: Directive) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    if not m:
        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
    scale = {"k": 1024, "m": 1 << 20, "g": 1 << 30, None: 1}[(m.group(2) or "").lower() or None]
    if int(m.group(1)) * scale > INT_MAX:
        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
    return int(m.group(1)) * scale


def int_value(value: str, d: Directive) -> int:
    if not value.isdigit() or int(value) > INT_MAX:
        raise ConfigError(f'invalid value "{value}" in "{d.name}" directive', d.file, d.line)
    return int(value)


def flag_value(value: str, d: Directive) -> bool:
    if value not in ("on", "off"):
        raise ConfigError(f'invalid value "{value}" in "{d.name}" directive, it must be "on" '
                          'or "off"', d.file, d.line)
    return value == "on"


# While a file is read: where variable names nobody declared yet go. ``set`` and regex
# captures declare names anywhere in the file, so, as nginx, unknown names are an error only
# once the whole file is read ("unknown "x" variable", without a line).
UNDECLARED: ContextVar[list[str] | None] = ContextVar("UNDECLARED", default=None)


def template(value: str, d: Directive) -> Template:
    pending = UNDECLARED.get()
    try:
        return compile_template(value, pending.append if pending is not None else None)
    except ValueError as e:
        raise ConfigError(str(e), d.file, d.line) from None


def pcre(pattern: str, d: Directive, flags: int = 0) -> re.Pattern[str]:
    """An nginx (PCRE) regex as Python's: named groups ``(?<name>`` become ``(?P<name>``."""
    py = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", pattern)
    try:
        return re.compile(py, flags)
    except re.error as e:
        msg = _PCRE_WORDS.get(e.msg, e.msg)
        # nginx shows where PCRE2 stopped, unless that is the end of the pattern
        pos = len(pattern) if e.msg.startswith("missing )") or e.pos is None else e.pos
        at = f' at "{pattern[pos:]}"' if pos < len(pattern) else ""
        raise ConfigError(f'pcre2_compile() failed: {msg} in "{pattern}"{at}',
                          d.file, d.line) from None


# Python's words for a bad regex where PCRE2's (nginx's) differ, for the commonest mistakes.
_PCRE_WORDS = {
    "missing ), unterminated subpattern": "missing closing parenthesis",
    "unbalanced parenthesis": "unmatched closing parenthesis",
    "nothing to repeat": "quantifier does not follow a repeatable item",
}


# -- the block structure: read by config where it occurs ----------------------------------------

structural("events", (MAIN,), 0, 0, True)
structural("http", (MAIN,), 0, 0, True)
structural("server", (HTTP,), 0, 0, True)
structural("location", (SERVER, LOCATION), 1, 2, True)
structural("upstream", (HTTP,), 1, 1, True)
structural("worker_processes", (MAIN,), 1, 1)
structural("include", ALL, 1, 1)
structural("listen", (SERVER,), 1, -1)
structural("server_name", (SERVER,), 1, -1)
structural("log_format", (HTTP,), 2, -1)
structural("map", (HTTP,), 2, 2, True)  # read by ``maps``
structural("keepalive", (UPSTREAM,), 1, 1)
structural("server@upstream", (UPSTREAM,), 1, -1)
structural("keepalive_requests@upstream", (UPSTREAM,), 1, 1)
structural("keepalive_timeout@upstream", (UPSTREAM,), 1, 1)
# The balancing methods (nginx's upstream modules; config reads them, balancer runs them).
structural("least_conn", (UPSTREAM,), 0, 0)
structural("ip_hash", (UPSTREAM,), 0, 0)
structural("hash", (UPSTREAM,), 1, 2)
structural("random", (UPSTREAM,), 0, 2)
# The rewrite module: read in order into a level's script by config (see rewrite_of).
structural("rewrite", SCRIPT, 2, 3)
structural("return", SCRIPT, 1, 2)
structural("set", SCRIPT, 2, 2)
structural("break", SCRIPT, 0, 0)
structural("if", (SERVER, LOCATION), 1, -1, True)

# Accepted and without effect here: performance knobs of nginx's own design whose absence a
# client cannot observe (buffers, sendfile, hash sizes), and process-management settings.
ignored((MAIN,), "user", "pid", "worker_rlimit_nofile", "pcre_jit", "daemon", "master_process")
ignored((EVENTS,), "worker_connections", "use", "multi_accept", "accept_mutex")
ignored(HSL, "sendfile", "tcp_nopush", "tcp_nodelay")
# gzip_*, ssl_*/proxy_ssl_* and stub_status have their rows in ``gzip``, ``tls`` and ``stats``.
# Dynamic modules: nginx's are built in here or not there at all (a notice says so at start).
structural("load_module", (MAIN,), 1, 1)
ignored((HTTP,), "types_hash_max_size", "types_hash_bucket_size",
        "server_names_hash_bucket_size", "server_names_hash_max_size")
ignored(HSL, "proxy_buffering", "proxy_buffers", "proxy_buffer_size", "proxy_busy_buffers_size",
        "proxy_request_buffering", "log_not_found", "client_body_buffer_size",
        "reset_timedout_connection", "open_file_cache", "charset")
ignored((HTTP, SERVER), "client_header_buffer_size")
ignored((UPSTREAM,), "zone")
# nginx's spool directories: bodies here stream instead of being spooled to them.
ignored(HSL, "client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path",
        "scgi_temp_path")


def rewrite_of(d: Directive) -> Rewrite:
    """``rewrite REGEX REPLACEMENT [FLAG]``; a level's rewrites are collected in order by
    ``config`` (they are not inherited: nginx runs a server's in its own phase and a
    location's once it is chosen)."""
    flag = d.args[2] if len(d.args) > 2 else ""
    if flag not in ("", "last", "break", "redirect", "permanent"):
        raise ConfigError(f'invalid parameter "{flag}"', d.file, d.line)
    return Rewrite(pcre(d.args[0], d), d.args[1], flag, d.file, d.line)


# -- settings, inherited http -> server -> location ---------------------------------------------


def _root_or_alias(lv: Level, d: Directive) -> None:
    other = "alias" if d.name == "root" else "root"
    if other in lv.seen:
        raise ConfigError(f'"{d.name}" directive is duplicate, "{other}" directive was '
                          'specified earlier', d.file, d.line)
    lv.s[d.name] = lv.reader.abspath(d.args[0])


setting("root", (*HSL, LIF), 1, 1, once=True)(_root_or_alias)
setting("alias", (LOCATION,), 1, 1, once=True)(_root_or_alias)


@setting("index", HSL, 1, -1)
def _index(lv: Level, d: Directive) -> None:
    lv.s["index"] = tuple(d.args)


@setting("proxy_pass", (LOCATION, LIF), 1, 1, once=True)
def _proxy_pass(lv: Level, d: Directive) -> None:
    lv.s["proxy_pass"] = d  # resolved by config once the location's kind is known


@setting("proxy_set_header", HSL, 2, 2)
def _proxy_set_header(lv: Level, d: Directive) -> None:
    lv.headers.append((d.args[0], template(d.args[1], d)))


@setting("add_header", (*HSL, LIF), 2, 3)
def _add_header(lv: Level, d: Directive) -> None:
    a = d.args
    if len(a) == 3 and a[2] != "always":
        raise ConfigError(f'invalid parameter "{a[2]}"', d.file, d.line)
    lv.add_header.append((a[0], template(a[1], d), len(a) == 3))


@setting("proxy_http_version", HSL, 1, 1, once=True)
def _proxy_http_version(lv: Level, d: Directive) -> None:
    if d.args[0] not in ("1.0", "1.1"):
        raise ConfigError(f'invalid value "{d.args[0]}"', d.file, d.line)
    lv.s["proxy_http_version"] = d.args[0]


def _time_setting(lv: Level, d: Directive) -> None:
    lv.s[d.name] = time_value(d.args[0], d)


for _name in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout",
              "client_body_timeout", "send_timeout"):
    setting(_name, HSL, 1, 1)(_time_setting)
setting("client_header_timeout", (HTTP, SERVER), 1, 1)(_time_setting)
setting("keepalive_timeout", HSL, 1, 2)(_time_setting)
setting("keepalive_time", HSL, 1, 1, once=True)(_time_setting)
setting("proxy_next_upstream_timeout", HSL, 1, 1, once=True)(_time_setting)


@setting("proxy_intercept_errors", HSL, 1, 1, once=True)
def _flag_setting(lv: Level, d: Directive) -> None:
    lv.s[d.name] = flag_value(d.args[0], d)


# nginx's smallest pool (ngx_pool_t and two large-block headers, 16-aligned on 64 bits)
MIN_POOL_SIZE, POOL_ALIGNMENT = 112, 16


@setting("connection_pool_size", (HTTP, SERVER), 1, 1, once=True)
def _connection_pool_size(lv: Level, d: Directive) -> None:
    """Checked as nginx checks it; the value has no use here (Python allocates per object)."""
    size = size_value(d.args[0], d)
    if size < MIN_POOL_SIZE:
        raise ConfigError(f"the pool size must be no less than {MIN_POOL_SIZE}", d.file, d.line)
    if size % POOL_ALIGNMENT:
        raise ConfigError(f"the pool size must be a multiple of {POOL_ALIGNMENT}",
                          d.file, d.line)
    lv.s[d.name] = size


def _int_setting(lv: Level, d: Directive) -> None:
    """nginx's number slots: a non-negative integer, else "directive invalid number"."""
    v = d.args[0]
    if not v.isdigit() or int(v) > INT_MAX:
        raise ConfigError(f'"{d.name}" directive invalid number', d.file, d.line)
    lv.s[d.name] = int(v)


setting("keepalive_requests", HSL, 1, 1)(_int_setting)
setting("proxy_next_upstream_tries", HSL, 1, 1, once=True)(_int_setting)

_NEXT_UPSTREAM = frozenset({
    "error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
    "http_403", "http_404", "http_429", "non_idempotent", "off"})


@setting("proxy_next_upstream", HSL, 1, -1)
def _proxy_next_upstream(lv: Level, d: Directive) -> None:
    for v in d.args:
        if v not in _NEXT_UPSTREAM:
            raise ConfigError(f'invalid value "{v}"', d.file, d.line)
    lv.s[d.name] = frozenset() if "off" in d.args else frozenset(d.args)


@setting("client_max_body_size", HSL, 1, 1, once=True)
def _client_max_body_size(lv: Level, d: Directive) -> None:
    lv.s[d.name] = size_value(d.args[0], d)


@setting("large_client_header_buffers", (HTTP, SERVER), 2, 2)
def _large_client_header_buffers(lv: Level, d: Directive) -> None:
    num, size = int_value(d.args[0], d), size_value(d.args[1], d)
    if num == 0 or size == 0:
        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
    lv.s[d.name] = (num, size)


@setting("access_log", (*HSL, LIF), 1, 3)
def _access_log(lv: Level, d: Directive) -> None:
    a = d.args
    if lv.logs is None:
        lv.logs = []
    if a[0] == "off":
        if len(a) > 1:
            raise ConfigError('invalid parameter "off"', d.file, d.line)
        return
    syslog = is_syslog(a[0])
    if syslog:  # checked (and its host resolved) now, kept as written: ``accesslog`` sends
        try:
            parse_syslog(a[0])
        except ValueError as e:
            raise ConfigError(str(e), d.file, d.line) from None
    fmt_name = a[1] if len(a) > 1 else "combined"
    formats = lv.reader.log_formats
    if fmt_name not in formats:
        raise ConfigError(f'unknown log format "{fmt_name}"', d.file, d.line)
    if len(a) > 2 and not a[2].startswith(("buffer=", "flush=", "if=")):
        raise ConfigError(f'invalid parameter "{a[2]}"', d.file, d.line)
    if syslog and len(a) > 2 and a[2].startswith(("buffer=", "flush=")):
        raise ConfigError("logs to syslog cannot be buffered", d.file, d.line)
    lv.logs.append(AccessLog(a[0] if syslog else lv.reader.abspath(a[0]), formats[fmt_name]))


@setting("default_type", HSL, 1, 1, once=True)
def _default_type(lv: Level, d: Directive) -> None:
    lv.s[d.name] = d.args[0]


@setting("server_tokens", HSL, 1, 1)
def _server_tokens(lv: Level, d: Directive) -> None:
    lv.s[d.name] = flag_value(d.args[0], d)


@setting("types", HSL, 0, 0, block=True)
def _types(lv: Level, d: Directive) -> None:
    assert d.block is not None
    types: dict[str, str] = {}
    for t in lv.reader.expand(d.block, TYPES):
        for ext in t.args:
            types[ext.lower()] = t.name
    lv.s["types"] = types


def return_of(d: Directive) -> Return:
    """``return CODE [TEXT]``, a step of its level's script (read in order by config)."""
    a = d.args
    code = int_value(a[0], d) if a[0].isdigit() else -1
    if not 0 <= code <= 999:
        raise ConfigError(f'invalid return code "{a[0]}"', d.file, d.line)
    return Return(code, template(a[1], d) if len(a) > 1 else None)


@setting("error_log", (MAIN, HTTP, SERVER, LOCATION), 1, 2)
def _error_log(lv: Level, d: Directive) -> None:
    if lv.context == HTTP:  # one error log per process here (main's, or http's)
        lv.reader.error_log(d)


@setting("error_page", (*HSL, LIF), 2, -1)
def _error_page(lv: Level, d: Directive) -> None:
    *codes, target = d.args
    response: int | None = None
    if codes and codes[-1].startswith("="):
        resp = codes.pop()[1:]
        if resp and not (resp.isdigit() and 100 <= int(resp) <= 599):
            raise ConfigError(f'invalid value "={resp}"', d.file, d.line)
        response = int(resp) if resp else -1
    if not codes:
        raise ConfigError('invalid number of arguments in "error_page" directive',
                          d.file, d.line)
    for c in codes:
        if not (c.isdigit() and 300 <= int(c) <= 599):
            raise ConfigError(f'value "{c}" must be between 300 and 599', d.file, d.line)
        lv.pages.append((int(c), template(target, d), response))


@setting("internal", (LOCATION,), 0, 0, once=True)
def _internal(lv: Level, d: Directive) -> None:
    """Inherited by nested locations, as nginx merges it (the check is ``routing.route``'s)."""
    lv.s["internal"] = True


@setting("try_files", (SERVER, LOCATION), 2, -1, once=True)
def _try_files(lv: Level, d: Directive) -> None:
    a = d.args
    last = a[-1]
    if last.startswith("="):
        code = int_value(last[1:], d) if last[1:].isdigit() else -1
        if not 0 <= code <= 999:
            raise ConfigError(f'invalid code "{last}"', d.file, d.line)
        fallback: Template | int = code
    else:  # a URI, or "@name": a named location
        fallback = template(last, d)
    lv.s["try_files"] = (tuple(template(x, d) for x in a[:-1]), fallback)


def _access(lv: Level, d: Directive) -> None:
    """``allow``/``deny``: a level's own lines, in order, replace its parent's as a whole (the
    first is met with "access" not yet in ``seen``)."""
    rules = access.parse(d.args[0], d.name == "deny")
    if rules is None:
        raise ConfigError(f'invalid parameter "{d.args[0]}"', d.file, d.line)
    if access.low_bits(d.args[0]):
        lv.reader.warnings.append(f"low address bits of {d.args[0]} are meaningless in "
                                  f"{d.file}:{d.line}")
    own = lv.s["access"] if "access" in lv.seen else ()
    lv.seen.add("access")
    lv.s["access"] = (*own, *rules)


setting("allow", HSL, 1, 1)(_access)
setting("deny", HSL, 1, 1)(_access)


@setting("expires", (*HSL, LIF), 1, 2, once=True)
def _expires(lv: Level, d: Directive) -> None:
    """``expires [modified] TIME|epoch|max|off|@HhMm``; nginx's errors are "directive" ones
    ("invalid value", the daily time's). A value with variables is read per response."""
    if len(d.args) == 2 and d.args[0] != "modified":
        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
    value = d.args[-1]
    if "$" in value:  # read per response (``expires.ExpiresVar``)
        lv.s[d.name] = expires.ExpiresVar(template(value, d), len(d.args) == 2)
        return
    parsed = expires.parse(value, len(d.args) == 2)
    if isinstance(parsed, str):
        raise ConfigError(f'"{d.name}" directive {parsed}', d.file, d.line)
    lv.s[d.name] = parsed


def read_settings(reader: Reader, parent: dict[str, Any], block: list[Directive],
                  context: str) -> dict[str, Any]:
    """A level's settings: its parent's, with each of its own setting directives applied in
    order (a duplicate of a once-per-level one is nginx's "is duplicate" error)."""
    lv = Level(reader, parent, context)
    for d in block:
        spec = DIRECTIVES.get(d.name)
        if spec is None or spec.parse is None:
            continue
        if spec.once:
            if d.name in lv.seen:
                raise ConfigError(f'"{d.name}" directive is duplicate', d.file, d.line)
            lv.seen.add(d.name)
        spec.parse(lv, d)
    return lv.settings()
