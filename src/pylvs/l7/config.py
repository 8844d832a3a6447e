"""Reading an nginx configuration into the dataclasses the proxy runs from (``model``).

Why its own reader: operators bring the nginx.conf they already have (the seed's upstream and
``location ~ .*.jsp$`` blocks), and ``pylvs http -t`` must reject what nginx rejects with the same
words and the same ``file:line``. Every directive is a row of ``directives`` (contexts,
argument count, parser); this module walks the block structure (http, server, location,
upstream, include), checks each directive against its row and builds the result, merging
settings http -> server -> location as nginx does.

Not for: the directives the proxy does not implement (ssl, fastcgi...): they are refused as
unknown rather than silently ignored, except the tuning knobs ``directives`` lists as ignored
whose absence changes no behaviour a client can see.
"""

from __future__ import annotations

import dataclasses
import glob
import ipaddress
import os
import re
import socket
from typing import Any

from pylvs.l7 import authbasicconf, redirectconf  # noqa: F401  (their directive rows)
from pylvs.l7.autoindexconf import autoindex_of
from pylvs.l7.directives import (
    DIRECTIVES,
    EVENTS,
    HTTP,
    INT_MAX,
    LIF,
    LOCATION,
    MAIN,
    SERVER,
    TYPES,
    UNDECLARED,
    UPSTREAM,
    UPSTREAM_OWN,
    int_value,
    pcre,
    read_settings,
    template,
    time_value,
)
from pylvs.l7.expires import Expires, ExpiresVar
from pylvs.l7.gzip import gzip_of, gzip_static_of
from pylvs.l7.mapconf import MapReader
from pylvs.l7.maps import Map
from pylvs.l7.model import (
    AccessLog,
    Config,
    Listen,
    Location,
    ProxyPass,
    Return,
    Rewrite,
    Server,
    UpstreamConfig,
    UpstreamServer,
)
from pylvs.l7.notmodified import IMS_DEFAULT
from pylvs.l7.proxyheaderconf import cookie_rules_for, header_filter_for, redirects_for
from pylvs.l7.realipconf import realip_of
from pylvs.l7.scriptconf import ScriptReader
from pylvs.l7.syntax import ConfigError, Directive, printable, read_tree
from pylvs.l7.syslogsink import is_syslog, parse_syslog
from pylvs.l7.tls import https_upstream, proxy_tls, server_context, server_tls
from pylvs.l7.variables import Template

__all__ = [
    "COMBINED", "AccessLog", "Config", "ConfigError", "Directive", "Listen", "Location",
    "ProxyPass", "Return", "Rewrite", "Server", "UpstreamConfig", "UpstreamServer", "load",
]

_DEFAULT_TYPES = {"html": "text/html", "gif": "image/gif", "jpg": "image/jpeg"}

COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)


# Files an include may nest through (nginx has no bound and crashes on an include loop).
MAX_INCLUDE_DEPTH = 32
# Locations inside locations (nginx has no bound; the reader and the matcher recurse per level).
MAX_LOCATION_DEPTH = 100



def _expires(s: dict[str, Any]) -> Expires | ExpiresVar | None:
    """A level's expires setting; ``off`` (constant) is no setting at all."""
    e: Expires | ExpiresVar | None = s.get("expires")
    return None if e is None or (isinstance(e, Expires) and e.kind == "off") else e


def _server_name(name: str, d: Directive) -> str:
    """A server_name as nginx checks it: "*" only as a leading "*." label, "." not alone, a
    "~" name a valid regex."""
    if (name.startswith("*") and (len(name) < 3 or name[1] != ".")) or name == ".":
        raise ConfigError(f'server name "{name}" is invalid', d.file, d.line)
    if name.startswith("~"):
        pcre(name[1:], d)
        return name  # a regex keeps its case (\D is not \d); it is matched caselessly
    return name.lower()


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
    except (OSError, UnicodeError, ValueError):  # a name idna cannot encode ("a..b") too
        raise ConfigError(f'host not found in {what} "{text}"', d.file, d.line) from None
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen



class _Builder:
    """Reads one file (and its includes) into a Config; implements ``directives.Reader``."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._reading = [self.path]  # the files being read, outermost first (include loops)
        self.prefix = os.path.dirname(self.path)
        self.upstreams: dict[str, UpstreamConfig] = {}
        self.upstream_lines: dict[str, tuple[str, int]] = {}
        self.warnings: list[str] = []  # nginx's [warn] lines, in the order it prints them
        self.log_formats: dict[str, Template] = {"combined": template(COMBINED, Directive("log_format", [], "", 0))}
        self.error_log_path: str | None = None
        self.error_level = "error"
        self.worker_processes = 1
        self.modules: list[str] = []  # load_module lines: noted at start, nothing is loaded
        self.scripts = ScriptReader(self.expand)
        self._undeclared: list[str] = []
        self.maps: dict[str, Map] = {}  # the http block's map variables (the last of a name)

    def abspath(self, p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(self.prefix, p)

    def expand(self, block: list[Directive], context: str) -> list[Directive]:
        """Check each directive against its row (known, allowed here, block or not, argument
        count) and splice ``include`` in place."""
        out: list[Directive] = []
        for d in block:
            key = d.name
            if context == UPSTREAM and d.name in UPSTREAM_OWN:
                key = f"{d.name}@upstream"  # same name, another meaning inside upstream {}
            spec = DIRECTIVES.get(key)
            if spec is not None and spec.ignored:
                if context not in spec.contexts:
                    raise ConfigError(f'"{d.name}" directive is not allowed here', d.file, d.line)
                if d.block is not None:
                    raise ConfigError(f'directive "{d.name}" is not terminated by ";"',
                                      d.file, d.line)
                continue
            if context == TYPES:
                if d.block is not None:
                    raise ConfigError('unexpected "{"', d.file, d.line)
                if d.name == "include":
                    out.extend(self._include(d, context))
                else:
                    out.append(d)
                continue
            if spec is None:
                raise ConfigError(f'unknown directive "{printable(d.name)}"', d.file, d.line)
            if context not in spec.contexts:
                raise ConfigError(f'"{d.name}" directive is not allowed here', d.file, d.line)
            if spec.block and d.block is None:
                raise ConfigError(f'directive "{d.name}" has no opening "{{"', d.file, d.line)
            if not spec.block and d.block is not None:
                raise ConfigError(f'directive "{d.name}" is not terminated by ";"', d.file, d.line)
            if len(d.args) < spec.lo or (spec.hi >= 0 and len(d.args) > spec.hi):
                raise ConfigError(
                    f'invalid number of arguments in "{d.name}" directive', d.file, d.line)
            if d.name == "include":
                out.extend(self._include(d, context))
            else:
                out.append(d)
        return out

    def _include(self, d: Directive, context: str) -> list[Directive]:
        """The directives of the files ``include`` names, checked in ``context``; a file that
        includes itself (through any chain) or too deep a chain is an error."""
        pattern = self.abspath(d.args[0])
        if glob.has_magic(pattern):
            paths = sorted(glob.glob(pattern))
        else:
            if not os.path.exists(pattern):
                raise ConfigError(
                    f'open() "{pattern}" failed (2: No such file or directory)', d.file, d.line)
            paths = [pattern]
        out: list[Directive] = []
        for p in paths:
            if os.path.abspath(p) in self._reading:
                raise ConfigError(f'include loop: "{p}" is already being read', d.file, d.line)
            if len(self._reading) > MAX_INCLUDE_DEPTH:
                raise ConfigError(f'"include" nested deeper than {MAX_INCLUDE_DEPTH} files',
                                  d.file, d.line)
            self._reading.append(os.path.abspath(p))
            try:
                out.extend(self.expand(read_tree(p), context))
            finally:
                self._reading.pop()
        return out

    # -- main ------------------------------------------------------------------------------

    def build(self) -> Config:
        token = UNDECLARED.set(self._undeclared)
        try:
            cfg = self._build()
        finally:
            UNDECLARED.reset(token)
        for name in self._undeclared:  # nginx checks them once the file is read: no line
            if name not in self.scripts.declared:
                raise ConfigError(f'unknown "{name}" variable')
        return cfg

    def _build(self) -> Config:
        tree = self.expand(read_tree(self.path), MAIN)
        http_blocks: list[Directive] = []
        for d in tree:
            if d.name == "worker_processes":
                if d.args[0] == "auto":
                    self.worker_processes = os.cpu_count() or 1
                else:
                    n = d.args[0]
                    if not n.isdigit() or int(n) > INT_MAX:
                        raise ConfigError(f'"{d.name}" directive invalid value', d.file, d.line)
                    self.worker_processes = int(n)
            elif d.name == "error_log":
                self.error_log(d)
            elif d.name == "load_module":
                self.modules.append(d.args[0])
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
        return Config(self.path, servers, self.upstreams, self.error_log_path, self.error_level,
                      self.worker_processes, modules=tuple(self.modules))

    def error_log(self, d: Directive) -> None:
        target = d.args[0]
        if target == "stderr":
            self.error_log_path = None
        elif is_syslog(target):
            try:
                parse_syslog(target)
            except ValueError as e:
                raise ConfigError(str(e), d.file, d.line) from None
            self.error_log_path = target  # kept as written: ``syslogsink`` opens it
        else:
            self.error_log_path = self.abspath(target)
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
                self.log_formats[name] = template("".join(d.args[1:]), d)
            elif d.name == "map":
                m = MapReader(d, self.abspath, self.scripts.declare).read()
                self.maps[m.name] = m
                self.scripts.declared.add(m.name)
        settings = read_settings(self, {}, block, HTTP)
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
        method: dict[str, Any] = {}
        for s in block:
            if s.name == "keepalive":
                keepalive = int_value(s.args[0], s)
                if keepalive == 0:
                    raise ConfigError(f'invalid value "{s.args[0]}" in "keepalive" directive',
                                      s.file, s.line)
            elif s.name == "keepalive_requests":
                ka_requests = int_value(s.args[0], s)
            elif s.name == "keepalive_timeout":
                ka_timeout = time_value(s.args[0], s)
            elif s.name == "server":
                servers.extend(self._upstream_server(s, method.get("method", "round_robin")))
            elif s.name in ("least_conn", "ip_hash", "hash", "random"):
                if method or keepalive:
                    self.warnings.append(f"load balancing method redefined in {s.file}:{s.line}")
                method = _balancing(s)
                # nginx's method takes the place of the block's keepalive wrapper: a keepalive
                # line before it has no effect (nginx warns "load balancing method redefined")
                keepalive = 0
        if not servers:
            raise ConfigError("no servers are inside upstream", d.file, d.line)
        if all(s.backup for s in servers):
            raise ConfigError("no servers are inside upstream", d.file, d.line)
        self.upstreams[name] = UpstreamConfig(name, tuple(servers), keepalive, ka_timeout,
                                              ka_requests, **method)

    def _upstream_server(self, d: Directive, method: str = "round_robin") -> list[UpstreamServer]:
        """A ``server`` line of an upstream block; ``method`` is the balancing method read so
        far (nginx checks the line's parameters against it: only round robin and least_conn
        have backup servers)."""
        text = d.args[0]
        host, port = _host_port(text, d, "upstream", 80)
        opts: dict[str, Any] = {}
        for a in d.args[1:]:
            key, _, val = a.partition("=")
            if key == "weight" and val:
                w = int(val) if val.isdigit() and int(val) <= INT_MAX else -1
                if w <= 0:
                    raise ConfigError(f'invalid parameter "{a}"', d.file, d.line)
                opts["weight"] = w
            elif key == "max_fails" and val.isdigit() and int(val) <= INT_MAX:
                opts["max_fails"] = int(val)
            elif key == "max_conns" and val.isdigit() and int(val) <= INT_MAX:
                opts["max_conns"] = int(val)
            elif key == "fail_timeout" and val:
                try:
                    opts["fail_timeout"] = time_value(val, d)
                except ConfigError:
                    raise ConfigError(f'invalid parameter "{a}"', d.file, d.line) from None
            elif a == "backup":
                if method not in ("least_conn", "round_robin"):
                    raise ConfigError('balancing method does not support parameter "backup"',
                                      d.file, d.line)
                opts["backup"] = True
            elif a == "down":
                opts["down"] = True
            else:
                raise ConfigError(f'invalid parameter "{a}"', d.file, d.line)
        return [UpstreamServer(addr, port, name=text, **opts)
                for addr in _resolve(host, port, d, "upstream", text)]

    def _server(self, d: Directive, http: dict[str, Any]) -> Server:
        assert d.block is not None
        block = self.expand(d.block, SERVER)
        listens: list[Listen] = []
        names: list[str] = []
        for x in block:
            if x.name == "listen":
                listens.append(self._listen(x))
            elif x.name == "server_name":
                names.extend(_server_name(n, x) for n in x.args)
        if not listens:
            listens.append(Listen("0.0.0.0", 80))
        s = read_settings(self, http, block, SERVER)
        s.pop("proxy_pass", None)
        every: list[Location] = []
        top = self._locations(block, s, None, every)
        named = {loc.pattern: loc for loc in every if loc.modifier == "@"}
        fallback = self._make_location("", "", None, s, d)
        regexes = tuple(self.scripts.declare(pcre(n[1:], d, re.IGNORECASE))
                        for n in names if n[:1] == "~")
        tls = server_tls(s, d)
        if any(lst.ssl for lst in listens):
            server_context(tls)  # nginx loads the certificates when reading the file
        return Server(
            tuple(listens), tuple(names or [""]), tuple(every), fallback,
            float(s.get("client_header_timeout", 60.0)),
            s.get("large_client_header_buffers", (4, 8192)),
            float(s.get("keepalive_timeout", 75.0)),
            self.scripts.script(block, None), top, named, regexes, tls, self.maps or None,
        )

    def _locations(self, block: list[Directive], s: dict[str, Any], parent: Location | None,
                   every: list[Location], depth: int = 0) -> tuple[Location, ...]:
        """The locations of one level (a server, or a location's nested ones), each with its
        own nested ones; all of them, and their if blocks', are added to ``every``."""
        out: list[Location] = []
        seen: set[tuple[str, str]] = set()
        for x in block:
            if x.name != "location":
                continue
            loc = self._location(x, s, parent, every, depth)
            if loc.modifier != "@":  # nginx lets a named location be defined twice
                key = (loc.modifier if loc.modifier in ("~", "~*", "=") else "", loc.pattern)
                if key in seen:
                    raise ConfigError(f'duplicate location "{loc.pattern}"', x.file, x.line)
                seen.add(key)
            out.append(loc)
        return tuple(out)

    def _listen(self, d: Directive) -> Listen:
        text = d.args[0]
        default = ssl = pp = False
        for a in d.args[1:]:
            if a in ("default_server", "default"):
                default = True
            elif a == "ssl":
                ssl = True
            elif a == "proxy_protocol":
                pp = True
            elif a in ("reuseport", "deferred", "bind") or a.startswith(("backlog=", "rcvbuf=", "sndbuf=")):
                pass
            else:
                raise ConfigError(f'invalid parameter "{a}"', d.file, d.line)
        if ssl and pp:  # the PROXY header precedes the TLS handshake: not read that way here
            raise ConfigError('"ssl" with "proxy_protocol" in "listen" is not supported',
                              d.file, d.line)
        if text.isdigit():
            port = int(text)
            if not 0 < port < 65536:
                raise ConfigError(f'invalid port in "{text}" of the "listen" directive', d.file, d.line)
            return Listen("0.0.0.0", port, default, ssl, pp)
        if text.startswith("unix:"):
            raise ConfigError("unix sockets are not supported in \"listen\"", d.file, d.line)
        host, port = _host_port(text, d, "\"listen\" of", 80)
        if host == "*":
            host = "0.0.0.0"
        elif host == "localhost":
            host = "127.0.0.1"
        else:
            try:
                ipaddress.ip_address(host)
            except ValueError:  # a name: nginx resolves it when reading the file
                try:
                    socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except (OSError, UnicodeError, ValueError):
                    raise ConfigError(f'host not found in "{text}" of the "listen" directive',
                                      d.file, d.line) from None
        return Listen(host, port, default, ssl, pp)

    def _location(self, d: Directive, outer: dict[str, Any], parent: Location | None,
                  every: list[Location], depth: int) -> Location:
        """A location block: nginx's checks on nesting, its settings merged from ``outer``
        (proxy_pass and try_files are the location's own: not inherited), its script, its if
        blocks and nested locations."""
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
                modifier = "@"
        if parent is not None:
            if depth >= MAX_LOCATION_DEPTH:
                raise ConfigError(f"locations nested deeper than {MAX_LOCATION_DEPTH} levels",
                                  d.file, d.line)
            if parent.modifier == "=":
                raise ConfigError(f'location "{pattern}" cannot be inside the exact location '
                                  f'"{parent.pattern}"', d.file, d.line)
            if parent.modifier == "@":
                raise ConfigError(f'location "{pattern}" cannot be inside the named location '
                                  f'"{parent.pattern}"', d.file, d.line)
            if modifier == "@":
                raise ConfigError(f'named location "{pattern}" can be on the server level only',
                                  d.file, d.line)
            if modifier not in ("~", "~*") and not pattern.startswith(parent.pattern):
                raise ConfigError(f'location "{pattern}" is outside location "{parent.pattern}"',
                                  d.file, d.line)
        regex = None
        if modifier in ("~", "~*"):
            regex = self.scripts.declare(
                pcre(pattern, d, re.IGNORECASE if modifier == "~*" else 0))
        assert d.block is not None
        block = self.expand(d.block, LOCATION)
        inherited = {k: v for k, v in outer.items() if k not in ("proxy_pass", "try_files")}
        s = read_settings(self, inherited, block, LOCATION)
        if any(x.name == "alias" for x in block):  # an inherited alias keeps its prefix
            s["alias_at"] = -2 if regex is not None else len(pattern)
        captures = regex if regex is not None and (regex.groups or regex.groupindex) else (
            parent.captures if parent is not None and regex is None else None)
        base = self._make_location(modifier, pattern, regex, s, d, captures,
                                   own_proxy=any(x.name == "proxy_pass" for x in block))

        def if_location(x: Directive, if_block: list[Directive]) -> Location:
            own = read_settings(self, {k: v for k, v in s.items() if k != "try_files"},
                                if_block, LIF)
            loc = self._make_location(modifier, pattern, regex, own, x, captures, own_proxy=any(
                y.name == "proxy_pass" for y in if_block), in_if=True)
            every.append(loc)
            return loc

        script = self.scripts.script(block, if_location)
        loc = dataclasses.replace(base, rewrites=script)
        children = self._locations(block, s, loc, every, depth + 1)
        loc = dataclasses.replace(loc, children=children)
        every.append(loc)
        return loc

    def _make_location(self, modifier: str, pattern: str, regex: re.Pattern[str] | None,
                       s: dict[str, Any], d: Directive,
                       captures: re.Pattern[str] | None = None, own_proxy: bool = False,
                       in_if: bool = False) -> Location:
        pp: ProxyPass | None = None
        proxy_url: Template | None = None
        ppd = s.get("proxy_pass")
        if isinstance(ppd, Directive):
            no_uri = own_proxy and (regex is not None or modifier == "@" or in_if)
            if "$" in ppd.args[0]:  # the URL is made per request (proxytarget.dynamic_target)
                proxy_url = template(ppd.args[0], ppd)
                pp = ProxyPass("", None, "")
            else:
                pp = self._proxy_pass(ppd, no_uri)
            if pp.scheme == "https":
                pp = dataclasses.replace(pp, upstream=https_upstream(
                    self.upstreams, pp.upstream, proxy_tls(s)))
        default_headers = (("Host", template("$proxy_host", d)),
                           ("Connection", template("close", d)))
        headers: tuple[tuple[str, Template], ...] = s.get("proxy_set_header", ())
        # as nginx merges them: the location's own lines first, then the defaults they leave
        merged: dict[str, tuple[str, Template]] = {}
        for k, v in headers:
            merged[k.lower()] = (k, v)
        for k, v in default_headers:
            merged.setdefault(k.lower(), (k, v))
        return Location(
            modifier=modifier,
            pattern=pattern,
            regex=regex,
            root=s.get("root", self.abspath("html")),
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
            add_header=s.get("add_header", ()),
            alias=s.get("alias"),
            alias_template=template(s["alias"], d) if "$" in s.get("alias", "") else None,
            alias_prefix=s.get("alias_at", -1),
            root_template=template(s["root"], d) if "$" in s.get("root", "") else None,
            try_files=s.get("try_files"),
            error_pages=s.get("error_pages", ()),
            captures=captures,
            proxy_url=proxy_url,
            proxy_intercept_errors=s.get("proxy_intercept_errors", False),
            proxy_next_upstream_timeout=float(s.get("proxy_next_upstream_timeout", 0.0)),
            keepalive_time=float(s.get("keepalive_time", 3600.0)),
            gzip=gzip_of(s),
            gzip_static=gzip_static_of(s),
            stub_status=s.get("stub_status", False),
            auto_redirect=(pp is not None and not in_if and modifier in ("", "=", "^~")
                           and pattern.endswith("/")),
            access=s.get("access", ()),
            internal=s.get("internal", False),
            etag=s.get("etag", True),
            accel_ignored="x-accel-redirect" in s.get("proxy_ignore_headers", ()),
            autoindex=autoindex_of(s),
            auth_basic=s.get("auth_basic"),
            auth_basic_user_file=s.get("auth_basic_user_file"),
            satisfy_any=s.get("satisfy_any", False),
            absolute_redirect=s.get("absolute_redirect", True),
            server_name_in_redirect=s.get("server_name_in_redirect", False),
            port_in_redirect=s.get("port_in_redirect", True),
            if_modified_since=s.get("if_modified_since", IMS_DEFAULT),
            realip=realip_of(s),
            expires=_expires(s),
            proxy_redirect=redirects_for(
                s, ppd.args[0] if own_proxy and isinstance(ppd, Directive)
                and "$" not in ppd.args[0] else None,
                pattern if modifier in ("", "=", "^~") and not in_if else ""),
            proxy_headers=header_filter_for(s),
            proxy_cookies=cookie_rules_for(s),
            file=d.file,
            line=d.line,
        )

    def _proxy_pass(self, d: Directive, in_regex: bool) -> ProxyPass:
        url = d.args[0]
        scheme = "https" if url.startswith("https://") else "http"
        if not url.startswith(f"{scheme}://"):
            raise ConfigError(f'invalid URL prefix in "{url}"', d.file, d.line)
        rest = url[len(scheme) + 3:]
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
            return ProxyPass(hostport, uri, hostport, scheme)
        host, port = _host_port(hostport, d, "upstream", 443 if scheme == "https" else 80)
        addrs = _resolve(host, port, d, "upstream", hostport)
        # an https one without a port is another address than the http one of the same name
        key = f"{hostport}:443" if scheme == "https" and ":" not in hostport else hostport
        if key not in self.upstreams:
            self.upstreams[key] = UpstreamConfig(
                key, tuple(UpstreamServer(a, port) for a in addrs), implicit=True)
        return ProxyPass(key, uri, hostport, scheme)


def load(path: str) -> Config:
    """Read and check an nginx-syntax configuration; raises ConfigError with file:line. The
    warnings nginx prints for a file it accepts come with it (``Config.warnings``)."""
    b = _Builder(path)
    cfg = b.build()
    return dataclasses.replace(cfg, warnings=tuple(b.warnings)) if b.warnings else cfg


def _balancing(d: Directive) -> dict[str, Any]:
    """An upstream's ``least_conn``, ``ip_hash``, ``hash KEY [consistent]`` or ``random [two
    [least_conn]]`` line as ``UpstreamConfig`` fields, refused in nginx's words."""
    if d.name == "hash":
        key = template(d.args[0], d)
        if len(d.args) == 2 and d.args[1] != "consistent":
            raise ConfigError(f'invalid parameter "{d.args[1]}"', d.file, d.line)
        return {"method": "hash", "hash_key": key, "consistent": len(d.args) == 2}
    if d.name == "random":
        if d.args and d.args[0] != "two":
            raise ConfigError(f'invalid parameter "{d.args[0]}"', d.file, d.line)
        if len(d.args) == 2 and d.args[1] != "least_conn":
            raise ConfigError(f'invalid parameter "{d.args[1]}"', d.file, d.line)
        return {"method": "random", "two": bool(d.args)}
    return {"method": d.name}
