"""Answering an error status as nginx does: the location's ``error_page`` if one names the
status (an internal redirect to a page, answered with the error's status or the one after
``=``, or a redirect to an absolute URL), else nginx's built-in HTML page.

Why apart: every part of the server ends in an error status somewhere, and the rule "one
error_page redirect per request" must hold whichever part it was.

Not for: choosing the status (the caller) or the page's HTML (``status.error_page``).
"""

from __future__ import annotations

from pylvs.l7.reply import respond
from pylvs.l7.request import Request
from pylvs.l7.routing import named, redirect_internally
from pylvs.l7.status import REDIRECTS, error_page
from pylvs.l7.variables import Template, expand
from pylvs.l7.worker import Connection


async def respond_error(conn: Connection, req: Request, status: int,
                        text: str | None = None) -> None:
    loc = req.location
    if loc is not None and loc.error_pages and not req.error_redirected \
            and req.server is not None:
        for code, target, response in loc.error_pages:
            if code == status:
                await _redirect(conn, req, status, target, response)
                return
    page = error_page(status, loc.server_tokens if loc else True, text)
    respond(req, status, page, [req.error_headers] if req.error_headers else None)


async def _redirect(conn: Connection, req: Request, status: int, target_t: Template,
                    response: int | None) -> None:
    """error_page: an internal redirect to the page (GET), answered with the error's status
    (or the one after "="); an absolute URL is a redirect the client follows."""
    req.error_redirected = True
    loc = req.location
    assert loc is not None and req.server is not None
    target = expand(target_t, req.variable)
    if target.startswith(("http://", "https://")):
        code = response if response in REDIRECTS else 302
        assert code is not None
        respond(req, code, error_page(code, loc.server_tokens),
                [b"Location: " + target.encode("latin-1") + b"\r\n"])
        return
    if target.startswith("@"):  # a named location: the method and URI stay
        req.error_status = status if response is None else max(response, 0)
        await named(conn, req, req.server, target, 0)
        return
    path, _, query = target.partition("?")
    if req.method != "HEAD":
        req.method = "GET"
    req.uri, req.args = path, query
    req.error_status = status if response is None else max(response, 0)
    await redirect_internally(conn, req, req.server, path, 0)
