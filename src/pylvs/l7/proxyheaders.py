"""What nginx's proxy module does to the upstream response's headers on their way to the client:
``proxy_redirect`` rewrites Location and Refresh; ``proxy_hide_header`` and
``proxy_pass_header`` change which headers cross.

Why apart: these rules run on the proxy's hot path only when a head carries a header they act
on (``message.ResponseHead.redirects``), and they read the request (``$host``, the Host a
relative Location is made absolute with), so what they make is never kept in the head caches
made for every request alike (``upstream._HEADS``, ``ResponseHead.client_head``). Their
directive rows live here with them.

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
- A rewritten Location starting with "/" is made absolute (scheme, the Host the client sent or
  the local address, the port unless the scheme's default), as nginx's header filter does for
  its own redirects; only the last rewritten Location is, and an untouched one stays as it is.

- ``proxy_hide_header`` adds to the headers nginx hides by default (Date, Server, X-Pad,
  X-Accel-*), ``proxy_pass_header`` takes names off the combined list (an upstream's Server or
  Date then replaces nginx's own). Each list is a level's own lines or, without any, its
  parent's (the two inherit apart).

Not for: the hop-by-hop and framing headers no directive passes (``message``), or the
directive table (``directives``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pylvs.l7.directives import HSL, UNDECLARED, Level, pcre, setting, template
from pylvs.l7.message import ResponseHead, connection_tokens
from pylvs.l7.syntax import ConfigError, Directive
from pylvs.l7.variables import Template, compile_template, expand, is_constant

if TYPE_CHECKING:  # request imports config, which reads these rows from here
    from pylvs.l7.request import Request


@dataclass(frozen=True)
class Redirect:
    """One ``proxy_redirect`` rule: a prefix (a template) or a regex, and the replacement.
    ``default`` is an unresolved ``proxy_redirect default`` (``redirects_for`` resolves it for
    the location it was written in)."""

    prefix: Template
    regex: re.Pattern[str] | None
    replacement: Template
    default: bool = False
    domain: bool = False  # proxy_cookie_domain's string form: the whole domain, any case


_DEFAULT = Redirect((), None, (), default=True)


@setting("proxy_redirect", HSL, 1, 2)
def _proxy_redirect(lv: Level, d: Directive) -> None:
    """A level's own lines replace the inherited list as a whole (the first is met with
    "proxy_redirect" not yet in ``seen``); ``off`` alone, and nothing after it."""
    a = d.args
    own = lv.s.get("proxy_redirect") if "proxy_redirect" in lv.seen else None
    lv.seen.add("proxy_redirect")
    if own == "off":
        raise ConfigError('"proxy_redirect" directive is duplicate', d.file, d.line)
    rules: tuple[Redirect, ...] = own if isinstance(own, tuple) else ()
    if len(a) == 1:
        if a[0] == "off":
            if rules:
                raise ConfigError('"proxy_redirect" directive is duplicate', d.file, d.line)
            lv.s["proxy_redirect"] = "off"
            return
        if a[0] != "default":
            raise ConfigError(f'invalid parameter "{a[0]}"', d.file, d.line)
        pp = lv.s.get("proxy_pass") if "proxy_pass" in lv.seen else None
        if isinstance(pp, Directive) and "$" in pp.args[0]:
            raise ConfigError('"proxy_redirect default" cannot be used with "proxy_pass" '
                              'directive with variables', d.file, d.line)
        if pp is None:
            raise ConfigError('"proxy_redirect default" should be placed after the '
                              '"proxy_pass" directive', d.file, d.line)
        lv.s["proxy_redirect"] = (*rules, _DEFAULT)
        return
    pattern, replacement = a
    if pattern.startswith("~"):
        caseless = pattern.startswith("~*")
        regex = pcre(pattern[2 if caseless else 1:], d, re.IGNORECASE if caseless else 0)
        names = {n.lower() for n in regex.groupindex}
        # the regex's named captures are variables of the replacement (nginx declares them)
        repl = template(replacement, d) if not names else _with_names(replacement, names, d)
        rule = Redirect((), regex, repl)
    else:
        rule = Redirect(template(pattern, d), None, template(replacement, d))
    lv.s["proxy_redirect"] = (*rules, rule)


def _with_names(text: str, names: set[str], d: Directive) -> Template:
    """``template`` where the regex's own named captures count as known variables."""
    pending = UNDECLARED.get()

    def unknown(name: str) -> None:
        if name not in names and pending is not None:
            pending.append(name)

    try:
        return compile_template(text, unknown)
    except ValueError as e:
        raise ConfigError(str(e), d.file, d.line) from None


def redirects_for(s: dict[str, Any], url: str | None, name: str) -> tuple[Redirect, ...]:
    """A location's proxy_redirect rules, as nginx merges them: its own or inherited list (or
    none after ``off``), else, with its own ``proxy_pass`` ``url`` (None: none, or one with
    variables), the implicit default. ``name`` is the location's name ("" for regex, named
    and if locations). The resolved list is written back into ``s``: nested locations and if
    blocks read from it inherit it as nginx's merge has them inherit the enclosing one's."""
    rules = s.get("proxy_redirect")
    if rules == "off":
        return ()
    if rules is None:
        if url is None:
            return ()
        rules = (_DEFAULT,)
    if url is not None and any(r.default for r in rules):
        rules = tuple(_resolve(url, name) if r.default else r for r in rules)
    s["proxy_redirect"] = rules
    return tuple(r for r in rules if not r.default)


def _resolve(url: str, name: str) -> Redirect:
    """``proxy_redirect default`` for a proxy_pass URL in a location named ``name``."""
    rest = url.split("://", 1)[1]
    if "/" in rest and name:
        return Redirect((url,), None, (name,))
    return Redirect((url if "/" in rest else url + "/",), None, ("/",))


def rewrite_lines(lines: bytes, rules: tuple[Redirect, ...], req: Request) -> bytes:
    """Header lines (``Name: value\\r\\n`` each) with Location and Refresh values rewritten by
    the first matching rule; the last rewritten Location starting with "/" made absolute."""
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
        out[last] = out[last][:10] + absolute(req, out[last][10:].decode("latin-1"))
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


def absolute(req: Request, path: str) -> bytes:
    """A path as nginx's header filter makes a Location absolute: the connection's scheme, the
    host the client named (else the local address) and the port unless the scheme's own."""
    conn = req.conn
    host = req.host
    if req.hmap.get(b"host") is None and req.server is not None \
            and host == req.server.server_names[0]:
        host = conn.local_addr  # nginx: no Host, no host in the URI
    scheme = conn.scheme
    port = "" if conn.local_port == (80 if scheme == "http" else 443) else f":{conn.local_port}"
    return f"{scheme}://{host}{port}{path}".encode("latin-1")


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


def _header_list(lv: Level, d: Directive) -> None:
    """``proxy_hide_header`` / ``proxy_pass_header NAME``: a level's own lines replace the
    inherited list as a whole."""
    own = lv.s.get(d.name, ()) if d.name in lv.seen else ()
    lv.seen.add(d.name)
    lv.s[d.name] = (*own, d.args[0].lower().encode("latin-1"))


setting("proxy_hide_header", HSL, 1, 1)(_header_list)
setting("proxy_pass_header", HSL, 1, 1)(_header_list)


def header_filter_for(s: dict[str, Any]) -> HeaderFilter | None:
    """The location's filter; None when it hides what nginx hides by default (the response
    head's own lines are then already right)."""
    hide: tuple[bytes, ...] = s.get("proxy_hide_header", ())
    passed: tuple[bytes, ...] = s.get("proxy_pass_header", ())
    if not hide and not passed:
        return None
    hidden = (DEFAULT_HIDDEN | frozenset(hide)) - frozenset(passed)
    return HeaderFilter(hidden, frozenset({b"server", b"date"}) - hidden)


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
    names = {n.lower() for n, _ in head.headers} & hf.own
    for name in (b"\r\nServer: ", b"\r\nDate: "):
        if name[2:-2].lower() in names:
            i = out.find(name)
            if i >= 0:
                out = out[:i] + out[out.find(b"\r\n", i + 2):]
    return out


# -- Set-Cookie: proxy_cookie_domain, proxy_cookie_path; proxy_ignore_headers -----------------


def _cookie_rules(lv: Level, d: Directive) -> None:
    """``proxy_cookie_domain`` / ``proxy_cookie_path``: ``off``, or ``FROM TO`` (``~`` / ``~*``
    regexes); a level's own lines replace the inherited ones, as proxy_redirect's do."""
    a = d.args
    own = lv.s.get(d.name) if d.name in lv.seen else None
    lv.seen.add(d.name)
    if own == "off":
        raise ConfigError(f'"{d.name}" directive is duplicate', d.file, d.line)
    rules: tuple[Redirect, ...] = own if isinstance(own, tuple) else ()
    if len(a) == 1:
        if a[0] != "off":
            raise ConfigError(f'invalid parameter "{a[0]}"', d.file, d.line)
        if rules:
            raise ConfigError(f'"{d.name}" directive is duplicate', d.file, d.line)
        lv.s[d.name] = "off"
        return
    pattern, replacement = a
    domain = d.name == "proxy_cookie_domain"
    if pattern.startswith("~"):
        caseless = pattern.startswith("~*")
        regex = pcre(pattern[2 if caseless else 1:], d, re.IGNORECASE if caseless else 0)
        names = {n.lower() for n in regex.groupindex}
        repl = template(replacement, d) if not names else _with_names(replacement, names, d)
        rule = Redirect((), regex, repl)
    elif domain:  # nginx drops a leading dot of both
        rule = Redirect(template(pattern.removeprefix("."), d), None,
                        template(replacement.removeprefix("."), d), domain=True)
    else:
        rule = Redirect(template(pattern, d), None, template(replacement, d))
    lv.s[d.name] = (*rules, rule)


setting("proxy_cookie_domain", HSL, 1, 2)(_cookie_rules)
setting("proxy_cookie_path", HSL, 1, 2)(_cookie_rules)


@dataclass(frozen=True)
class CookieRules:
    """A location's Set-Cookie rewrites: for the domain= and the path= attribute."""

    domains: tuple[Redirect, ...]
    paths: tuple[Redirect, ...]


def cookie_rules_for(s: dict[str, Any]) -> CookieRules | None:
    domains, paths = s.get("proxy_cookie_domain"), s.get("proxy_cookie_path")
    d = domains if isinstance(domains, tuple) else ()
    p = paths if isinstance(paths, tuple) else ()
    return CookieRules(d, p) if d or p else None


def rewrite_cookie(value: str, rules: CookieRules, req: Request) -> str | None:
    """A Set-Cookie value with its domain= and path= attributes rewritten (the first matching
    rule each), re-joined as nginx joins it ("; " between attributes); None: unchanged."""
    attrs: list[tuple[str, str | None]] = []
    for part in value.split(";"):  # as nginx parses it: spaces around names and values go
        key, eq, after = part.partition("=")
        attrs.append((key.strip(" "), after.strip(" ") if eq else None))
    if attrs[0][1] is None:
        return None
    changed = False
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


# nginx's proxy_ignore_headers values (ngx_http_upstream_ignore_headers_masks)
_IGNORABLE = ("X-Accel-Redirect", "X-Accel-Expires", "X-Accel-Limit-Rate", "X-Accel-Buffering",
              "X-Accel-Charset", "Expires", "Cache-Control", "Set-Cookie", "Vary")


@setting("proxy_ignore_headers", HSL, 1, -1)
def _proxy_ignore_headers(lv: Level, d: Directive) -> None:
    """Checked as nginx checks it. What it could switch off is not done here in the first
    place: X-Accel-Redirect is hidden and not followed, X-Accel-Limit-Rate, -Buffering and
    -Charset are hidden (bodies stream unbuffered, unthrottled, without a charset filter), and
    X-Accel-Expires, Expires, Cache-Control, Set-Cookie and Vary only matter to proxy_cache,
    which pylvs does not have; so every value is accepted and the headers cross as before."""
    known = {v.lower() for v in _IGNORABLE}
    for v in d.args:
        if v.lower() not in known:
            raise ConfigError(f'invalid value "{v}"', d.file, d.line)
