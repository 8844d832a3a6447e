"""The typed result of reading an nginx configuration: immutable dataclasses the server runs
from (a ``Config`` of ``Server`` blocks with their ``Location`` blocks, and the upstreams).

Why apart: the server, the matcher and the tests read these shapes without needing the reader
that builds them.

Not for: reading or checking a file (``config``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pylvs.l7.autoindex import AutoIndex
from pylvs.l7.variables import Template

if TYPE_CHECKING:
    from pylvs.l7.access import Rule
    from pylvs.l7.expires import Expires, ExpiresVar
    from pylvs.l7.maps import Map
    from pylvs.l7.proxyheaders import CookieRules, HeaderFilter, Redirect
    from pylvs.l7.realip import RealIp

DEFAULT_PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")  # nginx 1.22's ssl_protocols
DEFAULT_CIPHERS = "HIGH:!aNULL:!MD5"


@dataclass(frozen=True)
class ServerTls:
    """A server block's TLS settings (http level inherited)."""

    certificate: str | None = None
    certificate_key: str | None = None
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    ciphers: str = DEFAULT_CIPHERS
    prefer_server_ciphers: bool = False
    session_cache: str = "none"
    session_timeout: float = 300.0
    session_tickets: bool = True
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class ProxyTls:
    """A location's ``proxy_ssl_*`` settings (nginx's defaults: no verification, no SNI)."""

    server_name: bool = False
    name: str | None = None  # proxy_ssl_name (default: the proxy_pass host)
    verify: bool = False
    trusted_certificate: str | None = None
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    ciphers: str = "DEFAULT"


@dataclass(frozen=True)
class Gzip:
    """A location's gzip settings (``gzip on``; see ``pylvs.l7.gzip``)."""

    types: frozenset[str] = frozenset({"text/html"})  # "*": any
    min_length: int = 20
    comp_level: int = 1
    vary: bool = False
    proxied: frozenset[str] = frozenset({"off"})
    disable_msie6: bool = False
    disable: tuple[re.Pattern[str], ...] = ()
    http_version: str = "1.1"


@dataclass(frozen=True)
class UpstreamServer:
    host: str
    port: int
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False
    name: str = ""  # the address as the server line wrote it (``hash ... consistent`` hashes it)
    max_conns: int = 0  # requests in progress at once from this worker (0: no limit)

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
    # the load-balancing method: "round_robin", "least_conn", "ip_hash", "hash", "random"
    method: str = "round_robin"
    hash_key: Template = ()  # ``hash KEY``: the key, with variables
    consistent: bool = False  # ``hash KEY consistent``
    two: bool = False  # ``random two``
    tls: ProxyTls | None = None  # ``proxy_pass https://``: the pool's connections speak TLS


@dataclass(frozen=True)
class ProxyPass:
    upstream: str  # name of an UpstreamConfig
    uri: str | None  # the URI part of proxy_pass, None when it has none
    proxy_host: str  # value of $proxy_host
    scheme: str = "http"  # "https": the upstream (``https://NAME``) speaks TLS


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
class SetVar:
    """``set $name VALUE``: a variable of the request, set as the script runs."""

    name: str
    value: Template


@dataclass(frozen=True)
class Break:
    """``break``: the rest of this level's rewrite-module directives are skipped."""


@dataclass(frozen=True)
class Condition:
    """An ``if`` condition as nginx reads it: ``$var`` (true unless empty or "0"), ``$var =
    VALUE`` / ``!=``, ``$var ~ REGEX`` (``~*``, ``!~``, ``!~*``; captures become $1.. and named
    variables), or a file test ``-f -d -e -x`` (``!`` negates) on a value."""

    op: str  # "", "=", "~", "-f", "-d", "-e", "-x"
    negate: bool
    left: Template
    right: Template | None = None
    regex: re.Pattern[str] | None = None


@dataclass(frozen=True)
class If:
    """``if (COND) { ... }``: its directives run inline when the condition holds and, in a
    location, the block's own configuration (``location``) then answers the request."""

    cond: Condition
    body: tuple[Op, ...]
    location: Location | None  # None for a server-level if (nginx's SIF context)


Op = Rewrite | Return | SetVar | Break | If


@dataclass(frozen=True)
class Location:
    modifier: str  # "", "=", "^~", "~", "~*", "@" (named), "if" (an if block's configuration)
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
    add_header: tuple[tuple[str, Template, bool], ...] = ()  # (name, value, always)
    alias: str | None = None  # replaces the matched prefix (root is then not used)
    # try_files: the files to try in order (a trailing / means a directory), then the fallback:
    # a URI to redirect to internally, or =CODE
    try_files: tuple[tuple[Template, ...], Template | int] | None = None
    # error_page: (status, target, response) where response is None (keep the error's status),
    # a status ("=200") or -1 ("=": whatever the target answers)
    error_pages: tuple[tuple[int, Template, int | None], ...] = ()
    # the rewrite module's directives (rewrite, return, set, if, break) in order: not inherited
    rewrites: tuple[Op, ...] = ()
    children: tuple[Location, ...] = ()  # nested locations, in configuration order
    # the regex whose captures ($1, named ones) this location's values use: its own, or the
    # nearest enclosing regex location's
    captures: re.Pattern[str] | None = None
    alias_template: Template | None = None  # an alias with variables (captures), expanded
    root_template: Template | None = None  # a root with variables ($host...), per request
    alias_prefix: int = -1  # how much of the URI an inherited alias replaces (-1: pattern)
    proxy_url: Template | None = None  # proxy_pass with variables: the URL, per request
    proxy_intercept_errors: bool = False
    proxy_next_upstream_timeout: float = 0.0
    keepalive_time: float = 3600.0
    gzip: Gzip | None = None  # None: gzip off
    # gzip_static: (always, the request-side gzip rules it checks), None when off
    gzip_static: tuple[bool, Gzip] | None = None
    stub_status: bool = False
    # a prefix or exact location ending in "/" whose own handler is proxy_pass: its name
    # without the slash is answered with a 301 to the name (nginx's auto_redirect)
    auto_redirect: bool = False
    access: tuple[Rule, ...] = ()  # allow/deny, in order (``access``)
    internal: bool = False  # ``internal``: only internal redirects reach it (404 to clients)
    etag: bool = True  # ``etag off``: files are sent without ETag
    accel_ignored: bool = False  # proxy_ignore_headers X-Accel-Redirect
    autoindex: AutoIndex | None = None  # None: autoindex off
    # auth_basic: the realm (None: off or unset) and the user file; satisfy any
    auth_basic: Template | None = None
    auth_basic_user_file: Template | None = None
    satisfy_any: bool = False
    # how a relative Location is made absolute (``redirect``)
    absolute_redirect: bool = True
    server_name_in_redirect: bool = False
    port_in_redirect: bool = True
    if_modified_since: str = "exact"  # "exact", "before" or "off" (``notmodified``)
    realip: RealIp | None = None  # set_real_ip_from and its companions (``realip``)
    expires: Expires | ExpiresVar | None = None  # None: expires off (``expires``)
    # proxy_redirect's rules for Location and Refresh, in order (the implicit default
    # included); () when off or nothing to rewrite (``proxyheaders``)
    proxy_redirect: tuple[Redirect, ...] = ()
    # proxy_hide_header/proxy_pass_header: None when nginx's default list applies
    proxy_headers: HeaderFilter | None = None
    proxy_cookies: CookieRules | None = None  # proxy_cookie_domain/_path (None: none)
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    default_server: bool = False
    ssl: bool = False
    proxy_protocol: bool = False  # the connections start with a PROXY protocol header


@dataclass(frozen=True)
class Server:
    listens: tuple[Listen, ...]
    server_names: tuple[str, ...]
    locations: tuple[Location, ...]  # every location: nested, named and if blocks' too
    fallback: Location  # what a URI matching no location gets (root/index of the server)
    client_header_timeout: float
    large_header_buffers: tuple[int, int]
    keepalive_timeout: float
    # the server level's rewrite-module directives, run before a location is chosen
    rewrites: tuple[Op, ...] = ()
    top: tuple[Location, ...] = ()  # the locations at the server level (``locations`` has all)
    named: dict[str, Location] | None = None  # "@name" -> named location
    name_regexes: tuple[re.Pattern[str], ...] = ()  # regex server_names, in order
    tls: ServerTls | None = None  # its ssl_* settings (used where a listen says ssl)
    # the http block's ``map`` variables by name (one dict shared by every server)
    maps: dict[str, Map] | None = None


@dataclass(frozen=True)
class Config:
    path: str
    servers: tuple[Server, ...]
    upstreams: dict[str, UpstreamConfig]
    error_log: str | None  # None = stderr
    error_level: str
    worker_processes: int = 1
    modules: tuple[str, ...] = ()  # load_module paths: modules are built in here, none loaded
    warnings: tuple[str, ...] = ()  # nginx's [warn] lines for the file ("... in FILE:LINE")
