"""A redirect's Location as nginx's header filter writes it: a value starting with "/" made
absolute (scheme, host, port before the path) unless ``absolute_redirect off``.

Why one function: nginx does this in one place (ngx_http_header_filter_module) for every
Location it sends, whoever set it: the static module's "/dir" -> "/dir/" 301, ``return``,
``rewrite ... redirect``, auto_redirect, and a Location ``proxy_redirect`` rewrote to a path.
pylvs makes those Locations in several modules; all of them come here, so the three
directives that steer it (``redirectconf``) act on all alike:

- ``absolute_redirect off``: the path is sent as it is (a relative Location);
- ``server_name_in_redirect on``: the host is the server block's first ``server_name``;
  otherwise the host the client named (Host, or the request line's), else the local address;
- ``port_in_redirect off``: no port; otherwise the local port unless it is the scheme's own.

Values not starting with "/" (a URL, or a bare word a ``rewrite`` produced) are never touched,
as in nginx. Not for: deciding to redirect (``routing``, ``static``, ``proxyheaders``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class _Conn(Protocol):
    @property
    def local_addr(self) -> str: ...
    @property
    def local_port(self) -> int: ...
    @property
    def scheme(self) -> str: ...


class _Named(Protocol):
    @property
    def server_names(self) -> tuple[str, ...]: ...


class RedirectFlags(Protocol):
    @property
    def absolute_redirect(self) -> bool: ...
    @property
    def server_name_in_redirect(self) -> bool: ...
    @property
    def port_in_redirect(self) -> bool: ...


class Request(Protocol):
    """What the rule reads of a request (``request.Request``; not imported: request imports
    config, which reaches this module through ``proxyheaders``)."""

    @property
    def host(self) -> str: ...
    @property
    def hmap(self) -> Mapping[bytes, bytes]: ...
    @property
    def server(self) -> _Named | None: ...
    @property
    def conn(self) -> _Conn: ...
    @property
    def location(self) -> RedirectFlags | None: ...


def absolute(req: Request, path: str) -> str:
    """``path`` (a Location value) as the client gets it."""
    loc = req.location
    if not path.startswith("/") or (loc is not None and not loc.absolute_redirect):
        return path
    conn = req.conn
    server = req.server
    if loc is not None and loc.server_name_in_redirect and server is not None:
        host = server.server_names[0] if server.server_names else ""
    else:
        host = req.host
        if req.hmap.get(b"host") is None and server is not None and server.server_names \
                and host == server.server_names[0]:
            host = conn.local_addr  # nginx: no Host, no host in the URI
    scheme = conn.scheme
    port = conn.local_port
    if (loc is not None and not loc.port_in_redirect) or port == (80 if scheme == "http" else 443):
        return f"{scheme}://{host}{path}"
    return f"{scheme}://{host}:{port}{path}"
