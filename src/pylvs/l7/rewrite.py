"""nginx's ``rewrite``, without I/O: what a list of rewrite directives does to a URI.

What this is for: the server-level rewrites (run before a location is chosen) and a location's
own (run once it is chosen), with nginx's rules: each matching directive replaces the URI with
its replacement (``$1``..``$9`` are the regex's captures, ``$name``/``${name}`` variables); a
replacement with ``?`` sets the arguments (the old ones are appended unless it ends with
``?``); no flag goes on to the next directive, ``last`` stops and has the location chosen again,
``break`` stops and stays, ``redirect``/``permanent`` (or a replacement starting with
``http://``, ``https://`` or ``$scheme``) answer 302/301 with the new URI.

What this is not for: choosing locations or answering (``server``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pylvs.l7.config import Rewrite

_REF = re.compile(r"\$(?:(\d)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run of rewrites decided."""

    uri: str
    args: str
    action: str  # "" (unchanged), "changed" (choose the location again), "last", "break",
    # or "redirect" (answer ``status`` with ``location``)
    status: int = 0
    location: str = ""


def expand(replacement: str, m: re.Match[str], variable: Callable[[str], str]) -> str:
    def one(ref: re.Match[str]) -> str:
        if ref.group(1) is not None:
            n = int(ref.group(1))
            return (m.group(n) or "") if n <= (m.re.groups or 0) else ""
        return variable(ref.group(2) or ref.group(3))

    return _REF.sub(one, replacement)


def run(rewrites: tuple[Rewrite, ...], uri: str, args: str,
        variable: Callable[[str], str]) -> Outcome:
    changed = False
    for rw in rewrites:
        m = rw.regex.search(uri)
        if m is None:
            continue
        new = expand(rw.replacement, m, variable)
        if new.startswith(("http://", "https://")) or rw.flag in ("redirect", "permanent"):
            if rw.replacement.endswith("?"):
                new = new[:-1]  # "?" at the end: the request's arguments are dropped
            elif args:
                new = f"{new}&{args}" if "?" in new else f"{new}?{args}"
            status = 301 if rw.flag == "permanent" else 302
            return Outcome(uri, args, "redirect", status, new)
        path, qmark, query = new.partition("?")
        if qmark:
            keep_old = not rw.replacement.endswith("?") and args
            args = f"{query}&{args}" if keep_old and query else (query or (args if keep_old else ""))
        uri = path
        changed = True
        if rw.flag in ("last", "break"):
            return Outcome(uri, args, rw.flag)
    return Outcome(uri, args, "changed" if changed else "")
