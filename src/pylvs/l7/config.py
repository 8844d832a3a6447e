"""nginx configuration syntax, read into immutable dataclasses the proxy runs from.

Why its own reader: operators bring the nginx.conf they already have (the seed's upstream and
``location ~ .*.jsp$`` blocks), and ``pylvs http -t`` must reject what nginx rejects with the same
words and the same ``file:line``. Directives are checked against the contexts nginx allows them in
and their argument counts; values inherit http -> server -> location as nginx merges them
(``proxy_set_header`` only when a level defines none of its own).

Not for: the directives the proxy does not implement (ssl, rewrite, fastcgi...): they are refused
as unknown rather than silently ignored, except the tuning knobs listed in ``_IGNORED`` whose
absence changes no behaviour a client can see.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

from pylvs.l7.variables import Template, compile_template


class ConfigError(Exception):
    """A configuration error, worded like nginx's ``[emerg]`` messages."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        where = f" in {file}:{line}" if file is not None and line is not None else ""
        super().__init__(f"{message}{where}")


# ---------------------------------------------------------------------------------------------
# Tokens and the directive tree
# ---------------------------------------------------------------------------------------------


@dataclass
class Directive:
    name: str
    args: list[str]
    file: str
    line: int
    block: list[Directive] | None = None


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def _tokenize(text: str, file: str) -> list[tuple[str, int, bool]]:
    """Split into (token, line, quoted); ``{`` ``}`` ``;`` are their own unquoted tokens."""
    tokens: list[tuple[str, int, bool]] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            tokens.append((c, line, False))
            i += 1
        elif c in "\"'":
            quote, start_line = c, line
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ConfigError('unexpected end of file, expecting ";" or "}"', file, line)
                ch = text[i]
                if ch == "\\" and i + 1 < n and text[i + 1] in _ESCAPES:
                    buf.append(_ESCAPES[text[i + 1]])
                    i += 2
                    continue
                if ch == quote:
                    i += 1
                    break
                if ch == "\n":
                    line += 1
                buf.append(ch)
                i += 1
            if i < n and text[i] not in " \t\r\n;{}":
                raise ConfigError(f'unexpected "{text[i]}"', file, line)
            tokens.append(("".join(buf), start_line, True))
        else:
            start = i
            while i < n and text[i] not in " \t\r\n;{}\"'":
                if text[i] == "$" and i + 1 < n and text[i + 1] == "{":
                    close = text.find("}", i)
                    if close < 0:
                        raise ConfigError("unexpected end of file", file, line)
                    i = close + 1
                    continue
                i += 1
            tokens.append((text[start:i], line, False))
    return tokens


def _parse_block(
    tokens: list[tuple[str, int, bool]], pos: int, file: str, top: bool, eof_line: int
) -> tuple[list[Directive], int]:
    """Directives up to the matching ``}``; nginx reports end-of-file errors at ``eof_line``."""
    out: list[Directive] = []
    words: list[str] = []
    last_line = eof_line
    while pos < len(tokens):
        tok, line, quoted = tokens[pos]
        pos += 1
        if not quoted and tok == ";":
            if not words:
                raise ConfigError('unexpected ";"', file, line)
            out.append(Directive(words[0], words[1:], file, line))
            words = []
        elif not quoted and tok == "{":
            if not words:
                raise ConfigError('unexpected "{"', file, line)
            d = Directive(words[0], words[1:], file, line, [])
            words = []
            d.block, pos = _parse_block(tokens, pos, file, False, eof_line)
            out.append(d)
        elif not quoted and tok == "}":
            if words:
                raise ConfigError('unexpected "}"', file, line)
            if top:
                raise ConfigError('unexpected "}"', file, line)
            return out, pos
        else:
            words.append(tok)
    if words:
        raise ConfigError('unexpected end of file, expecting ";" or "}"', file, last_line)
    if not top:
        raise ConfigError('unexpected end of file, expecting "}"', file, last_line)
    return out, pos


def _read_tree(path: str) -> list[Directive]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f'open() "{path}" failed ({e.errno}: {e.strerror})') from None
    except UnicodeDecodeError:
        raise ConfigError(f'"{path}" is not UTF-8 text') from None
    tokens = _tokenize(text, path)
    tree, _ = _parse_block(tokens, 0, path, True, text.count("\n") + 1)
    return tree


# ---------------------------------------------------------------------------------------------
# The typed result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamServer:
    host: str
    port: int
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    servers: tuple[UpstreamServer, ...]
    keepalive: int = 0
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000
    implicit: bool = False  # made from ``proxy_pass http://host:port`` without an upstream block


@dataclass(frozen=True)
class ProxyPass:
    upstream: str  # name of an UpstreamConfig
    uri: str | None  # the URI part of proxy_pass, None when it has none
    proxy_host: str  # value of $proxy_host


@dataclass(frozen=True)
class AccessLog:
    path: str
    format: Template


@dataclass(frozen=True)
class Return:
    code: int
    text: Template | None


@dataclass(frozen=True)
class Rewrite:
    """``rewrite REGEX REPLACEMENT [last|break|redirect|permanent]``."""

    regex: re.Pattern[str]
    replacement: str
    flag: str  # "" (go on with the next rewrite), "last", "break", "redirect", "permanent"
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Location:
    modifier: str  # "", "=", "^~", "~", "~*"
    pattern: str
    regex: re.Pattern[str] | None
    root: str
    index: tuple[str, ...]
    proxy_pass: ProxyPass | None
    proxy_set_header: tuple[tuple[str, Template], ...]
    proxy_http_version: str
    proxy_connect_timeout: float
    proxy_read_timeout: float
    proxy_send_timeout: float
    proxy_next_upstream: frozenset[str]
    proxy_next_upstream_tries: int
    client_max_body_size: int
    client_body_timeout: float
    send_timeout: float
    keepalive_timeout: float
    keepalive_requests: int
    access_log: tuple[AccessLog, ...]
    types: dict[str, str]
    default_type: str
    server_tokens: bool
    ret: Return | None
    add_header: tuple[tuple[str, Template, bool], ...] = ()  # (name, value, always)
    alias: str | None = None  # replaces the matched prefix (root is then not used)
    # try_files: the files to try in order (a trailing / means a directory), then the fallback:
    # a URI to redirect to internally, or =CODE
    try_files: tuple[tuple[Template, ...], Template | int] | None = None
    # error_page: (status, target, response) where response is None (keep the error's status),
    # a status ("=200") or -1 ("=": whatever the target answers)
    error_pages: tuple[tuple[int, Template, int | None], ...] = ()
    rewrites: tuple[Rewrite, ...] = ()  # this location's own, in order
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    default_server: bool = False


@dataclass(frozen=True)
class Server:
    listens: tuple[Listen, ...]
    server_names: tuple[str, ...]
    locations: tuple[Location, ...]
    fallback: Location  # what a URI matching no location gets (root/index of the server)
    client_header_timeout: float
    large_header_buffers: tuple[int, int]
    keepalive_timeout: float
    rewrites: tuple[Rewrite, ...] = ()  # the server level's, run before a location is chosen


@dataclass(frozen=True)
class Config:
    path: str
    servers: tuple[Server, ...]
    upstreams: dict[str, UpstreamConfig]
    error_log: str | None  # None = stderr
    error_level: str
    worker_processes: int = 1


# ---------------------------------------------------------------------------------------------
# Directive table
# ---------------------------------------------------------------------------------------------

MAIN, EVENTS, HTTP, SERVER, LOCATION, UPSTREAM, TYPES = (
    "main", "events", "http", "server", "location", "upstream", "types")

# name -> (contexts, min args, max args or -1 for unbounded, takes a block)
_DIRECTIVES: dict[str, tuple[frozenset[str], int, int, bool]] = {}


def _d(name: str, contexts: tuple[str, ...], lo: int, hi: int, block: bool = False) -> None:
    _DIRECTIVES[name] = (frozenset(contexts), lo, hi, block)


HSL = (HTTP, SERVER, LOCATION)
_d("events", (MAIN,), 0, 0, True)
_d("http", (MAIN,), 0, 0, True)
_d("server", (HTTP,), 0, 0, True)
_d("location", (SERVER,), 1, 2, True)
_d("upstream", (HTTP,), 1, 1, True)
_d("types", HSL, 0, 0, True)
_d("worker_processes", (MAIN,), 1, 1)
_d("error_log", (MAIN, HTTP, SERVER, LOCATION), 1, 2)
_d("include", (MAIN, EVENTS, HTTP, SERVER, LOCATION, UPSTREAM, TYPES), 1, 1)
_d("listen", (SERVER,), 1, -1)
_d("server_name", (SERVER,), 1, -1)
_d("root", HSL, 1, 1)
_d("alias", (LOCATION,), 1, 1)
_d("try_files", (SERVER, LOCATION), 2, -1)
_d("error_page", HSL, 2, -1)
_d("rewrite", (SERVER, LOCATION), 2, 3)
_d("index", HSL, 1, -1)
_d("proxy_pass", (LOCATION,), 1, 1)
_d("proxy_set_header", HSL, 2, 2)
_d("add_header", HSL, 2, 3)
_d("proxy_http_version", HSL, 1, 1)
_d("proxy_connect_timeout", HSL, 1, 1)
_d("proxy_read_timeout", HSL, 1, 1)
_d("proxy_send_timeout", HSL, 1, 1)
_d("proxy_next_upstream", HSL, 1, -1)
_d("proxy_next_upstream_tries", HSL, 1, 1)
_d("client_max_body_size", HSL, 1, 1)
_d("client_body_timeout", HSL, 1, 1)
_d("client_header_timeout", (HTTP, SERVER), 1, 1)
_d("large_client_header_buffers", (HTTP, SERVER), 2, 2)
_d("send_timeout", HSL, 1, 1)
_d("keepalive_timeout", HSL, 1, 2)
_d("keepalive_requests", HSL, 1, 1)
_d("access_log", HSL, 1, 3)
_d("log_format", (HTTP,), 2, -1)
_d("default_type", HSL, 1, 1)
_d("server_tokens", HSL, 1, 1)
_d("return", (SERVER, LOCATION), 1, 2)
_d("keepalive", (UPSTREAM,), 1, 1)
_d("server@upstream", (UPSTREAM,), 1, -1)
_d("keepalive_requests@upstream", (UPSTREAM,), 1, 1)
_d("keepalive_timeout@upstream", (UPSTREAM,), 1, 1)
_UPSTREAM_OWN = ("server", "keepalive_requests", "keepalive_timeout")

# Accepted and without effect here: performance knobs of nginx's own design whose absence a client
# cannot observe (buffers, sendfile, hash sizes), and process-management settings.
_IGNORED: dict[str, tuple[str, ...]] = {
    "user": (MAIN,), "pid": (MAIN,), "worker_rlimit_nofile": (MAIN,), "pcre_jit": (MAIN,),
    "daemon": (MAIN,), "master_process": (MAIN,),
    "worker_connections": (EVENTS,), "use": (EVENTS,), "multi_accept": (EVENTS,),
    "accept_mutex": (EVENTS,),
    "sendfile": HSL, "tcp_nopush": HSL, "tcp_nodelay": HSL,
    # gzip is accepted so stock configs load; responses then go uncompressed, which every
    # client accepts (it only changes Content-Encoding and size).
    "gzip": HSL, "gzip_types": HSL, "gzip_vary": HSL, "gzip_proxied": HSL,
    "gzip_comp_level": HSL, "gzip_min_length": HSL,
    "types_hash_max_size": (HTTP,), "types_hash_bucket_size": (HTTP,),
    "server_names_hash_bucket_size": (HTTP,), "server_names_hash_max_size": (HTTP,),
    "proxy_buffering": HSL, "proxy_buffers": HSL, "proxy_buffer_size": HSL,
    "proxy_busy_buffers_size": HSL, "proxy_request_buffering": HSL, "log_not_found": HSL,
    "client_body_buffer_size": HSL, "client_header_buffer_size": (HTTP, SERVER),
    "reset_timedout_connection": HSL, "open_file_cache": HSL, "charset": HSL,
    "zone": (UPSTREAM,),
    # nginx's spool directories: bodies here stream instead of being spooled to them.
    "client_body_temp_path": (HTTP, SERVER, LOCATION), "proxy_temp_path": (HTTP, SERVER, LOCATION),
    "fastcgi_temp_path": (HTTP, SERVER, LOCATION), "uwsgi_temp_path": (HTTP, SERVER, LOCATION),
    "scgi_temp_path": (HTTP, SERVER, LOCATION),
}

_DEFAULT_TYPES = {"html": "text/html", "gif": "image/gif", "jpg": "image/jpeg"}

COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)


def _time(value: str, d: Directive) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    if not m:
        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    return int(m.group(1)) * scale


def _size(value: str, d: Directive) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    if not m:
        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
    scale = {"k": 1024, "m": 1 << 20, "g": 1 << 30, None: 1}[(m.group(2) or "").lower() or None]
    return int(m.group(1)) * scale


def _int(value: str, d: Directive) -> int:
    if not value.isdigit():
        raise ConfigError(f'invalid value "{value}" in "{d.name}" directive', d.file, d.line)
    return int(value)


def _flag(value: str, d: Directive) -> bool:
    if value not in ("on", "off"):
        raise ConfigError(f'invalid value "{value}"', d.file, d.line)
    return value == "on"


def _template(value: str, d: Directive) -> Template:
    try:
        return compile_template(value)
    except ValueError as e:
        raise ConfigError(str(e), d.file, d.line) from None


def _rewrites(block: list[Directive]) -> tuple[Rewrite, ...]:
    """The rewrite directives of one level (not inherited: nginx runs a server's in its own
    phase and a location's once it is chosen)."""
    out = []
    for d in block:
        if d.name != "rewrite":
            continue
        flag = d.args[2] if len(d.args) > 2 else ""
        if flag not in ("", "last", "break", "redirect", "permanent"):
            raise ConfigError(f'invalid parameter "{flag}"', d.file, d.line)
        py = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", d.args[0])
        try:
            regex = re.compile(py)
        except re.error as e:
            raise ConfigError(f'pcre2_compile() failed: {e.msg} in "{d.args[0]}"',
                              d.file, d.line) from None
        out.append(Rewrite(regex, d.args[1], flag, d.file, d.line))
    return tuple(out)


def _host_port(text: str, d: Directive, what: str, default_port: int | None) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text)
    if not m or not (m.group(1) or m.group(3)):
        raise ConfigError(f'invalid host in {what} "{text}"', d.file, d.line)
    host = m.group(1) or m.group(3)
    port_s = m.group(2) or m.group(4)
    if port_s is None:
        if default_port is None:
            raise ConfigError(f'no port in {what} "{text}"', d.file, d.line)
        return host, default_port
    port = int(port_s)
    if not 0 < port < 65536:
        raise ConfigError(f'invalid port in {what} "{text}"', d.file, d.line)
    return host, port


def _resolve(host: str, port: int, d: Directive, what: str, text: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ConfigError(f'host not found in {what} "{text}"', d.file, d.line) from None
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.prefix = os.path.dirname(self.path)
        self.upstreams: dict[str, UpstreamConfig] = {}
        self.upstream_lines: dict[str, tuple[str, int]] = {}
        self.log_formats: dict[str, Template] = {"combined": _template(COMBINED, Directive("log_format", [], "", 0))}
        self.error_log: str | None = None
        self.error_level = "error"
        self.worker_processes = 1

    def _abspath(self, p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(self.prefix, p)

    def expand(self, block: list[Directive], context: str) -> list[Directive]:
        """Check each directive is known and allowed here, and splice ``include`` in place."""
        out: list[Directive] = []
        for d in block:
            key = d.name
            if context == UPSTREAM and d.name in _UPSTREAM_OWN:
                key = f"{d.name}@upstream"  # same name, another meaning inside upstream {}
            if key in _IGNORED:
                if context not in _IGNORED[key]:
                    raise ConfigError(f'"{d.name}" directive is not allowed here', d.file, d.line)
                if d.block is not None:
                    raise ConfigError(f'directive "{d.name}" is not terminated by ";"',
                                      d.file, d.line)
                continue
            if context == TYPES:
                if d.block is not None:
                    raise ConfigError('unexpected "{"', d.file, d.line)
                if d.name == "include":
                    out.extend(self.expand(self._include(d), context))
                else:
                    out.append(d)
                continue
            spec = _DIRECTIVES.get(key)
            if spec is None:
                raise ConfigError(f'unknown directive "{d.name}"', d.file, d.line)
            contexts, lo, hi, takes_block = spec
            if context not in contexts:
                raise ConfigError(f'"{d.name}" directive is not allowed here', d.file, d.line)
            if takes_block and d.block is None:
                raise ConfigError(f'directive "{d.name}" has no opening "{{"', d.file, d.line)
            if not takes_block and d.block is not None:
                raise ConfigError(f'directive "{d.name}" is not terminated by ";"', d.file, d.line)
            if len(d.args) < lo or (hi >= 0 and len(d.args) > hi):
                raise ConfigError(
                    f'invalid number of arguments in "{d.name}" directive', d.file, d.line)
            if d.name == "include":
                out.extend(self.expand(self._include(d), context))
            else:
                out.append(d)
        return out

    def _include(self, d: Directive) -> list[Directive]:
        pattern = self._abspath(d.args[0])
        if glob.has_magic(pattern):
            paths = sorted(glob.glob(pattern))
        else:
            if not os.path.exists(pattern):
                raise ConfigError(
                    f'open() "{pattern}" failed (2: No such file or directory)', d.file, d.line)
            paths = [pattern]
        out: list[Directive] = []
        for p in paths:
            out.extend(_read_tree(p))
        return out

    # -- main ------------------------------------------------------------------------------

    def build(self) -> Config:
        tree = self.expand(_read_tree(self.path), MAIN)
        http_blocks: list[Directive] = []
        for d in tree:
            if d.name == "worker_processes":
                if d.args[0] == "auto":
                    self.worker_processes = os.cpu_count() or 1
                else:
                    self.worker_processes = _int(d.args[0], d)
            elif d.name == "error_log":
                self._error_log(d)
            elif d.name == "events":
                assert d.block is not None
                self.expand(d.block, EVENTS)
            elif d.name == "http":
                if http_blocks:
                    raise ConfigError('"http" directive is duplicate', d.file, d.line)
                http_blocks.append(d)
        if not http_blocks:
            raise ConfigError(f'no "http" section in configuration {self.path}')
        servers = self._http(http_blocks[0])
        return Config(self.path, servers, self.upstreams, self.error_log, self.error_level,
                      self.worker_processes)

    def _error_log(self, d: Directive) -> None:
        target = d.args[0]
        if target == "stderr":
            self.error_log = None
        elif target.startswith("syslog:"):
            raise ConfigError('"error_log" to syslog is not supported', d.file, d.line)
        else:
            self.error_log = self._abspath(target)
        if len(d.args) == 2:
            levels = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
            if d.args[1] not in levels:
                raise ConfigError(f'invalid log level "{d.args[1]}"', d.file, d.line)
            self.error_level = d.args[1]

    def _http(self, http: Directive) -> tuple[Server, ...]:
        assert http.block is not None
        block = self.expand(http.block, HTTP)
        for d in block:
            if d.name == "upstream":
                self._upstream(d)
            elif d.name == "log_format":
                name = d.args[0]
                if (name in self.log_formats and name != "combined") or name == "combined":
                    if name == "combined":
                        raise ConfigError('duplicate "log_format" name "combined"', d.file, d.line)
                    raise ConfigError(f'duplicate "log_format" name "{name}"', d.file, d.line)
                self.log_formats[name] = _template("".join(d.args[1:]), d)
        settings = self._settings({}, block, HTTP)
        servers = [self._server(d, settings) for d in block if d.name == "server"]
        return tuple(servers)

    def _upstream(self, d: Directive) -> None:
        name = d.args[0]
        if name in self.upstreams:
            raise ConfigError(f'duplicate upstream "{name}"', d.file, d.line)
        assert d.block is not None
        block = self.expand(d.block, UPSTREAM)
        servers: list[UpstreamServer] = []
        keepalive, ka_requests, ka_timeout = 0, 1000, 60.0
        for s in block:
            if s.name == "keepalive":
                keepalive = _int(s.args[0], s)
                if keepalive == 0:
                    raise ConfigError(f'invalid value "{s.args[0]}" in "keepalive" directive',
                                      s.file, s.line)
            elif s.name == "keepalive_requests":
                ka_requests = _int(s.args[0], s)
            elif s.name == "keepalive_timeout":
                ka_timeout = _time(s.args[0], s)
            elif s.name == "server":
                servers.extend(self._upstream_server(s))
        if not servers:
            raise ConfigError("no servers are inside upstream", d.file, d.line)
        if all(s.backup for s in servers):
            raise ConfigError("no servers are inside upstream", d.file, d.line)
        self.upstreams[name] = UpstreamConfig(name, tuple(servers), keepalive, ka_timeout,
                                              ka_requests)

    def _upstream_server(self, d: Directive) -> list[UpstreamServer]:
        text = d.args[0]
        host, port = _host_port(text, d, "upstream", 80)
        opts: dict[str, Any] = {}
        for a in d.args[1:]:
            key, _, val = a.partition("=")
            if key == "weight" and val:
                w = _int(val, d) if val.isdigit() else -1
                if w <= 0:
                    raise ConfigError(f'invalid parameter "{a}"', d.file, d.line)
                opts["weight"] = w
            elif key == "max_fails" and val.isdigit():
                opts["max_fails"] = int(val)
            elif key == "fail_timeout" and val:
                try:
                    opts["fail_timeout"] = _time(val, d)
                except ConfigError:
                    raise ConfigError(f'invalid parameter "{a}"', d.file, d.line) from None
            elif a == "backup":
                opts["backup"] = True
            elif a == "down":
                opts["down"] = True
            else:
                raise ConfigError(f'invalid parameter "{a}"', d.file, d.line)
        return [UpstreamServer(addr, port, **opts)
                for addr in _resolve(host, port, d, "upstream", text)]

    # -- inheritable settings -------------------------------------------------------------------

    def _settings(self, parent: dict[str, Any], block: list[Directive], ctx: str) -> dict[str, Any]:
        s = dict(parent)
        own_headers: list[tuple[str, Template]] = []
        own_add: list[tuple[str, Template, bool]] = []
        own_logs: list[AccessLog] | None = None
        own_pages: list[tuple[int, Template, int | None]] = []
        seen: set[str] = set()

        def once(d: Directive) -> None:
            if d.name in seen:
                raise ConfigError(f'"{d.name}" directive is duplicate', d.file, d.line)
            seen.add(d.name)

        for d in block:
            n, a = d.name, d.args
            if n in ("root", "proxy_http_version", "default_type", "proxy_pass",
                     "client_max_body_size", "proxy_next_upstream_tries"):
                once(d)
            if n in ("root", "alias") and {"root", "alias"} & seen - {n}:
                other = ({"root", "alias"} - {n}).pop()
                raise ConfigError(f'"{n}" directive is duplicate, "{other}" directive was '
                                  'specified earlier', d.file, d.line)
            if n == "alias":
                once(d)
                s["alias"] = self._abspath(a[0])
            elif n == "root":
                s["root"] = self._abspath(a[0])
            elif n == "index":
                s["index"] = tuple(a)
            elif n == "proxy_set_header":
                own_headers.append((a[0], _template(a[1], d)))
            elif n == "add_header":
                if len(a) == 3 and a[2] != "always":
                    raise ConfigError(f'invalid parameter "{a[2]}"', d.file, d.line)
                own_add.append((a[0], _template(a[1], d), len(a) == 3))
            elif n == "proxy_http_version":
                if a[0] not in ("1.0", "1.1"):
                    raise ConfigError(f'invalid value "{a[0]}"', d.file, d.line)
                s["proxy_http_version"] = a[0]
            elif n in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout",
                       "client_body_timeout", "client_header_timeout", "send_timeout") or n == "keepalive_timeout":
                s[n] = _time(a[0], d)
            elif n == "keepalive_requests":
                s[n] = _int(a[0], d)
            elif n == "proxy_next_upstream":
                allowed = {"error", "timeout", "invalid_header", "http_500", "http_502",
                           "http_503", "http_504", "http_403", "http_404", "http_429",
                           "non_idempotent", "off"}
                for v in a:
                    if v not in allowed:
                        raise ConfigError(f'invalid value "{v}"', d.file, d.line)
                s[n] = frozenset() if "off" in a else frozenset(a)
            elif n == "proxy_next_upstream_tries":
                s[n] = _int(a[0], d)
            elif n == "client_max_body_size":
                s[n] = _size(a[0], d)
            elif n == "large_client_header_buffers":
                s[n] = (_int(a[0], d), _size(a[1], d))
            elif n == "access_log":
                if own_logs is None:
                    own_logs = []
                if a[0] == "off":
                    if len(a) > 1:
                        raise ConfigError('invalid parameter "off"', d.file, d.line)
                    continue
                fmt_name = a[1] if len(a) > 1 else "combined"
                if fmt_name not in self.log_formats:
                    raise ConfigError(f'unknown log format "{fmt_name}"', d.file, d.line)
                if len(a) > 2 and not a[2].startswith(("buffer=", "flush=", "if=")):
                    raise ConfigError(f'invalid parameter "{a[2]}"', d.file, d.line)
                own_logs.append(AccessLog(self._abspath(a[0]), self.log_formats[fmt_name]))
            elif n == "default_type":
                s[n] = a[0]
            elif n == "server_tokens":
                s[n] = _flag(a[0], d)
            elif n == "types":
                assert d.block is not None
                types: dict[str, str] = {}
                for t in self.expand(d.block, TYPES):
                    for ext in t.args:
                        types[ext.lower()] = t.name
                s["types"] = types
            elif n == "return":
                code = _int(a[0], d) if a[0].isdigit() else -1
                if not 0 <= code <= 999:
                    raise ConfigError(f'invalid return code "{a[0]}"', d.file, d.line)
                s["return"] = Return(code, _template(a[1], d) if len(a) > 1 else None)
            elif n == "error_log":
                if ctx == HTTP:
                    self._error_log(d)
            elif n == "proxy_pass":
                s["proxy_pass"] = d
            elif n == "error_page":
                *codes, target = a
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
                        raise ConfigError(f'value "{c}" must be between 300 and 599',
                                          d.file, d.line)
                    own_pages.append((int(c), _template(target, d), response))
            elif n == "try_files":
                once(d)
                last = a[-1]
                if last.startswith("="):
                    code = _int(last[1:], d) if last[1:].isdigit() else -1
                    if not 0 <= code <= 999:
                        raise ConfigError(f'invalid code "{last}"', d.file, d.line)
                    fallback: Template | int = code
                elif last.startswith("@"):
                    raise ConfigError("named locations (@name) are not supported", d.file, d.line)
                else:
                    fallback = _template(last, d)
                s["try_files"] = (tuple(_template(x, d) for x in a[:-1]), fallback)
        if own_headers:
            s["proxy_set_header"] = tuple(own_headers)
        if own_add:
            s["add_header"] = tuple(own_add)
        if own_logs is not None:
            s["access_log"] = tuple(own_logs)
        if own_pages:  # as nginx: a level's own error_page lines replace the inherited ones
            s["error_pages"] = tuple(own_pages)
        return s

    def _server(self, d: Directive, http: dict[str, Any]) -> Server:
        assert d.block is not None
        block = self.expand(d.block, SERVER)
        listens: list[Listen] = []
        names: list[str] = []
        for x in block:
            if x.name == "listen":
                listens.append(self._listen(x))
            elif x.name == "server_name":
                names.extend(n.lower() for n in x.args)
        if not listens:
            listens.append(Listen("0.0.0.0", 80))
        s = self._settings(http, block, SERVER)
        s.pop("proxy_pass", None)
        locations: list[Location] = []
        seen: set[tuple[str, str]] = set()
        for x in block:
            if x.name != "location":
                continue
            loc = self._location(x, s)
            key = (loc.modifier if loc.modifier in ("~", "~*") else "", loc.pattern)
            if loc.modifier == "=":
                key = ("=", loc.pattern)
            if key in seen:
                raise ConfigError(f'duplicate location "{loc.pattern}"', x.file, x.line)
            seen.add(key)
            locations.append(loc)
        fallback = self._make_location("", "", None, s, d)
        return Server(
            tuple(listens), tuple(names or [""]), tuple(locations), fallback,
            float(s.get("client_header_timeout", 60.0)),
            s.get("large_client_header_buffers", (4, 8192)),
            float(s.get("keepalive_timeout", 75.0)),
            _rewrites(block),
        )

    def _listen(self, d: Directive) -> Listen:
        text = d.args[0]
        default = False
        for a in d.args[1:]:
            if a in ("default_server", "default"):
                default = True
            elif a in ("reuseport", "deferred", "bind") or a.startswith(("backlog=", "rcvbuf=", "sndbuf=")):
                pass
            else:
                raise ConfigError(f'invalid parameter "{a}"', d.file, d.line)
        if text.isdigit():
            port = int(text)
            if not 0 < port < 65536:
                raise ConfigError(f'invalid port in "{text}" of the "listen" directive', d.file, d.line)
            return Listen("0.0.0.0", port, default)
        if text.startswith("unix:"):
            raise ConfigError("unix sockets are not supported in \"listen\"", d.file, d.line)
        host, port = _host_port(text, d, "\"listen\" of", 80)
        if host == "*":
            host = "0.0.0.0"
        elif host == "localhost":
            host = "127.0.0.1"
        return Listen(host, port, default)

    def _location(self, d: Directive, server: dict[str, Any]) -> Location:
        a = d.args
        if len(a) == 2:
            modifier, pattern = a
            if modifier not in ("=", "^~", "~", "~*"):
                raise ConfigError(f'invalid location modifier "{modifier}"', d.file, d.line)
        else:
            modifier, pattern = "", a[0]
            if pattern.startswith("="):
                modifier, pattern = "=", pattern[1:]
            elif pattern.startswith("^~"):
                modifier, pattern = "^~", pattern[2:]
            elif pattern.startswith("~*"):
                modifier, pattern = "~*", pattern[2:]
            elif pattern.startswith("~"):
                modifier, pattern = "~", pattern[1:]
            elif pattern.startswith("@"):
                raise ConfigError("named locations are not supported", d.file, d.line)
        regex = None
        if modifier in ("~", "~*"):
            py = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", pattern)
            try:
                regex = re.compile(py, re.IGNORECASE if modifier == "~*" else 0)
            except re.error as e:
                raise ConfigError(
                    f'pcre2_compile() failed: {e.msg} in "{pattern}"',
                    d.file, d.line) from None
        assert d.block is not None
        block = self.expand(d.block, LOCATION)
        for x in block:
            if x.name == "location":
                raise ConfigError("nested locations are not supported", x.file, x.line)
        s = self._settings(server, block, LOCATION)
        return dataclasses.replace(self._make_location(modifier, pattern, regex, s, d),
                                   rewrites=_rewrites(block))

    def _make_location(self, modifier: str, pattern: str, regex: re.Pattern[str] | None,
                       s: dict[str, Any], d: Directive) -> Location:
        pp: ProxyPass | None = None
        ppd = s.get("proxy_pass")
        if isinstance(ppd, Directive):
            pp = self._proxy_pass(ppd, regex is not None)
        default_headers = (("Host", _template("$proxy_host", d)),
                           ("Connection", _template("close", d)))
        headers: tuple[tuple[str, Template], ...] = s.get("proxy_set_header", ())
        merged: dict[str, tuple[str, Template]] = {k.lower(): (k, v) for k, v in default_headers}
        for k, v in headers:
            merged[k.lower()] = (k, v)
        return Location(
            modifier=modifier,
            pattern=pattern,
            regex=regex,
            root=s.get("root", self._abspath("html")),
            index=s.get("index", ("index.html",)),
            proxy_pass=pp,
            proxy_set_header=tuple(merged.values()),
            proxy_http_version=s.get("proxy_http_version", "1.0"),
            proxy_connect_timeout=float(s.get("proxy_connect_timeout", 60.0)),
            proxy_read_timeout=float(s.get("proxy_read_timeout", 60.0)),
            proxy_send_timeout=float(s.get("proxy_send_timeout", 60.0)),
            proxy_next_upstream=s.get("proxy_next_upstream", frozenset({"error", "timeout"})),
            proxy_next_upstream_tries=s.get("proxy_next_upstream_tries", 0),
            client_max_body_size=s.get("client_max_body_size", 1 << 20),
            client_body_timeout=float(s.get("client_body_timeout", 60.0)),
            send_timeout=float(s.get("send_timeout", 60.0)),
            keepalive_timeout=float(s.get("keepalive_timeout", 75.0)),
            keepalive_requests=s.get("keepalive_requests", 1000),
            access_log=s.get("access_log", ()),
            types=s.get("types", _DEFAULT_TYPES),
            default_type=s.get("default_type", "text/plain"),
            server_tokens=s.get("server_tokens", True),
            ret=s.get("return"),
            add_header=s.get("add_header", ()),
            alias=self._alias(s, regex, d),
            try_files=s.get("try_files"),
            error_pages=s.get("error_pages", ()),
            file=d.file,
            line=d.line,
        )

    @staticmethod
    def _alias(s: dict[str, Any], regex: re.Pattern[str] | None, d: Directive) -> str | None:
        alias: str | None = s.get("alias")
        if alias is not None and regex is not None:
            # nginx substitutes the regex's captures into such an alias; pylvs does not
            raise ConfigError('"alias" in a regular expression location is not supported',
                              d.file, d.line)
        return alias

    def _proxy_pass(self, d: Directive, in_regex: bool) -> ProxyPass:
        url = d.args[0]
        if url.startswith("https://"):
            raise ConfigError('"proxy_pass" to https is not supported', d.file, d.line)
        if not url.startswith("http://"):
            raise ConfigError(f'invalid URL prefix in "{url}"', d.file, d.line)
        rest = url[len("http://"):]
        hostport, slash, path = rest.partition("/")
        uri = slash + path if slash else None
        if uri is not None and in_regex:
            raise ConfigError(
                '"proxy_pass" cannot have URI part in location given by regular expression, '
                'or inside named location, or inside "if" statement, or inside '
                '"limit_except" block', d.file, d.line)
        if "$" in hostport:
            raise ConfigError("variables in proxy_pass are not supported", d.file, d.line)
        if hostport in self.upstreams and ":" not in hostport:
            return ProxyPass(hostport, uri, hostport)
        host, port = _host_port(hostport, d, "upstream", 80)
        addrs = _resolve(host, port, d, "upstream", hostport)
        if hostport not in self.upstreams:
            self.upstreams[hostport] = UpstreamConfig(
                hostport, tuple(UpstreamServer(a, port) for a in addrs), implicit=True)
        return ProxyPass(hostport, uri, hostport)


def load(path: str) -> Config:
    """Read and check an nginx-syntax configuration; raises ConfigError with file:line."""
    return _Builder(path).build()
