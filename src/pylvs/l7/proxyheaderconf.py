"""The directive rows of nginx's proxy module that act on the upstream response's headers
(``proxy_redirect``, ``proxy_hide_header``, ``proxy_pass_header``, ``proxy_cookie_domain``,
``proxy_cookie_path``, ``proxy_ignore_headers``) and how a location's values are merged from
them, in nginx's words for misuse.

Why apart from ``proxyheaders``: that module runs per response and is imported by ``model``
for its types; the rows import ``directives``, which imports ``model`` (one module holding both
would be an import cycle).

Not for: what the rules do to a response (``proxyheaders``).
"""

from __future__ import annotations

import re
from typing import Any

from pylvs.l7.directives import HSL, UNDECLARED, Level, pcre, setting, template
from pylvs.l7.proxyheaders import DEFAULT_HIDDEN, CookieRules, FlagRule, HeaderFilter, Redirect
from pylvs.l7.syntax import ConfigError, Directive
from pylvs.l7.variables import Template, compile_template

_DEFAULT = Redirect((), None, (), default=True)


def _regex_rule(pattern: str, replacement: str, d: Directive) -> Redirect:
    """A ``~regex`` (``~*``: caseless) rule of proxy_redirect or proxy_cookie_*: the regex's
    named captures are variables of the replacement (nginx declares them)."""
    caseless = pattern.startswith("~*")
    regex = pcre(pattern[2 if caseless else 1:], d, re.IGNORECASE if caseless else 0)
    names = {n.lower() for n in regex.groupindex}
    repl = template(replacement, d) if not names else _with_names(replacement, names, d)
    return Redirect((), regex, repl)


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
        rule = _regex_rule(pattern, replacement, d)
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


def _own_rules(lv: Level, d: Directive) -> tuple[Any, ...] | None:
    """The rules ``d``'s directive has on this level so far, nginx's checks of ``off`` made:
    None when ``d`` is the ``off`` line (then stored). A level's own lines replace the
    inherited ones (the first is met with the name not yet in ``seen``)."""
    a = d.args
    own = lv.s.get(d.name) if d.name in lv.seen else None
    lv.seen.add(d.name)
    if own == "off":
        raise ConfigError(f'"{d.name}" directive is duplicate', d.file, d.line)
    rules: tuple[Any, ...] = own if isinstance(own, tuple) else ()
    if len(a) == 1:
        if a[0] != "off":
            raise ConfigError(f'invalid parameter "{a[0]}"', d.file, d.line)
        if rules:
            raise ConfigError(f'"{d.name}" directive is duplicate', d.file, d.line)
        lv.s[d.name] = "off"
        return None
    return rules


def _cookie_rules(lv: Level, d: Directive) -> None:
    """``proxy_cookie_domain`` / ``proxy_cookie_path``: ``off``, or ``FROM TO`` (``~`` / ``~*``
    regexes); a level's own lines replace the inherited ones, as proxy_redirect's do."""
    rules = _own_rules(lv, d)
    if rules is None:
        return
    pattern, replacement = d.args
    domain = d.name == "proxy_cookie_domain"
    if pattern.startswith("~"):
        rule = _regex_rule(pattern, replacement, d)
    elif domain:  # nginx drops a leading dot of both
        rule = Redirect(template(pattern.removeprefix("."), d), None,
                        template(replacement.removeprefix("."), d), domain=True)
    else:
        rule = Redirect(template(pattern, d), None, template(replacement, d))
    lv.s[d.name] = (*rules, rule)


setting("proxy_cookie_domain", HSL, 1, 2)(_cookie_rules)
setting("proxy_cookie_path", HSL, 1, 2)(_cookie_rules)


@setting("proxy_cookie_flags", HSL, 1, 5)
def _proxy_cookie_flags(lv: Level, d: Directive) -> None:
    """``off``, or ``COOKIE FLAG...`` (``~regex`` for the cookie; up to four flags, which may
    hold variables: nginx reads them per request and ignores what it does not know); a
    level's own lines replace the inherited ones."""
    rules = _own_rules(lv, d)
    if rules is None:
        return
    name, *flags = d.args
    regex = pcre(name[1:], d) if name.startswith("~") else None
    rule = FlagRule(() if regex is not None else template(name, d), regex,
                    tuple(template(f, d) for f in flags))
    lv.s[d.name] = (*rules, rule)


def cookie_rules_for(s: dict[str, Any]) -> CookieRules | None:
    domains, paths = s.get("proxy_cookie_domain"), s.get("proxy_cookie_path")
    flags = s.get("proxy_cookie_flags")
    d = domains if isinstance(domains, tuple) else ()
    p = paths if isinstance(paths, tuple) else ()
    f = flags if isinstance(flags, tuple) else ()
    return CookieRules(d, p, f) if d or p or f else None


# nginx's proxy_ignore_headers values (ngx_http_upstream_ignore_headers_masks)
_IGNORABLE = ("X-Accel-Redirect", "X-Accel-Expires", "X-Accel-Limit-Rate", "X-Accel-Buffering",
              "X-Accel-Charset", "Expires", "Cache-Control", "Set-Cookie", "Vary")


@setting("proxy_ignore_headers", HSL, 1, -1)
def _proxy_ignore_headers(lv: Level, d: Directive) -> None:
    """Checked as nginx checks it. X-Accel-Redirect switches off following that header
    (``accel``); the rest is not done here in the first place: X-Accel-Limit-Rate, -Buffering
    and -Charset are hidden (bodies stream unbuffered, unthrottled, without a charset filter),
    and X-Accel-Expires, Expires, Cache-Control, Set-Cookie and Vary only matter to
    proxy_cache, which pylvs does not have. A level's lines replace its parent's set."""
    known = {v.lower() for v in _IGNORABLE}
    for v in d.args:
        if v.lower() not in known:
            raise ConfigError(f'invalid value "{v}"', d.file, d.line)
    own = lv.s["proxy_ignore_headers"] if "proxy_ignore_headers" in lv.seen else frozenset()
    lv.seen.add("proxy_ignore_headers")
    lv.s["proxy_ignore_headers"] = own | {v.lower() for v in d.args}
