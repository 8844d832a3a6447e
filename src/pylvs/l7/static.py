"""Files from disk: ``root`` and ``alias`` paths, the cached fast answer, conditional and range
requests, and streaming large files under the client's flow control.

Why apart from routing: what a file answer looks like (validators, 304, 206/416, a directory's
301, open() errors as 403/404) is nginx's static module, independent of how the location was
chosen; index files and try_files are internal redirects and stay with ``routing``.

Not for: directory listings (nginx's autoindex is not implemented) or choosing the file's
location.
"""

from __future__ import annotations

import errno
import os
import stat

from pylvs.l7 import gzip
from pylvs.l7.config import Location
from pylvs.l7.expires import ExpiresVar
from pylvs.l7.files import etag as file_etag
from pylvs.l7.files import http_date
from pylvs.l7.message import single_range
from pylvs.l7.model import Gzip
from pylvs.l7.notmodified import not_modified, precondition_failed
from pylvs.l7.redirect import absolute
from pylvs.l7.reply import head_bytes, respond, response_head
from pylvs.l7.request import FILE_CHUNK, Request
from pylvs.l7.status import STATUS_200, content_type_line, error_page
from pylvs.l7.variables import expand
from pylvs.l7.worker import Connection


def file_path(loc: Location, uri: str, req: Request | None = None) -> str:
    """The file a URI names in a location: root + URI, or with ``alias`` the alias in place
    of the part the location matched (nginx's rule for prefix and exact locations; a nested
    location inheriting an alias replaces its parent's part). In a regex location the alias,
    with the regex's captures substituted, is the whole path."""
    if loc.alias is None:
        if loc.root_template is not None and req is not None:
            return expand(loc.root_template, req.variable) + uri
        return loc.root + uri
    alias = loc.alias
    if loc.alias_template is not None and req is not None:
        alias = expand(loc.alias_template, req.variable)
    if loc.alias_prefix == -2:
        return alias
    return alias + uri[loc.alias_prefix if loc.alias_prefix >= 0 else len(loc.pattern):]


# A Range or a condition: the task's path answers (``send_file``, ``notmodified``).
_NOT_CACHED = frozenset({b"range", b"if-none-match", b"if-modified-since", b"if-match",
                         b"if-unmodified-since"})


def cached_path(req: Request, loc: Location) -> str | None:
    """The file a request may be answered with at once from the file cache: GET or HEAD of a
    file, with no Range or condition (those, indexes and every error take the task's ordinary
    path); None if it may not. A function of the request head and its location alone (a known
    head keeps it: ``connection``)."""
    method = req.method
    if method != "GET" and method != "HEAD":
        return None
    if loc.gzip is not None or loc.stub_status or loc.gzip_static is not None \
            or isinstance(loc.expires, ExpiresVar):  # (its lines are read per response)
        return None
    uri = req.uri
    hmap = req.hmap
    if uri.endswith("/") or not _NOT_CACHED.isdisjoint(hmap):
        return None
    alias = loc.alias
    if alias is not None and (loc.alias_template is not None or loc.alias_prefix != len(loc.pattern)):
        return None  # captures or an inherited alias: file_path, on the task's path
    if alias is None and loc.root_template is not None:
        return None  # a root with variables: file_path, per request
    return loc.root + uri if alias is None else alias + uri[len(loc.pattern):]


def send_cached(conn: Connection, req: Request, loc: Location, path: str) -> bool:
    """The file at ``path`` (``cached_path``) answered from the file cache; False if it is not
    a small file there (the task's path then answers, with the right error if any)."""
    f = conn.app.files.get(path)
    if f is None:
        return False
    uri = req.uri
    key = f.lines_for
    if key is None or key[0] is not loc or key[1] != uri:
        ext = uri.rpartition("/")[2].rpartition(".")
        ctype = loc.types.get(ext[2].lower(), loc.default_type) if ext[1] else loc.default_type
        v = f.validators
        if not loc.etag:  # (made once per location and URI: the answers after reuse it)
            v = v[:v.find(b"ETag: ")]
        f.lines = content_type_line(ctype) + v + b"Accept-Ranges: bytes\r\n"
        f.lines_for = (loc, uri)
        f.head_date = None
    conn.active = req
    conn.disarm_timer("")
    date = conn.clock.server_date[loc.server_tokens]
    if (f.head_date is date and req.keep_alive and req.seq < loc.keepalive_requests
            and req.start - conn.started <= loc.keepalive_time - 0.002):
        # what head_bytes would make again: same lines and Date, kept alive, no add_header
        # (a head kept only then), and far from keepalive_requests and keepalive_time
        head = req.sent_head = f.head
        req.status = 200
    else:
        head = head_bytes(req, 200, STATUS_200, f.lines, f.size, False)
        if req.keep_alive and not loc.add_header:
            f.head, f.head_date = head, date
    t = conn.transport  # conn.write, inline
    if req.method == "HEAD":
        req.bytes_sent = len(head)
        if t is not None and not conn.closed:
            t.write(head)
    else:
        req.body_bytes_sent = f.size
        req.bytes_sent = len(head) + f.size
        if t is not None and not conn.closed:
            if f.size <= 16384:  # one write; a larger body is not copied to join it
                t.write(head + f.body)
            else:
                t.writelines((head, f.body))
    conn.complete(req)
    return True


async def serve_file(conn: Connection, req: Request, loc: Location) -> None:
    """The file ``req.uri`` names (not ending in /): open errors as nginx reports them, a
    directory as a 301 to its slash form, else the file."""
    if req.method not in ("GET", "HEAD", "POST"):  # a POST is refused once the file exists
        await conn.respond_error(req, 405)
        return
    fpath = file_path(loc, req.uri, req)
    vary = False
    if loc.gzip_static is not None and req.method != "POST":
        served, vary = await _gzip_static(conn, req, loc, fpath, *loc.gzip_static)
        if served:
            return
    try:
        fd = os.open(fpath, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        conn.app.error("error", f'open() "{fpath}" failed (2: No such file or directory)',
                       conn, req)
        await conn.respond_error(req, 404)
        return
    except NotADirectoryError:
        await conn.respond_error(req, 404)
        return
    except PermissionError:
        conn.app.error("error", f'open() "{fpath}" failed (13: Permission denied)', conn, req)
        await conn.respond_error(req, 403)
        return
    except OSError:
        await conn.respond_error(req, 500)
        return
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        loc_hdr = absolute(req, f"{req.uri}/" + (f"?{req.args}" if req.args else ""))
        respond(req, 301, error_page(301, loc.server_tokens),
                [b"Location: " + loc_hdr.encode("latin-1") + b"\r\n"])
        return
    try:
        await send_file(conn, req, loc, fd, st, vary=vary)
    finally:
        os.close(fd)


async def _gzip_static(conn: Connection, req: Request, loc: Location, fpath: str,
                       always: bool, rules: Gzip) -> tuple[bool, bool]:
    """nginx's gzip_static handler: the file's ".gz" beside it, sent with Content-Encoding
    when the client takes gzip (``always``: whatever it takes). (served, and whether the
    answer, this one or the plain file's, gets ``Vary``: gzip_vary, with ``on``, once the .gz
    exists.) Not served: no such .gz (or a directory), an open error (logged), or a client
    that does not take gzip; then the plain file is answered as without it."""
    ok = always or gzip.gzip_ok(req, rules, b"")
    if not ok and not rules.vary:
        return False, False
    gz = fpath + ".gz"
    try:
        fd = os.open(gz, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return False, False
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            level = "error" if e.errno in (errno.EACCES, errno.EMLINK, errno.ELOOP) else "crit"
            conn.app.error(level, f'open() "{gz}" failed ({e.errno}: {e.strerror})', conn, req)
        return False, False
    try:
        vary = not always and rules.vary
        st = os.fstat(fd)
        if not ok or stat.S_ISDIR(st.st_mode):
            return False, vary
        if not stat.S_ISREG(st.st_mode):
            conn.app.error("crit", f'"{gz}" is not a regular file', conn, req)
            await conn.respond_error(req, 404)
            return True, vary
        await send_file(conn, req, loc, fd, st, vary=vary, encoded=True)
        return True, vary
    finally:
        os.close(fd)


async def send_file(conn: Connection, req: Request, loc: Location, fd: int,
                    st: os.stat_result, vary: bool = False, encoded: bool = False) -> None:
    """An open file with its validators: 304 for a matching condition, a single range as 206
    (416 past the end), else the whole file, streamed in pieces under flow control. ``vary``:
    with ``Vary: Accept-Encoding``; ``encoded``: a gzip_static ".gz" (Content-Encoding: gzip,
    the type of the URI's own extension, no ranges: nginx 1.22 sends it whole)."""
    if not stat.S_ISREG(st.st_mode):
        await conn.respond_error(req, 403)
        return
    if req.method == "POST":
        await conn.respond_error(req, 405)
        return
    size = st.st_size
    mtime = int(st.st_mtime)
    last_mod = http_date(mtime)
    etag = file_etag(mtime, size) if loc.etag else None
    etag_line = [b"ETag: " + etag + b"\r\n"] if etag is not None else []
    # (an error page's file is sent whole, with the error's status)
    if not req.error_status and precondition_failed(req.hmap, mtime, etag):
        await conn.respond_error(req, 412)
        return
    if not req.error_status and not_modified(req.hmap, mtime, etag, loc.if_modified_since):
        head = response_head(req, 304, [b"Last-Modified: " + last_mod + b"\r\n", *etag_line,
                                        *([gzip.VARY] if vary else [])])
        conn.write(head)
        req.bytes_sent += len(head)
        return
    ext = req.uri.rpartition("/")[2].rpartition(".")
    ctype = loc.types.get(ext[2].lower(), loc.default_type) if ext[1] else loc.default_type
    status, start, end = req.error_status or 200, 0, size
    hdrs = [b"Content-Type: " + ctype.encode() + b"\r\n",
            b"Last-Modified: " + last_mod + b"\r\n", *etag_line]
    if status != 200:  # an error page's file: nginx drops Last-Modified, keeps a Location
        del hdrs[1]
        if req.error_headers:
            hdrs.append(req.error_headers)
    if encoded:
        hdrs.append(gzip.ENCODING)
    g = loc.gzip
    zipped = False
    if g is not None:
        zipped, also = gzip.decide(req, g, status, ctype.encode("latin-1"), size,
                                   b"".join(hdrs))
        vary = vary or also
    if vary:
        hdrs.append(gzip.VARY)
    if zipped:
        assert g is not None
        await _send_gzipped(conn, req, loc, fd, size, status, hdrs, g.comp_level)
        return
    rng = None if encoded else req.hmap.get(b"range")  # (nginx 1.22: a .gz is sent whole)
    if rng is not None and req.method == "GET" and not req.error_status:
        parsed = single_range(rng, size)
        if parsed is None:
            hdrs = [b"Content-Range: bytes */%d\r\n" % size]
            # nginx's header filters see the file's 200 before the range filter's 416
            respond(req, 416, error_page(416, loc.server_tokens), hdrs, filter_status=200)
            return
        if parsed != (0, size):
            status, (start, end) = 206, parsed
            hdrs.append(b"Content-Range: bytes %d-%d/%d\r\n" % (start, end - 1, size))
    if status == 200 and not encoded:
        hdrs.append(b"Accept-Ranges: bytes\r\n")
    head = response_head(req, status, hdrs, length=end - start)
    req.bytes_sent += len(head)
    if req.method == "HEAD":
        conn.write(head)
        return
    want = end - start
    first = os.pread(fd, min(want, FILE_CHUNK), start) if want else b""
    conn.write(head + first)
    sent = len(first)
    while sent < want and first:
        await conn.drain(loc.send_timeout)
        first = os.pread(fd, min(want - sent, FILE_CHUNK), start + sent)
        conn.write(first)
        sent += len(first)
    req.body_bytes_sent += sent
    req.bytes_sent += sent
    if sent < want:  # the file shrank under us: the framing is now wrong
        req.keep_alive = False
        conn.abort()


async def _send_gzipped(conn: Connection, req: Request, loc: Location, fd: int, size: int,
                        status: int, hdrs: list[bytes], level: int) -> None:
    """The whole file compressed as it is read: no length, no range, a weak ETag."""
    hdrs = [gzip.weak_etag(h) if h.startswith(b"ETag:") else h for h in hdrs]
    hdrs = [h for h in hdrs if h]
    hdrs.append(gzip.ENCODING)
    chunked = req.version == "1.1" and req.method != "HEAD"
    head = response_head(req, status, hdrs, length=None, chunked=chunked)
    conn.write(head)
    req.bytes_sent += len(head)
    if req.method == "HEAD":
        return
    z = gzip.Compressor(level)
    offset, sent = 0, 0
    while True:
        data = os.pread(fd, FILE_CHUNK, offset) if offset < size else b""
        offset += len(data)
        out = z.feed(data) if data else z.finish()
        if out:
            framed = b"%x\r\n%b\r\n" % (len(out), out) if chunked else out
            conn.write(framed)
            sent += len(framed)
        if not data:
            break
        await conn.drain(loc.send_timeout)
    if chunked:
        conn.write(b"0\r\n\r\n")
        sent += 5
    req.body_bytes_sent += sent
    req.bytes_sent += sent
