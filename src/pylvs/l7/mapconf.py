"""Reading a ``map SOURCE $NAME { ... }`` block (and its includes) into a ``maps.Map``, with
nginx's ``-t`` words for each misuse.

Why apart from ``maps``: reading needs the directive readers (``directives``: templates and
PCRE patterns), which need the model, which names ``Map``; the lookup side (``maps``) stays
below all three, so the layers have no cycle.

Not for: looking a request's value up (``maps.find``).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable

from pylvs.l7.directives import pcre, template
from pylvs.l7.maps import Map
from pylvs.l7.syntax import ConfigError, Directive, read_tree
from pylvs.l7.variables import CHANGEABLE, KNOWN, Template

# -- reading ------------------------------------------------------------------------------------

MAX_INCLUDE_DEPTH = 32  # a map's include chain (nginx's has no bound)


def hostname_key(key: str) -> tuple[str, str] | None:
    """A ``hostnames`` map key as (kind, fixed part): "exact", "head" (``*.a.com``), "dot"
    (``.a.com``: the name and its subdomains) or "tail" (``www.a.*``); None where nginx says
    "invalid hostname or wildcard" (a "*" anywhere else, or alone)."""
    if key.startswith("*."):
        rest, kind = key[2:], "head"
    elif key.endswith(".*"):
        rest, kind = key[:-2], "tail"
    elif key.startswith(".") and len(key) > 1:
        rest, kind = key[1:], "dot"
    else:
        rest, kind = key, "exact"
    if "*" in rest or (kind != "exact" and not rest):
        return None
    return kind, rest


class MapReader:
    """One ``map`` block's lines (and its includes' lines), checked with nginx's words."""

    def __init__(self, d: Directive, abspath: Callable[[str], str],
                 declare: Callable[[re.Pattern[str]], re.Pattern[str]]) -> None:
        self.d = d
        self.abspath = abspath
        self.declare = declare
        self.hostnames = self.volatile = False
        self.default: Template | None = None
        self.exact: dict[str, Template] = {}
        self.heads: dict[str, Template] = {}
        self.tails: dict[str, Template] = {}
        self.regexes: list[tuple[re.Pattern[str], Template]] = []

    def read(self) -> Map:
        d = self.d
        name = d.args[1]
        if len(name) < 2 or name[0] != "$":
            raise ConfigError(f'invalid variable name "{name}"', d.file, d.line)
        name = name[1:].lower()
        if name in KNOWN and name not in CHANGEABLE:
            raise ConfigError(f'the duplicate "{name}" variable', d.file, d.line)
        source = template(d.args[0], d)
        assert d.block is not None
        self.lines(d.block, 0)
        return Map(name, source, self.default or (), self.exact, tuple(self.regexes),
                   self.hostnames, self.volatile, self.heads, self.tails)

    def lines(self, block: list[Directive], depth: int) -> None:
        for x in block:
            if x.block is not None:
                raise ConfigError('unexpected "{"', x.file, x.line)
            if not x.args and x.name == "hostnames":
                self.hostnames = True
            elif not x.args and x.name == "volatile":
                self.volatile = True
            elif len(x.args) != 1:
                raise ConfigError("invalid number of the map parameters", x.file, x.line)
            elif x.name == "include":
                self.include(x, depth)
            else:
                self.line(x.name, template(x.args[0], x), x)

    def include(self, x: Directive, depth: int) -> None:
        pattern = self.abspath(x.args[0])
        if glob.has_magic(pattern):
            paths = sorted(glob.glob(pattern))
        elif not os.path.exists(pattern):
            raise ConfigError(f'open() "{pattern}" failed (2: No such file or directory)',
                              x.file, x.line)
        else:
            paths = [pattern]
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f'"include" nested deeper than {MAX_INCLUDE_DEPTH} files',
                              x.file, x.line)
        for p in paths:
            self.lines(read_tree(p), depth + 1)

    def line(self, key: str, value: Template, x: Directive) -> None:
        if key == "default":
            if self.default is not None:
                raise ConfigError("duplicate default map parameter", x.file, x.line)
            self.default = value
            return
        if key.startswith("~"):
            caseless = key.startswith("~*")
            rx = pcre(key[2:] if caseless else key[1:], x, re.IGNORECASE if caseless else 0)
            self.regexes.append((self.declare(rx), value))
            return
        if key.startswith("\\"):
            key = key[1:]
        key = key.lower()  # as nginx's hash does, and so its "conflicting" message shows it
        kind, fixed = ("exact", key) if not self.hostnames else (hostname_key(key)
                                                                 or ("", ""))
        if not kind:
            raise ConfigError(f'invalid hostname or wildcard "{key}"', x.file, x.line)
        # ".a.com" is both the name "a.com" and its subdomains, as in nginx's hash
        table = {"exact": (self.exact,), "head": (self.heads,), "tail": (self.tails,),
                 "dot": (self.exact, self.heads)}[kind]
        for t in table:
            if fixed in t:
                raise ConfigError(f'conflicting parameter "{key}"', x.file, x.line)
        for t in table:
            t[fixed] = value
