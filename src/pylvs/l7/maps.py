"""nginx's ``map SOURCE $NAME { ... }`` (ngx_http_map_module): reading a map block and finding
a request's value in it.

Why apart: a map is a variable of the whole http block whose value is looked up lazily, the
first time a request uses it (``Request.variable``), and kept for the rest of that request
unless the map is ``volatile``. Configurations lean on it for the value of one header chosen by
another (``map $http_upgrade $connection_upgrade { default upgrade; '' close; }``), so both its
reading (nginx's ``-t`` words for each misuse) and its matching order must be nginx's:

* the source, a template (``$host$uri``), is expanded; with ``hostnames`` a trailing dot is
  dropped;
* exact keys are compared case-insensitively (nginx lowercases keys and the looked-up value);
  with ``hostnames`` an exact key wins over a leading wildcard (``*.example.com``, or
  ``.example.com`` which also matches ``example.com``; the longest wins), which wins over a
  trailing one (``www.example.*``);
* then the regexes (``~`` case-sensitive, ``~*`` not) in file order, the first match winning;
  its captures become the request's ``$1``.. and named variables (as any nginx regex match);
  nginx tries no regex on an empty source value;
* else ``default`` (or the empty string). A value may hold variables, captures included.

Not for: the per-request cache (``Request.variable`` keeps the value in ``Request.vars``, the
slot ``set`` writes too, as nginx's ``r->variables``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from pylvs.l7.variables import Template, expand


@dataclass(frozen=True)
class Map:
    """One ``map`` block, ready for lookups: exact keys lowercased, wildcards by their fixed
    part, regexes in file order."""

    name: str
    source: Template
    default: Template = ()
    exact: dict[str, Template] = field(default_factory=dict)
    regexes: tuple[tuple[re.Pattern[str], Template], ...] = ()
    hostnames: bool = False
    volatile: bool = False
    # hostnames only: "*.example.com" -> heads["example.com"] (subdomains only;
    # ".example.com" is exact["example.com"] and heads["example.com"]); "www.example.*" ->
    # tails["www.example"]
    heads: dict[str, Template] = field(default_factory=dict)
    tails: dict[str, Template] = field(default_factory=dict)


class Lookup(Protocol):
    """What a lookup reads and changes of a request."""

    def variable(self, name: str) -> str: ...

    def set_captures(self, m: re.Match[str]) -> None: ...


def _wildcard(mp: Map, low: str) -> Template | None:
    """The leading wildcard with the longest fixed part matching ``low``, else the trailing
    one with the longest (nginx's ngx_hash_find_combined after its exact hash)."""
    if mp.heads:
        rest = low
        while True:
            dot = rest.find(".")
            if dot < 0:
                break
            rest = rest[dot + 1:]
            hit = mp.heads.get(rest)
            if hit is not None:
                return hit
    if mp.tails:
        head = low
        while True:
            dot = head.rfind(".")
            if dot <= 0:
                break
            head = head[:dot]
            hit = mp.tails.get(head)
            if hit is not None:
                return hit
    return None


def find(mp: Map, req: Lookup) -> str:
    """The map's value for ``req`` (expanded); a regex match sets the request's captures."""
    value = expand(mp.source, req.variable)
    if mp.hostnames and value.endswith("."):
        value = value[:-1]
    low = value.lower()
    hit = mp.exact.get(low)
    if hit is None and mp.hostnames and value:
        hit = _wildcard(mp, low)
    if hit is None and value:
        for rx, tmpl in mp.regexes:
            m = rx.search(value)
            if m is not None:
                req.set_captures(m)
                hit = tmpl
                break
    if hit is None:
        hit = mp.default
    if len(hit) == 1 and isinstance(hit[0], str):
        return hit[0]
    return expand(hit, req.variable)
