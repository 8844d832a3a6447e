"""A location's proxying prepared once: the request head sent upstream as parts made ahead.

Why apart from ``proxying``: what crosses to the upstream for a location (proxy_set_header lines,
the client headers dropped, the request line's protocol, which statuses the task must see first)
is decided by the configuration alone; deciding it once per location, not per request, is what
keeps the proxied hot path short. Which values follow from the request head and its connection
alone (``HeaderPlan.pure``) is known here too: a repeated head goes up unchanged.

Not for: sending anything (``proxying``) or the HTTP rules of what crosses (``message``).
"""

from __future__ import annotations

from collections.abc import Callable

from pylvs.l7.config import Location
from pylvs.l7.message import HOP_REQUEST
from pylvs.l7.request import Request
from pylvs.l7.variables import Template, expand


class HeaderPlan:
    """A location's proxying prepared once: the proxy_set_header lines (constant ones as bytes,
    the rest as "Name: " plus a function giving the value's bytes), the client header names not
    passed on (those replaced, and hop-by-hop ones), and the protocol of the request line."""

    __slots__ = ("headers", "intercepts", "pure", "retries_on_status", "skip", "version_line")

    def __init__(self, loc: Location) -> None:
        # proxy_intercept_errors: the statuses an error_page of the location answers
        self.intercepts = frozenset(c for c, _, _ in loc.error_pages) \
            if loc.proxy_intercept_errors else frozenset()
        # statuses the task path must see before the client does (not for the fast path)
        self.retries_on_status = any(k.startswith("http_") for k in loc.proxy_next_upstream) \
            or bool(self.intercepts)
        self.headers: list[tuple[bytes, Callable[[Request], bytes] | None]] = []
        overridden = frozenset(n.lower().encode("latin-1") for n, _ in loc.proxy_set_header)
        self.skip = overridden | HOP_REQUEST
        self.version_line = f" HTTP/{loc.proxy_http_version}\r\n".encode("latin-1")
        for name, tmpl in loc.proxy_set_header:
            prefix = name.encode("latin-1") + b": "
            if all(isinstance(p, str) for p in tmpl):
                value = "".join(p for p in tmpl if isinstance(p, str))
                if value:
                    self.headers.append((prefix + value.encode("latin-1") + b"\r\n", None))
            elif len(tmpl) == 1 and not isinstance(tmpl[0], str) and tmpl[0][0] in BYTES_VARIABLES:
                self.headers.append((prefix, BYTES_VARIABLES[tmpl[0][0]]))
            else:
                self.headers.append((prefix, _expander(tmpl)))
        # every value follows from the request head, its routing and the client connection
        # (not from clocks or counters): a head repeated on a connection goes up the same
        self.pure = all(f is None or f in _PURE for _, f in self.headers)


_PLANS: dict[int, tuple[Location, HeaderPlan]] = {}


def header_plan(loc: Location) -> HeaderPlan:
    got = _PLANS.get(id(loc))
    if got is None or got[0] is not loc:
        got = _PLANS[id(loc)] = (loc, HeaderPlan(loc))
    return got[1]


def _expander(tmpl: Template) -> Callable[[Request], bytes]:
    def value(r: Request) -> bytes:
        return expand(tmpl, r.variable).encode("latin-1")
    return value


def _remote_addr(r: Request) -> bytes:
    """$remote_addr: a realip address (``realip``), else the connection's."""
    return r.real_addr.encode("latin-1") if r.real_addr else r.conn.remote_addr_b


def _xff_bytes(r: Request) -> bytes:
    xff = r.hmap.get(b"x-forwarded-for")
    addr = r.real_addr.encode("latin-1") if r.real_addr else r.conn.remote_addr_b
    return xff + b", " + addr if xff is not None else addr  # (an empty line counts)


# Variables proxy_set_header uses most, as bytes straight from the request (no str round trip).
BYTES_VARIABLES: dict[str, Callable[[Request], bytes]] = {
    "host": lambda r: r.host.encode("latin-1"),
    "remote_addr": _remote_addr,
    "proxy_add_x_forwarded_for": _xff_bytes,
    "request_uri": lambda r: r.raw_target,
    "scheme": lambda r: r.conn.scheme.encode(),
    "proxy_host": lambda r: r.proxy_host.encode("latin-1"),
}


_PURE = frozenset(BYTES_VARIABLES.values())
