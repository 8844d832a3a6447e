"""What nginx's proxy module does to the upstream response's headers on their way to the client:
``proxy_redirect`` rewrites Location and Refresh, ``proxy_cookie_domain`` and
``proxy_cookie_path`` Set-Cookie; ``proxy_hide_header`` and ``proxy_pass_header`` change which
headers cross; ``proxy_ignore_headers`` is checked and has nothing to switch off here.

Why apart: these rules run on the proxy's hot path only when a head carries a header they act
on (``message.ResponseHead.redirects``, ``.cookies``), and they read the request (``$host``, the Host a
relative Location is made absolute with), so what they make is never kept in the head caches
made for every request alike (``upstream._HEADS``, ``ResponseHead.client_head``). Their
directive rows are in ``proxyheaderconf``.

nginx 1.22's semantics, as checked against it (tests/l7/test_proxy_headers.py):

- ``proxy_redirect default`` applies without any directive to a location with its own
  ``proxy_pass`` (not one with variables): the proxy_pass URL, as written, becomes the
  location's name; without a URI part (and in regex, named and if locations) the URL plus "/"
  becomes "/". A location without its own rules inherits its parent's list, nested locations
  the enclosing location's (its default included, made from the enclosing proxy_pass).
- Rules are tried in order; the first that matches rewrites. A string (variables allowed) must
  be a case-sensitive prefix of the value and only that prefix is replaced; a regex (``~``,
  ``~*``) searches the value, its captures become the request's ($1.., named ones), and the
  whole value becomes the replacement.
- Refresh: the part after its first "url=" (any case) is rewritten the same way.
- A rewritten Location starting with "/" is made absolute as nginx's header filter makes its
  own redirects' (``redirect``: absolute_redirect, server_name_in_redirect, port_in_redirect);
  only the last rewritten Location is, and an untouched one stays as it is.

- ``proxy_cookie_domain``: a string matches the whole domain= value in any case, a leading
  dot of it kept and not compared (nginx drops a leading dot of both arguments);
  ``proxy_cookie_path``: a string matches a prefix of path=, as proxy_redirect's do; regexes
  as proxy_redirect's. A cookie rewritten is re-joined from its parts, spaces around names
  and values dropped, "; " between them.
- ``proxy_hide_header`` adds to the headers nginx hides by default (Date, Server, X-Pad,
  X-Accel-*), ``proxy_pass_header`` takes names off the combined list (an upstream's Server or
  Date then replaces nginx's own). Each list is a level's own lines or, without any, its
  parent's (the two inherit apart).

Not for: the hop-by-hop and framing headers no directive passes (``message``), or reading the
directives (``proxyheaderconf``).
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from typing import Protocol

from pylvs.l7 import redirect
from pylvs.l7.message import ResponseHead, connection_tokens
from pylvs.l7.redirect import absolute
from pylvs.l7.variables import Template, expand, is_constant


class Request(redirect.Request, Protocol):
    """What the rewrites read of a request (``request.Request``; not imported: request
    imports config, which imports this module's types through ``proxyheaderconf``): what
    ``redirect`` reads, and the request's variables and captures."""

    def variable(self, name: str) -> str: ...
    def set_captures(self, m: re.Match[str]) -> None: ...


@dataclass(frozen=True)
class Redirect:
    """One ``proxy_redirect`` (or ``proxy_cookie_*``) rule: a prefix (a template) or a regex,
    and the replacement.
    ``default`` is an unresolved ``proxy_redirect default`` (``proxyheaderconf.redirects_for``
    resolves it for the location it was written in)."""

    prefix: Template
    regex: re.Pattern[str] | None
    replacement: Template
    default: bool = False
    domain: bool = False  # proxy_cookie_domain's string form: the whole domain, any case


def rewrite_lines(lines: bytes, rules: tuple[Redirect, ...], req: Request,
                  hoist: list[bytes] | None = None) -> bytes:
    """Header lines (``Name: value\\r\\n`` each) with Location and Refresh values rewritten by
    the first matching rule; the last rewritten Location starting with "/" made absolute, and
    with ``hoist`` taken out of the lines into it (nginx's header filter writes a Location it
    made absolute in its own place, after Date)."""
    out = lines.split(b"\r\n")
    last = -1
    for i, line in enumerate(out):
        c = line[:1]
        if c not in b"LlRr" or not c:
            continue
        name, _, value = line.partition(b": ")
        n = name.lower()
        if n == b"location":
            prefix = 0
        elif n == b"refresh":
            at = value.lower().find(b"url=")
            if at < 0:
                continue
            prefix = at + 4
        else:
            continue
        new = _rewrite(value.decode("latin-1"), prefix, rules, req)
        if new is None:
            continue
        out[i] = name + b": " + new.encode("latin-1")
        if n == b"location":
            last = i
    if last >= 0 and out[last][10:11] == b"/":
        path = out[last][10:].decode("latin-1")
        url = absolute(req, path)
        if url != path:  # (absolute_redirect off: it stays a path, in its place)
            out[last] = out[last][:10] + url.encode("latin-1")
            if hoist is not None:
                hoist.append(out.pop(last) + b"\r\n")
    return b"\r\n".join(out)


def _rewrite(value: str, prefix: int, rules: tuple[Redirect, ...], req: Request) -> str | None:
    rest = value[prefix:]
    for r in rules:
        if r.domain:  # a leading dot is kept and not compared
            dot = 1 if rest[:1] == "." else 0
            if rest[dot:].lower() == expand(r.prefix, req.variable).lower():
                return value[:prefix + dot] + expand(r.replacement, req.variable)
        elif r.regex is None:
            pattern = r.prefix[0] if len(r.prefix) == 1 and is_constant(r.prefix) \
                else expand(r.prefix, req.variable)
            assert isinstance(pattern, str)
            if rest.startswith(pattern):
                return value[:prefix] + expand(r.replacement, req.variable) \
                    + rest[len(pattern):]
        else:
            m = r.regex.search(rest)
            if m is not None:
                req.set_captures(m)
                return value[:prefix] + expand(r.replacement, req.variable)
    return None


# -- which headers cross: proxy_hide_header, proxy_pass_header ----------------------------------

# nginx's proxy module hides these by default (ngx_http_proxy_hide_headers)
DEFAULT_HIDDEN = frozenset({
    b"date", b"server", b"x-pad", b"x-accel-expires", b"x-accel-redirect",
    b"x-accel-limit-rate", b"x-accel-buffering", b"x-accel-charset",
})
# what crosses under no directive: hop-by-hop headers and the framing the proxy redoes
_NEVER = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"content-length",
})


@dataclass(frozen=True)
class HeaderFilter:
    """A location's hidden response headers when its directives change nginx's defaults:
    ``hidden`` the lower-cased names kept from the client, ``own`` nginx's own lines (Server,
    Date) an upstream's passed header of that name replaces."""

    hidden: frozenset[bytes]
    own: frozenset[bytes]


def filtered_lines(head: ResponseHead, hf: HeaderFilter) -> bytes:
    """The upstream head's end-to-end lines as ``hf`` lets them cross (kept on the head for
    the last filter it was made for: a head is mostly answered by one location)."""
    done = head.filtered
    if done is not None and done[0] is hf:
        return done[1]
    tokens: frozenset[bytes] = frozenset()
    for name, value in head.headers:
        if name.lower() == b"connection":
            tokens = connection_tokens(value)
    out = []
    hidden = hf.hidden
    for name, value in head.headers:
        n = name.lower()
        if n in _NEVER or n in tokens or n in hidden:
            continue
        out.append(name + b": " + value + b"\r\n")
    lines = b"".join(out)
    head.filtered = (hf, lines)
    return lines


def drop_own(out: bytes, head: ResponseHead, hf: HeaderFilter) -> bytes:
    """A client head without nginx's own Server and Date lines where the upstream's passed
    ones take their place (nginx's own come first, right after the status line)."""
    return drop_own_lines(out, {n.lower() for n, _ in head.headers} & hf.own)


def drop_own_lines(out: bytes, names: Set[bytes]) -> bytes:
    """``out`` without nginx's own lines (Server, Date) of the lower-cased ``names``."""
    for name in (b"\r\nServer: ", b"\r\nDate: "):
        if name[2:-2].lower() in names:
            i = out.find(name)
            if i >= 0:
                out = out[:i] + out[out.find(b"\r\n", i + 2):]
    return out


# -- Set-Cookie: proxy_cookie_domain, proxy_cookie_path -----------------------------------------


@dataclass(frozen=True)
class FlagRule:
    """One ``proxy_cookie_flags COOKIE FLAG...``: the cookie's name (a template) or a regex
    searched in it, and its flags (templates, read per request as nginx reads them)."""

    name: Template
    regex: re.Pattern[str] | None
    flags: tuple[Template, ...]


@dataclass(frozen=True)
class CookieRules:
    """A location's Set-Cookie rewrites: for the domain= and the path= attribute, and the
    flags of ``proxy_cookie_flags``."""

    domains: tuple[Redirect, ...]
    paths: tuple[Redirect, ...]
    flags: tuple[FlagRule, ...] = ()


_SAMESITE = {"samesite=strict": "Strict", "samesite=lax": "Lax", "samesite=none": "None"}


def _flag_rule(name: str, rules: tuple[FlagRule, ...], req: Request) -> FlagRule | None:
    for r in rules:
        if (r.regex.search(name) is not None if r.regex is not None
                else expand(r.name, req.variable) == name):
            return r
    return None


def _edit_flags(attrs: list[tuple[str, str | None]], rule: FlagRule, req: Request) -> None:
    """nginx's proxy_cookie_flags on a parsed cookie: an attribute already as asked is kept
    as written, one asked away is removed (nosecure, nohttponly, nosamesite), a SameSite of
    another value is replaced; what is asked and absent is added, in the order Secure,
    HttpOnly, SameSite. Unknown flags do nothing."""
    secure: bool | None = None
    httponly: bool | None = None
    samesite: str | None = None  # "Strict", "Lax", "None", "off"
    for t in rule.flags:
        f = expand(t, req.variable).lower()
        if f in ("secure", "nosecure"):
            secure = f == "secure"
        elif f in ("httponly", "nohttponly"):
            httponly = f == "httponly"
        elif f in _SAMESITE:
            samesite = _SAMESITE[f]
        elif f == "nosamesite":
            samesite = "off"
    out: list[tuple[str, str | None]] = [attrs[0]]
    for key, val in attrs[1:]:
        k = key.lower()
        if k == "secure" and secure is not None:
            if not secure:
                continue
            secure = None  # there already
        elif k == "httponly" and httponly is not None:
            if not httponly:
                continue
            httponly = None
        elif k == "samesite" and samesite is not None:
            if samesite == "off":
                continue
            if (val or "").lower() != samesite.lower():
                key, val = "SameSite", samesite
            samesite = None  # the first one decides; later ones stay as they are
        out.append((key, val))
    if secure:
        out.append(("Secure", None))
    if httponly:
        out.append(("HttpOnly", None))
    if samesite is not None and samesite != "off":
        out.append(("SameSite", samesite))
    attrs[:] = out


def rewrite_cookie(value: str, rules: CookieRules, req: Request) -> str | None:
    """A Set-Cookie value with its domain= and path= attributes rewritten (the first matching
    rule each) and its flags edited (the first ``proxy_cookie_flags`` naming it), re-joined as
    nginx joins it ("; " between attributes); None: unchanged."""
    attrs: list[tuple[str, str | None]] = []
    for part in value.split(";"):  # as nginx parses it: spaces around names and values go
        key, eq, after = part.partition("=")
        attrs.append((key.strip(" "), after.strip(" ") if eq else None))
    if attrs[0][1] is None:
        return None
    rule = _flag_rule(attrs[0][0], rules.flags, req) if rules.flags else None
    changed = rule is not None  # (a cookie a flags rule names is re-joined, as nginx does)
    for i, (key, val) in enumerate(attrs[1:], 1):
        if val is None:
            continue
        k = key.lower()
        new = None
        if k == "domain" and rules.domains:
            new = _rewrite(val, 0, rules.domains, req)
        elif k == "path" and rules.paths:
            new = _rewrite(val, 0, rules.paths, req)
        if new is not None:
            attrs[i] = (key, new)
            changed = True
    if not changed:
        return None
    if rule is not None:
        _edit_flags(attrs, rule, req)
    return "; ".join(k if v is None else f"{k}={v}" for k, v in attrs)


def rewrite_cookies(lines: bytes, rules: CookieRules, req: Request) -> bytes:
    """Header lines with each Set-Cookie rewritten by ``rewrite_cookie``."""
    out = lines.split(b"\r\n")
    for i, line in enumerate(out):
        if line[:11].lower() != b"set-cookie:":
            continue
        name, _, value = line.partition(b": ")
        new = rewrite_cookie(value.decode("latin-1"), rules, req)
        if new is not None:
            out[i] = name + b": " + new.encode("latin-1")
    return b"\r\n".join(out)
