"""Which ``server`` serves a Host and which ``location`` serves a URI, in nginx's order, and URI
normalisation.

nginx's order: an exact ``=`` match wins at once; otherwise the longest matching prefix is
remembered, and if it is ``^~`` it wins without regexes; otherwise the ``~`` / ``~*`` regexes are
tried in configuration order and the first match wins; with none, the remembered prefix serves.
With nesting (``ngx_http_core_find_location``): the remembered prefix's own locations are
searched the same way first (an exact or regex match in there wins, a longer prefix in there is
remembered instead), then this level's regexes unless the outer prefix was ``^~``; a matching
regex location's nested ones are searched too.
Matching runs on the normalised URI (percent-decoded, ``//`` merged, dot segments resolved), as
nginx's ``$uri``, so ``/a/../b.jsp`` and ``/b%2Ejsp`` reach the same location as ``/b.jsp``.

A server is chosen among those sharing a listening socket by exact name, then by wildcard
suffix (``*.example.com``, ``.example.com``), else the ``default_server``.

Not for: what the location then does (``routing``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from pylvs.l7.config import Location, Server


class BadURI(ValueError):
    """The request target cannot be mapped to a path (400 in nginx)."""


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# What nginx refuses in a Host (ngx_http_validate_host): control bytes and space, DEL, "/", and
# an empty label ("a..b").
_BAD_HOST = re.compile(r"[\x00-\x20\x7f/]|\.\.")


def host_of(value: str) -> str | None:
    """The host of a Host header or an absolute URI's authority as nginx keeps it: lower-cased,
    without the port and one trailing dot; None where nginx answers 400."""
    h = value.lower()
    if h.startswith("["):
        end = h.find("]")
        host = h[:end + 1] if end > 0 else h
    else:
        host = h.partition(":")[0]
    if _BAD_HOST.search(host):
        return None
    if host.endswith("."):
        host = host[:-1]
    return host or None


def normalize(path: str) -> str:
    """Decode and canonicalise a request path; refuses paths climbing above the root."""
    if not path.startswith("/"):
        raise BadURI("request target is not an absolute path")
    if "%" not in path and "/." not in path and "//" not in path:
        return path  # already canonical: the common case, kept cheap
    if "%" in path and _BAD_ESCAPE.search(path):
        raise BadURI("bad percent escape in request path")
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadURI("request path is not UTF-8") from None
    if "\x00" in decoded:
        raise BadURI("NUL in request path")
    out: list[str] = []
    segments = decoded.split("/")
    for i, seg in enumerate(segments[1:], 1):
        last = i == len(segments) - 1
        if seg == "" and not last:
            continue
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if not out:
                raise BadURI("request path climbs above the root")
            out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def is_auto_redirect(loc: Location, uri: str) -> bool:
    """Whether ``LocationMatcher.match`` chose ``loc`` for ``uri`` as nginx's auto_redirect
    (the URI is the location's name without its final slash: no other match gives a URI
    shorter than the location's name)."""
    return loc.auto_redirect and len(uri) + 1 == len(loc.pattern)


class _Level:
    """The locations of one level: exact map, prefixes longest first, regexes in order."""

    __slots__ = ("exact", "prefixes", "redirects", "regexes")

    def __init__(self, locations: Sequence[Location]) -> None:
        self.exact = {loc.pattern: loc for loc in locations if loc.modifier == "="}
        self.prefixes = sorted((loc for loc in locations if loc.modifier in ("", "^~")),
                               key=lambda loc: len(loc.pattern), reverse=True)
        self.regexes = [loc for loc in locations if loc.regex is not None]
        # nginx's auto_redirect: "/app" where "/app/" is proxied and no location is named
        # "/app" itself (an exact location of that name wins first; a prefix of that name
        # is the longest match); it beats shorter prefixes and every regex
        named = {loc.pattern for loc in self.prefixes}
        self.redirects: dict[str, Location] = {}
        for loc in sorted((x for x in locations if x.auto_redirect),
                          key=lambda x: x.modifier != "="):  # an exact one first
            key = loc.pattern[:-1]
            if key not in named:
                self.redirects.setdefault(key, loc)


class LocationMatcher:
    """Precomputed per server: each level's locations (the server's, and each location's
    nested ones), and answers cached by URI."""

    __slots__ = ("_cache", "_fallback", "_levels", "_top")

    def __init__(self, locations: Sequence[Location], fallback: Location) -> None:
        self._top = _Level(locations)
        self._levels: dict[int, _Level] = {}
        stack = list(locations)
        while stack:
            loc = stack.pop()
            if loc.children:
                self._levels[id(loc)] = _Level(loc.children)
                stack.extend(loc.children)
        self._fallback = fallback
        # Answers for URIs seen lately: the same pages are asked again and again, and the
        # answer depends on the URI alone (bounded: cleared when full).
        self._cache: dict[str, Location] = {}

    def match(self, uri: str) -> Location:
        loc = self._cache.get(uri)
        if loc is None:
            loc = self._match(uri)
            if len(uri) <= 256:  # long (often one-off) URIs would only crowd the cache
                if len(self._cache) >= 4096:
                    self._cache.clear()
                self._cache[uri] = loc
        return loc

    def _match(self, uri: str) -> Location:
        return self._find(self._top, uri)[0] or self._fallback

    def _find(self, level: _Level, uri: str) -> tuple[Location | None, bool]:
        """(the location this level chooses, or None; whether that is final: an exact or a
        regex match, which the levels above keep)."""
        exact = level.exact.get(uri)
        if exact is not None:
            return exact, True
        if level.redirects:
            redirect = level.redirects.get(uri)
            if redirect is not None:  # (the caller answers 301: ``is_auto_redirect``)
                return redirect, True
        best: Location | None = None
        for loc in level.prefixes:
            if uri.startswith(loc.pattern):
                best = loc
                break
        noregex = False
        if best is not None:
            noregex = best.modifier == "^~"
            if best.children:
                deeper, final = self._find(self._levels[id(best)], uri)
                if final:
                    return deeper, True
                if deeper is not None:
                    best = deeper
        if not noregex:
            for loc in level.regexes:
                assert loc.regex is not None
                if loc.regex.search(uri):
                    if loc.children:
                        return self._find(self._levels[id(loc)], uri)[0] or loc, True
                    return loc, True
        return best, False


class ListenGroup:
    """The servers sharing one listening socket, chosen by Host like nginx's server_name, and
    each server's location matcher."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.default = next((s for s in servers for lst in s.listens if lst.default_server),
                            servers[0])
        self.exact: dict[str, Server] = {}
        self.wild: list[tuple[str, Server]] = []
        # regex names, tried last and in order (nginx's order: exact, wildcards, regexes)
        self.regexes = [(rx, s) for s in servers for rx in s.name_regexes]
        for s in servers:
            for name in s.server_names:
                if name.startswith("~"):
                    continue
                if name.startswith("*."):
                    self.wild.append((name[1:], s))
                elif name.startswith("."):
                    self.exact.setdefault(name[1:], s)
                    self.wild.append((name, s))
                else:
                    self.exact.setdefault(name, s)
        self.matchers = {id(s): LocationMatcher(s.top, s.fallback) for s in servers}
        # Request heads read lately on this socket, whole reads' bytes -> the parsed request's
        # fields (and, where routing is a function of the head alone, its server and location):
        # a keep-alive client sends the same head again and again, and a head seen before is
        # answered without being parsed and routed again (``connection``). Bounded: cleared
        # when full; a reload makes new groups, so no entry outlives its configuration.
        self.heads: dict[bytes, dict[str, object]] = {}
        # reads seen once at a request's start: a head is kept only when it comes again, so a
        # stream of heads that never repeat costs a set insertion each, not a kept copy
        self.seen: set[bytes] = set()

    def select(self, host: str) -> Server:
        if len(self.servers) == 1:
            return self.servers[0]
        s = self.exact.get(host)
        if s is not None:
            return s
        for suffix, srv in self.wild:
            if host.endswith(suffix):
                return srv
        for rx, srv in self.regexes:
            if rx.search(host):
                return srv
        return self.default

    @staticmethod
    def name_match(server: Server, host: str) -> re.Match[str] | None:
        """The match of the server's first regex name that matches ``host`` (its captures
        are the request's $1.. and named variables, as in nginx)."""
        for rx in server.name_regexes:
            m = rx.search(host)
            if m is not None:
                return m
        return None
