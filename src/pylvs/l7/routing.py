"""From a request head to what answers it, as nginx's phases run: the server by Host, the URI
normalised, server-level rewrites, the location, then the location's rewrites, ``return``,
``try_files``, ``proxy_pass`` or files (with index files), and the internal redirects between
them (bounded, as nginx's, at 10). A level's script (rewrite, return, set, if, break) runs as
``rewrite.run_script`` says; named locations (``@name``) are reached from try_files and
error_page only.

Why one module: these steps decide together which location finally answers and each may send
the request back to the start of location matching; reading them in one place is reading
nginx's rewrite and content phases.

Not for: the matching rules themselves (``location``), what a rewrite computes (``rewrite``),
serving a file (``static``) or proxying (``proxying``).
"""

from __future__ import annotations

import errno
import os

from pylvs.l7 import access, authbasic, autoindex, proxying, realip, rewrite
from pylvs.l7.accel import Carried, unsafe_uri
from pylvs.l7.config import Location, Return, Server
from pylvs.l7.location import BadURI, host_of, is_auto_redirect, normalize
from pylvs.l7.redirect import absolute
from pylvs.l7.reply import respond, response_head
from pylvs.l7.request import Request
from pylvs.l7.static import file_path, serve_file
from pylvs.l7.stats import stub_page
from pylvs.l7.status import REDIRECTS, content_type_line, error_page
from pylvs.l7.variables import expand
from pylvs.l7.worker import Connection

MAX_REDIRECTS = 10  # nginx's limit on internal redirects (rewrite cycles, try_files, index)
INTERNAL_ONLY = Return(404, None)  # what a client's request for an ``internal`` location gets


def test_file(kind: str, path: str) -> bool:
    """``if``'s file tests: -f a file, -d a directory, -e anything, -x executable."""
    if kind == "-f":
        return os.path.isfile(path)
    if kind == "-d":
        return os.path.isdir(path)
    if kind == "-e":
        return os.path.lexists(path)
    return os.path.exists(path) and os.access(path, os.X_OK)


def _absolute_form(req: Request) -> str | None:
    """``http://host[:port]/path``: the target becomes its path (what $request_uri and the
    upstream see, as in nginx) and the host is returned; None if it is not a valid one."""
    target = req.target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    authority, slash, path = rest.partition("/")
    host = host_of(authority)
    if host is None:
        return None
    req.target = slash + path if slash else "/"
    req.raw_target = req.target.encode("latin-1")
    return host


def route(conn: Connection, req: Request) -> int:
    """Choose the server and location (no I/O); 0, or the error status to answer."""
    host_raw = req.hmap.get(b"host")
    if req.target[:1] != "/":  # nginx takes the host of an absolute URI before Host
        server = conn.group.servers[0]
        req.server, req.location = server, server.fallback
        if req.method == "CONNECT":
            return 400
        uri_host = _absolute_form(req)
        if uri_host is None:
            return 400
        host = uri_host
        server = conn.group.select(host)
    elif host_raw is not None and host_raw == conn.host_raw:
        host, server = conn.host_seen  # a keep-alive client repeats its Host
    else:
        server = conn.group.servers[0]
        req.server = server
        req.location = server.fallback
        if host_raw is None:
            if req.version == "1.1":
                return 400
            host = ""
        else:
            valid = host_of(host_raw.decode("latin-1"))
            if valid is None:
                return 400
            host = valid
        server = conn.group.select(host)
        if host_raw is not None:
            conn.host_raw = host_raw
            conn.host_seen = (host, server)
    req.server = server
    req.host = host or server.server_names[0]
    if server.name_regexes:
        m = conn.group.name_match(server, host)
        if m is not None:
            req.set_captures(m)
    target = req.target
    if "#" in target:  # a fragment is no part of the URI (it stays in $request_uri)
        target = target[:target.find("#")]
    path, _, args = target.partition("?")
    if args:
        req.args = args
    req.location = server.fallback
    if req.method == "TRACE":
        req.keep_alive = False
        conn.app.error("info", "client sent TRACE method", conn, req)
        return 405
    try:
        req.uri = normalize(path)
    except BadURI:
        return 400
    post_read = server.fallback.realip
    if post_read is not None:  # nginx's post-read phase: the server's realip settings
        realip.apply(req, post_read, conn.remote_addr, conn.pp)
    if server.rewrites:
        out = rewrite.run_script(server.rewrites, req, test_file)
        if out.action == "redirect":
            req.redirect = (out.status, out.location)
        elif out.action == "return":
            req.returned = out.ret  # answered with the server's own configuration
            return 0
    if req.chunked and req.hmap.get(b"transfer-encoding", b"").lower() != b"chunked":
        conn.app.error("info", 'client sent unknown "Transfer-Encoding": "'
                       f'{req.header(b"transfer-encoding")}"', conn, req)
        return 501
    loc = conn.group.matchers[id(server)].match(req.uri)
    req.location = loc
    if loc.internal and not req.internal and req.redirect is None:
        # nginx's find-config phase: a client's own URI gets 404 there, unlogged, before the
        # location's script runs (answered as ``return 404`` would be: same page, error_page).
        # Only this first match can be a client's: every later one follows an internal
        # redirect (try_files, index, error_page, rewrite), which nginx lets in.
        req.returned = INTERNAL_ONLY
        return 0
    if loc.captures is not None:
        _capture(req, loc)
    if req.content_length is not None and req.content_length > loc.client_max_body_size > 0:
        conn.app.error("error", f"client intended to send too large body: "
                                f"{req.content_length} bytes", conn, req)
        return 413
    if loc.auto_redirect and req.redirect is None and is_auto_redirect(loc, req.uri):
        req.redirect = (301, _slashed(req))
    return 0


def _slashed(req: Request) -> str:
    """nginx's auto_redirect target: the URI with its slash, then the arguments."""
    return req.uri + "/" + (f"?{req.args}" if req.args else "")


async def handle(conn: Connection, req: Request) -> bool:
    """Answer a request (``route`` ran, or runs now); False if it was refused before a
    location took it (its body, if any, is then left unread: the connection closes)."""
    code = route(conn, req) if req.routed < 0 else req.routed
    if code:
        await conn.respond_error(req, code)
        return False
    assert req.location is not None and req.server is not None
    if req.accel is not None:  # the fast path's upstream answered with X-Accel-Redirect
        await follow_accel(conn, req, req.server, 0)
        return True
    if req.expect_continue:
        conn.maybe_continue(req)  # nginx answers Expect before reading or discarding the body
    if req.redirect is not None:
        rewrite_redirect(req, req.location)
    elif req.returned is not None:
        await return_(conn, req, req.location, req.returned)
    else:
        await dispatch(conn, req, req.location, req.server, 0)
    return True


async def redirect_internally(conn: Connection, req: Request, server: Server, uri: str,
                              depth: int) -> None:
    """An internal redirect: choose the location for ``uri`` again and run it."""
    nloc = conn.group.matchers[id(server)].match(uri)
    req.location = nloc
    if nloc.auto_redirect and is_auto_redirect(nloc, uri):
        req.uri = uri
        req.redirect = (301, _slashed(req))
        rewrite_redirect(req, nloc)
        return
    if nloc.captures is not None:
        _capture(req, nloc)
    await dispatch(conn, req, nloc, server, depth + 1)


def _capture(req: Request, loc: Location) -> None:
    """The location's regex captures ($1.., named) for its values."""
    assert loc.captures is not None
    m = loc.captures.search(req.uri)
    if m is not None:
        req.set_captures(m)


async def named(conn: Connection, req: Request, server: Server, name: str, depth: int) -> None:
    """An internal redirect to ``@name`` (try_files, error_page): the URI stays."""
    loc = server.named.get(name) if server.named else None
    if loc is None:
        conn.app.error("error", f'could not find named location "{name}"', conn, req)
        await conn.respond_error(req, 500)
        return
    req.location = loc
    await dispatch(conn, req, loc, server, depth + 1)


async def dispatch(conn: Connection, req: Request, loc: Location, server: Server,
                   depth: int) -> None:
    """Run a chosen location: its script, then try_files, proxy_pass or files (of the
    location, or of the last if block whose condition held)."""
    if loc.rewrites:
        out = rewrite.run_script(loc.rewrites, req, test_file)
        if out.conf is not None:
            loc = req.location = out.conf
        if out.action == "redirect":
            req.redirect = (out.status, out.location)
            rewrite_redirect(req, loc)
            return
        if out.action == "return":
            assert out.ret is not None
            await return_(conn, req, loc, out.ret)
            return
        if out.action in ("last", "changed"):
            if depth >= MAX_REDIRECTS:
                conn.app.error("error", "rewrite or internal redirection cycle while "
                               f'processing "{req.uri}"', conn, req)
                await conn.respond_error(req, 500)
                return
            await redirect_internally(conn, req, server, req.uri, depth)
            return
    if loc.realip is not None and not req.real_addr:  # preaccess: the location's settings
        realip.apply(req, loc.realip, conn.remote_addr, conn.pp)
    if loc.access or loc.auth_basic is not None:
        # nginx's access phase: after the rewrite phase (a return above answered first)
        code = access_phase(conn, req, loc)
        if code:
            await conn.respond_error(req, code)
            return
    if loc.stub_status:
        await stub_status(conn, req)
    elif loc.try_files is not None:
        await try_files(conn, req, loc, server, depth)
    elif loc.proxy_pass is not None:
        await proxying.run(conn, req, loc)
        if req.accel is not None:
            await follow_accel(conn, req, server, depth)
    else:
        await files(conn, req, loc, server, depth)


def access_phase(conn: Connection, req: Request, loc: Location) -> int:
    """nginx's access phase: ``allow``/``deny``, then ``auth_basic``; 0 admits, else the
    status to answer. ``satisfy all``: the first refusal answers. ``satisfy any``: the first
    admission admits; else 401 if auth_basic asked for credentials, 403 otherwise (nginx's
    post-access phase), and a module not configured here neither admits nor refuses."""
    any_ = loc.satisfy_any
    code = 0
    if loc.access:
        if access.allowed(loc.access, req.real_addr or conn.remote_addr):
            if any_:
                return 0
        elif any_:
            code = 403
        else:
            conn.app.error("error", "access forbidden by rule", conn, req)
            return 403
    if loc.auth_basic is not None and loc.auth_basic_user_file is not None:
        realm = expand(loc.auth_basic, req.variable)
        if realm != "off":
            got = authbasic.check(
                realm, expand(loc.auth_basic_user_file, req.variable),
                req.hmap.get(b"authorization"),
                lambda level, message: conn.app.error(level, message, conn, req))
            if got == 401:
                req.error_headers += authbasic.challenge(realm)
            if not any_ or got == 0 or got == 500:
                return got
            code = 401 if got == 401 or code == 401 else got
    if code == 403:
        conn.app.error("error", "access forbidden by rule", conn, req)
    return code


async def follow_accel(conn: Connection, req: Request, server: Server, depth: int) -> None:
    """An upstream's X-Accel-Redirect (``accel``): a named location, or an internal redirect
    to the URI it names as a GET (HEAD stays), with what crosses it kept on the request."""
    head = req.accel
    assert head is not None and head.accel is not None
    req.accel = None
    req.carried = Carried.of(head.headers)
    if depth >= MAX_REDIRECTS:
        conn.app.error("error", "rewrite or internal redirection cycle while processing "
                       f'"{req.uri}"', conn, req)
        await conn.respond_error(req, 500)
        return
    target = head.accel
    if target.startswith(b"@"):
        await named(conn, req, server, target.decode("latin-1"), depth)
        return
    parsed = unsafe_uri(target)
    if parsed is None:
        conn.app.error("error", f'unsafe URI "{target.decode("latin-1")}" was detected', conn,
                       req)
        await conn.respond_error(req, 404)
        return
    if req.method != "HEAD":
        req.method = "GET"
    req.uri, req.args = parsed
    req.internal = True
    await redirect_internally(conn, req, server, req.uri, depth)


async def stub_status(conn: Connection, req: Request) -> None:
    """nginx's stub_status page (GET and HEAD; other methods 405 as nginx's handler)."""
    if req.method != "GET" and req.method != "HEAD":
        await conn.respond_error(req, 405)
        return
    respond(req, 200, stub_page(conn.app.stats), content_type=b"text/plain")


async def files(conn: Connection, req: Request, loc: Location, server: Server,
                depth: int) -> None:
    """nginx's index and static modules: a URI ending in / is an internal redirect to its
    first existing index file (403 for a directory without one, else 404); others a file."""
    uri = req.uri
    if not uri.endswith("/"):
        await serve_file(conn, req, loc)
        return
    for name in loc.index:
        candidate = uri + name
        if os.path.isfile(file_path(loc, candidate, req)) and depth < MAX_REDIRECTS:
            req.uri = candidate
            await redirect_internally(conn, req, server, candidate, depth)
            return
    path = file_path(loc, uri, req)
    if not os.path.isdir(path):
        await conn.respond_error(req, 404)
    elif loc.autoindex is not None and req.method in ("GET", "HEAD"):
        await _autoindex(conn, req, loc.autoindex, path)
    else:
        conn.app.error("error", f'directory index of "{path}" is forbidden', conn, req)
        await conn.respond_error(req, 403)


async def _autoindex(conn: Connection, req: Request, ai: autoindex.AutoIndex,
                     path: str) -> None:
    """nginx's autoindex answer to a GET or HEAD (other methods get the 403 of a directory
    without an index, as nginx's): the listing, chunked (HTTP/1.0: until the close), no
    validators; 403 if the directory may not be read, 500 if it cannot."""
    try:
        body = autoindex.listing(req.uri, path, ai)
    except OSError as e:
        conn.app.error("error", f'opendir() "{path}" failed ({e.errno}: {e.strerror})',
                       conn, req)
        await conn.respond_error(req, 403 if e.errno == errno.EACCES else 500)
        return
    chunked = req.version == "1.1" and req.method != "HEAD"
    head = response_head(req, 200, [b"Content-Type: " + autoindex.CONTENT_TYPES[ai.format]
                                    + b"\r\n"], chunked=chunked)
    if req.method == "HEAD":
        out = head
    elif chunked:
        out = head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    else:
        out = head + body
    conn.write(out)
    req.bytes_sent += len(out)
    req.body_bytes_sent += len(body) if req.method != "HEAD" else 0


async def try_files(conn: Connection, req: Request, loc: Location, server: Server,
                    depth: int) -> None:
    """nginx's try_files: the first candidate that exists is served from this location (a
    candidate ending in / must be a directory); else the last argument: =CODE, or an
    internal redirect to that URI, which is matched against the locations again."""
    assert loc.try_files is not None
    candidates, fallback = loc.try_files
    for t in candidates:
        cand = expand(t, req.variable)
        if not cand.startswith("/"):
            continue
        path = file_path(loc, cand, req)
        found = os.path.isdir(path) if cand.endswith("/") else os.path.isfile(path)
        if found:
            req.uri = cand
            await files(conn, req, loc, server, depth)
            return
    if isinstance(fallback, int):
        await conn.respond_error(req, fallback)
        return
    target = expand(fallback, req.variable)
    if target.startswith("@"):
        await named(conn, req, server, target, depth)
        return
    if depth >= MAX_REDIRECTS or not target.startswith("/"):
        conn.app.error("error", f'rewrite or internal redirection cycle while internally '
                                f'redirecting to "{target}"', conn, req)
        await conn.respond_error(req, 500)
        return
    path, _, query = target.partition("?")
    req.uri = path
    if query:
        req.args = query
    await redirect_internally(conn, req, server, path, depth)


def rewrite_redirect(req: Request, loc: Location) -> None:
    """A rewrite's redirect (or auto_redirect's); a target starting with "/" is made absolute
    as nginx's header filter makes it (``redirect``)."""
    assert req.redirect is not None
    status, target = req.redirect
    target = absolute(req, target)
    respond(req, status, error_page(status, loc.server_tokens),
            [b"Location: " + target.encode("latin-1") + b"\r\n"])


async def return_(conn: Connection, req: Request, loc: Location, ret: Return) -> None:
    """nginx's ``return``: 444 closes, a redirect code sends Location, a text is the body,
    any other code its error page."""
    code = ret.code
    if code == 444:
        req.status = 444
        req.keep_alive = False
        conn.abort()
        return
    text = expand(ret.text, req.variable) if ret.text is not None else None
    if code in REDIRECTS:
        location = absolute(req, text or "")
        # the page may be an error_page's, which keeps the Location
        req.error_headers = b"Location: " + location.encode("latin-1") + b"\r\n"
        await conn.respond_error(req, code)
    elif (code == 204 or code == 304) and text is None:
        # no body; nginx sends 304 with the default type and a zero length, 204 bare
        hdrs = [content_type_line(loc.default_type)] if code == 304 else []
        head = response_head(req, code, hdrs, length=0 if code == 304 else None)
        conn.write(head)
        req.bytes_sent += len(head)
    elif text is not None:
        # an error_page's target answers with the error's status (nginx's err_status)
        respond(req, req.error_status or code, text.encode(),
                content_type=loc.default_type.encode())
    else:
        await conn.respond_error(req, code)
