"""``internal``, ``etag``/``if_modified_since`` and the realip module (set_real_ip_from,
real_ip_header, real_ip_recursive) answered as real nginx 1.22 answers them: the same raw
requests to both, from 127.0.0.1 and from other 127.0.0.0/8 addresses (trusted or not), with
the access and error logs compared too."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.l7.conftest import Response, Stack
from tests.l7.test_map_access_expires import _TEMPS, From
from tests.l7.test_nginx_interop import _compare, _emerg, _real_nginx, nginx_bin, t_both

__all__ = ["nginx_bin"]  # (the fixture, imported for the tests below)

_H = "Host: localhost\r\n"
# the files' modification time, and its HTTP date (If-Modified-Since values are made from it)
MTIME = 1577934245
LAST_MOD = "Thu, 02 Jan 2020 03:04:05 GMT"


def _req(path: str, extra: str = "", host: str = "localhost") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()


def _files(stack: Stack) -> None:
    html = stack.tmp / "html"
    for d in ("in/nest", "in-page", "err", "noetag", "before", "imsoff", "plain", "rx", "ix"):
        (html / d).mkdir(parents=True, exist_ok=True)
    for f in ("in/f.txt", "in/404.html", "noetag/f.txt", "before/f.txt", "imsoff/f.txt",
              "plain/f.txt", "rx/f.txt", "ix/f.txt"):
        (html / f).write_text(f"file {f}\n")
        os.utime(html / f, (MTIME, MTIME))


# -- internal ----------------------------------------------------------------------------------

INTERNAL_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-int.pid;
error_log {tmp}/error-int-{port}.log info;
events {{ worker_connections 64; }}
http {{
""" + _TEMPS + """
    access_log {tmp}/access-int-{port}.log;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        rewrite ^/srv-rw$ /in/f.txt;
        location /in/ {{ internal; location /in/nest/ {{ return 200 "nested\\n"; }} }}
        location /ret-in/ {{ internal; return 200 "script\\n"; }}
        location /in-page/ {{ internal; error_page 404 /in/404.html; }}
        location /tf {{ try_files /nope /in/f.txt; }}
        location /tf-named {{ try_files /nope @named; }}
        location @named {{ rewrite ^ /in/f.txt last; }}
        location /rw {{ rewrite ^ /in/f.txt last; }}
        location /rw-break {{ rewrite ^ /in/f.txt break; }}
        location /err/ {{ error_page 404 /in/404.html; }}
        location /ret {{ error_page 418 = /in/f.txt; return 418; }}
        location = /ix/ {{ index f.txt; }}
        location /ix/ {{ internal; }}
    }}
}}
"""

INTERNAL_PATHS = ["/in/f.txt", "/in/", "/in/nest/x", "/ret-in/x", "/in-page/x", "/tf", "/tf-named",
                  "/rw", "/rw-break", "/err/nothing", "/ret", "/srv-rw", "/in/../in/f.txt",
                  "/%69n/f.txt", "/ix/", "/ix/f.txt"]


def test_internal_locations_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """A client's URI matching an internal location (or one nested in it) gets nginx's 404,
    before the location's script and with its error_page; try_files, a named location's
    rewrite, rewrite last/break, error_page, index and a server-level rewrite reach it."""
    _files(stack)
    requests = [_req(p) for p in INTERNAL_PATHS]
    _compare(stack, nginx_bin, INTERNAL_CONF, "int", requests)
    # and the same heads again on keep-alive connections: a known head is no way in
    ours = stack.port

    def again(port: int) -> list[int]:
        c = From(port, "127.0.0.1")
        got = [c.one(r.replace(b"Connection: close\r\n", b"")).status
               for r in requests for _ in range(2)]
        c.close()
        return got

    ours_again = again(ours)
    assert ours_again[:6] == [404] * 6 and ours_again[10] == 200, ours_again
    with _real_nginx(stack, nginx_bin, "int-again", INTERNAL_CONF) as theirs:
        assert again(theirs) == ours_again
        their_log = _log_lines(stack.tmp / f"error-int-{theirs}.log")
    # the same error-log lines (the open() of /err/nothing), none for a client's request of an
    # internal location
    ours_log = _log_lines(stack.tmp / f"error-int-{ours}.log")
    assert set(ours_log) == set(their_log) and len(their_log) == 2
    assert not [line for line in ours_log if "/in" in line.partition("request:")[2]]


def _log_lines(path: Path) -> list[str]:
    """An error log's [error] lines from the message on (time, pid and the connection's
    number dropped)."""
    return [re.sub(r"^\*\d+ ", "", line.split("] ", 1)[1].split(": ", 1)[1])
            for line in path.read_text().splitlines() if "[error]" in line]


REFUSED = {
    "server": "server { listen 127.0.0.1:8080; internal; }",
    "arg": "server { listen 127.0.0.1:8080; location / { internal on; } }",
    "twice": "server { listen 127.0.0.1:8080; location / { internal; internal; } }",
    "etag": "server { listen 127.0.0.1:8080; etag maybe; }",
    "etag2": "etag on; etag off;",
    "ims": "if_modified_since later;",
    "ims2": "if_modified_since off; if_modified_since exact;",
    "realip": "set_real_ip_from 300.1.1.1;",
    "realip_name": "set_real_ip_from no-such-host.invalid;",
    "realip_cidr": "set_real_ip_from 10.0.0.0/40;",
    "realip_rec": "real_ip_recursive yes;",
    "realip_rec2": "real_ip_recursive on; real_ip_recursive off;",
    "realip_hdr": "real_ip_header;",
    "realip_main": "}\nset_real_ip_from 10.0.0.1;\nhttp {",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_where_nginx_refuses(tmp_path: Path, nginx_bin: str, name: str) -> None:
    """Misuse of the new directives: ``pylvs http -t`` says what nginx -t says."""
    theirs, ours = t_both(tmp_path, nginx_bin, f"events {{}}\nhttp {{\n{REFUSED[name]}\n}}\n")
    assert theirs.returncode == 1 and ours.returncode == 1, (theirs.stderr, ours.stderr)
    assert _emerg(ours.stderr) == _emerg(theirs.stderr)


def test_accepted_where_nginx_accepts(tmp_path: Path, nginx_bin: str) -> None:
    """Every level and value nginx takes, ``unix:`` and a name among the trusted; a CIDR
    with bits past its prefix warned about as nginx warns."""
    body = """
    etag off; if_modified_since before;
    set_real_ip_from 10.0.0.0/8; set_real_ip_from unix:; set_real_ip_from localhost;
    set_real_ip_from ::1; set_real_ip_from 2001:db8::/32; set_real_ip_from 10.1.1.1/8;
    real_ip_header X-Forwarded-For; real_ip_recursive on;
    server {
        listen 127.0.0.1:8080;
        etag on; if_modified_since off; real_ip_header proxy_protocol;
        set_real_ip_from 127.0.0.1;
        location / { internal; etag off; if_modified_since exact; real_ip_header CF-Connecting-IP;
                     real_ip_recursive off; set_real_ip_from 127.0.0.2; }
    }"""
    theirs, ours = t_both(tmp_path, nginx_bin, f"events {{}}\nhttp {{\n{body}\n}}\n")
    assert theirs.returncode == 0 and ours.returncode == 0, (theirs.stderr, ours.stderr)

    def warns(err: str) -> list[str]:  # from the message on (nginx puts a pid before it)
        return [x[x.index("low address"):] for x in err.splitlines() if "[warn]" in x]

    assert warns(ours.stderr) == warns(theirs.stderr) and len(warns(ours.stderr)) == 1


# -- etag and if_modified_since ----------------------------------------------------------------

ETAG_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-etag.pid;
error_log {tmp}/error-etag.log;
events {{ worker_connections 64; }}
http {{
""" + _TEMPS + """
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /noetag/ {{ etag off; }}
        location /before/ {{ if_modified_since before; }}
        location /imsoff/ {{ if_modified_since off; }}
        location /rx/ {{ etag off; location /rx/f.txt {{ }} }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name off.example;
        root {tmp}/html;
        etag off;
        if_modified_since before;
        location /plain/ {{ etag on; }}
    }}
}}
"""

CONDITIONS = [
    "",
    f"If-Modified-Since: {LAST_MOD}\r\n",
    "If-Modified-Since: Fri, 03 Jan 2020 03:04:05 GMT\r\n",
    "If-Modified-Since: Wed, 01 Jan 2020 03:04:05 GMT\r\n",
    "If-Modified-Since: Thursday, 02-Jan-20 03:04:05 GMT\r\n",
    "If-Modified-Since: Thu Jan  2 03:04:05 2020\r\n",
    "If-Modified-Since: yesterday\r\n",
    "If-None-Match: *\r\n",
    "If-None-Match: \"other\"\r\n",
    "If-None-Match: ETAG\r\n",
    "If-None-Match: \"x\", W/ETAG\r\n",
    "If-None-Match: \"x\" , ETAG , \"y\"\r\n",
    f"If-None-Match: ETAG\r\nIf-Modified-Since: {LAST_MOD}\r\n",
    "If-None-Match: ETAG\r\nIf-Modified-Since: Wed, 01 Jan 2020 03:04:05 GMT\r\n",
    f"If-None-Match: \"other\"\r\nIf-Modified-Since: {LAST_MOD}\r\n",
    f"If-None-Match: *\r\nIf-Modified-Since: {LAST_MOD}\r\n",
    # preconditions (412 first: before If-None-Match and If-Modified-Since)
    "If-Match: *\r\n",
    "If-Match: ETAG\r\n",
    "If-Match: W/ETAG\r\n",
    "If-Match: \"x\"\r\n",
    "If-Match: \"x\", ETAG\r\n",
    f"If-Unmodified-Since: {LAST_MOD}\r\n",
    "If-Unmodified-Since: Wed, 01 Jan 2020 03:04:05 GMT\r\n",
    "If-Unmodified-Since: Fri, 03 Jan 2020 03:04:05 GMT\r\n",
    "If-Unmodified-Since: junk\r\n",
    f"If-Match: \"x\"\r\nIf-None-Match: ETAG\r\nIf-Modified-Since: {LAST_MOD}\r\n",
    f"If-Unmodified-Since: {LAST_MOD}\r\nIf-None-Match: ETAG\r\n",
    "If-Unmodified-Since: junk\r\nRange: bytes=99-\r\n",
]


def test_etag_and_if_modified_since_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """Each location's file with each condition: ETag present or not, 200 or 304 (``*``
    matches a file sent without ETag, a named tag does not; exact, before and off dates;
    both conditions must agree; If-Match and If-Unmodified-Since failing first with 412),
    server-level settings inherited and overridden."""
    _files(stack)
    requests = []
    for path, host in (("/plain/f.txt", "localhost"), ("/noetag/f.txt", "localhost"),
                       ("/before/f.txt", "localhost"), ("/imsoff/f.txt", "localhost"),
                       ("/rx/f.txt", "localhost"), ("/noetag/f.txt", "off.example"),
                       ("/plain/f.txt", "off.example")):
        size = len(f"file {path[1:]}\n")
        tag = f'"{MTIME:x}-{size:x}"'
        requests += [_req(path, c.replace("ETAG", tag), host) for c in CONDITIONS]
    _compare(stack, nginx_bin, ETAG_CONF, "etag", requests)


def test_etag_off_on_the_cached_file_path(stack: Stack, nginx_bin: str) -> None:
    """The same small file asked again and again over keep-alive (pylvs answers those from
    its file cache, whose header lines are kept per location): no ETag where it is off, even
    when another location serves the same file with one in between."""
    _files(stack)
    seq = [b"GET /noetag/f.txt HTTP/1.1\r\n" + _H.encode() + b"\r\n"] * 3 + \
        [b"GET /plain/f.txt HTTP/1.1\r\n" + _H.encode() + b"\r\n"] * 2 + \
        [b"GET /noetag/f.txt HTTP/1.1\r\nHost: off.example\r\n\r\n"] * 2 + \
        [b"GET /plain/f.txt HTTP/1.1\r\nHost: off.example\r\n\r\n"] * 2 + \
        [b"HEAD /noetag/f.txt HTTP/1.1\r\n" + _H.encode() + b"\r\n"] * 2
    (stack.tmp / "html" / "plain").mkdir(parents=True, exist_ok=True)

    def run(port: int) -> list[tuple[int, str | None, str | None]]:
        out = []
        for _ in range(2):
            c = From(port, "127.0.0.1")
            for r in seq:
                got = c.one(r, head_only=r.startswith(b"HEAD"))
                out.append((got.status, got.headers.get("etag"), got.headers.get("last-modified")))
            c.close()
        return out

    ours = run(stack.proxy(ETAG_CONF))
    with _real_nginx(stack, nginx_bin, "etag-again", ETAG_CONF) as port:
        theirs = run(port)
    assert ours == theirs
    assert ours[0] == (200, None, LAST_MOD) and ours[3][1] is not None


# -- realip ------------------------------------------------------------------------------------

REALIP_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-rip.pid;
error_log {tmp}/error-rip-{port}.log;
events {{ worker_connections 64; }}
http {{
""" + _TEMPS + """
    log_format ra '$host $remote_addr $realip_remote_addr "$request" $status';
    access_log {tmp}/access-rip-{port}.log ra;
    # server level (post-read): X-Forwarded-For, the last address only
    server {{
        listen 127.0.0.1:{port};
        server_name xff;
        root {tmp}/html;
        set_real_ip_from 127.0.0.2;
        set_real_ip_from 127.0.0.3/32;
        set_real_ip_from 10.9.0.0/16;
        real_ip_header X-Forwarded-For;
        location / {{ return 200 "$remote_addr $realip_remote_addr [$remote_port] $proxy_add_x_forwarded_for\\n"; }}
        # (too late: the server's setting applied before the location was chosen)
        location /rec {{ real_ip_recursive on; return 200 "$remote_addr\\n"; }}
        location /plain/ {{ add_header X-Client "$remote_addr $realip_remote_addr"; }}
        location /deny/ {{ deny 10.0.0.0/8; alias {tmp}/html/plain/; }}
        location /px/ {{
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_pass http://127.0.0.1:{app}/app/x?echo=headers;
        }}
        location /err/ {{ }}
    }}
    # server level, recursive
    server {{
        listen 127.0.0.1:{port};
        server_name rec;
        set_real_ip_from 127.0.0.2;
        set_real_ip_from 127.0.0.3/32;
        set_real_ip_from 10.9.0.0/16;
        real_ip_header X-Forwarded-For;
        real_ip_recursive on;
        location / {{ return 200 "$remote_addr $realip_remote_addr [$remote_port]\\n"; }}
    }}
    # location level (preaccess): X-Real-IP by default
    server {{
        listen 127.0.0.1:{port};
        server_name loc;
        root {tmp}/html;
        location / {{ return 200 "$remote_addr $realip_remote_addr\\n"; }}
        location /locr {{ set_real_ip_from 127.0.0.2; return 200 "$remote_addr $realip_remote_addr\\n"; }}
        location /loct {{ set_real_ip_from 127.0.0.2; try_files /nope /show; }}
        # a script: the location's rewrite phase runs first (its ``last`` leaves before
        # preaccess: /show has no settings of its own), then preaccess applies them
        location /locrw {{ set_real_ip_from 127.0.0.2; rewrite ^ /show last; }}
        location /locs {{ set_real_ip_from 127.0.0.2; set $x 1; try_files /nope /show; }}
        location /show {{ return 200 "$remote_addr $realip_remote_addr [$remote_port]\\n"; }}
        location /show-v6 {{ set_real_ip_from 127.0.0.2; try_files /nope /show; }}
        location /plain/ {{ set_real_ip_from 127.0.0.2; add_header X-Client "$remote_addr [$remote_port]"; }}
        location /deny/ {{ set_real_ip_from 127.0.0.2; deny 10.0.0.0/8; alias {tmp}/html/plain/; }}
        location /cf {{ set_real_ip_from 127.0.0.0/24; real_ip_header CF-Connecting-IP; try_files /nope /show; }}
    }}
}}
"""

# (source address, host, path, extra header lines)
REALIP_CASES: list[tuple[str, str, str, str]] = []
_XFF = ["10.0.0.1, 127.0.0.3", "10.0.0.1:99, 127.0.0.3:5", "127.0.0.2, 127.0.0.3", "junk",
        "10.1.1.1,junk", "010.1.1.1", "[2001:db8::1]:80", ", 10.2.2.2 ,", "10.0.0.1, 10.9.1.1",
        "junk, 127.0.0.3", "10.0.0.1:0", "1.2.3", "2001:DB8:0:0:0:0:0:1", ""]
for _src in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
    for _x in _XFF:
        for _host, _path in (("xff", "/"), ("rec", "/"), ("xff", "/rec")):
            REALIP_CASES.append((_src, _host, _path, f"X-Forwarded-For: {_x}\r\n"))
    for _two in ("10.0.0.1\r\nX-Forwarded-For: 127.0.0.3", "10.0.0.1\r\nX-Forwarded-For: 10.0.0.7",
                 "10.0.0.1\r\nX-Forwarded-For: junk", "10.0.0.1\r\nX-Forwarded-For: 127.0.0.3, junk"):
        REALIP_CASES += [(_src, h, "/", f"X-Forwarded-For: {_two}\r\n") for h in ("xff", "rec")]
    for _path in ("/plain/f.txt", "/deny/f.txt", "/px/"):
        for _x in ("10.0.0.1, 127.0.0.3", "10.0.0.1", "10.7.7.7, 127.0.0.3"):
            REALIP_CASES.append((_src, "xff", _path, f"X-Forwarded-For: {_x}\r\n"))
        REALIP_CASES.append((_src, "xff", _path, ""))
    REALIP_CASES.append((_src, "xff", "/err/nothing", "X-Forwarded-For: 10.0.0.1\r\n"))
    for _path in ("/", "/locr", "/loct", "/locrw", "/locs", "/plain/f.txt", "/deny/f.txt"):
        for _x in ("10.0.0.9", "10.0.0.9:77", "10.0.0.1, 10.0.0.2", "172.16.0.1"):
            REALIP_CASES.append((_src, "loc", _path, f"X-Real-IP: {_x}\r\n"))
    REALIP_CASES.append((_src, "loc", "/loct", "X-Real-IP: 10.0.0.1\r\nX-Real-IP: 10.0.0.7\r\n"))
    REALIP_CASES.append((_src, "loc", "/cf", "X-Real-IP: 10.0.0.1\r\nCF-Connecting-IP: 10.3.3.3\r\n"
                         "cf-connecting-ip: 10.4.4.4\r\n"))

# IPv6 addresses as nginx prints them (dotted IPv4 tails where it writes them) and a zone id
for _v6 in ("::1.2.3.4", "::ffff:1.2.3.4", "::2", "::102:304", "::ffff:0:1.2.3.4", "::1", "::",
            "::0.1.2.3", "1::", "fe80::1%eth0", "2001:db8:0:1:0:0:0:1", "2001:0:0:1:0:0:0:1",
            "[::ffff:10.1.2.3]:8080", "0:0:0:0:0:0:0:7"):
    REALIP_CASES.append(("127.0.0.2", "loc", "/show-v6", f"X-Real-IP: {_v6}\r\n"))


def _answer(r: Response, ports: tuple[int, int], c: From) -> tuple[int, list[str], bytes]:
    """Status, header lines (Date and Server dropped, sorted; the server's, the upstream's
    and the client's ports masked), body (the error pages' signature masked)."""
    masks = [(str(p), n) for p, n in zip(ports, ("PORT", "APP"), strict=True)]
    masks.append((str(c.sock.getsockname()[1]), "CPORT"))

    def masked(text: str) -> str:
        for port, name in masks:  # whole numbers only: one port may be part of another
            text = re.sub(rf"(?<!\d){port}(?!\d)", name, text)
        return text

    heads = sorted(masked(f"{k.lower()}: {v}") for k, v in r.raw_headers
                   if k.lower() not in ("date", "server")
                   and not (k.lower() == "content-length" and b"<hr><center>" in r.body))
    body = re.sub(rb"<hr><center>[^<]*</center>", b"<hr><center>SIG</center>", r.body)
    return r.status, heads, masked(body.decode("latin-1")).encode("latin-1")


def _from(port: int, app: int, src: str) -> From:
    """A connection from ``src`` whose own port is neither server's: the answers mask each
    port by its number, and an ephemeral port equal to the listener's (a different address
    may use it) made a client port read as the server's in one run of the two."""
    while True:
        c = From(port, src)
        if c.sock.getsockname()[1] not in (port, app):
            return c
        c.close()


def _realip_run(port: int, app: int, keep_alive: bool) -> list[tuple[int, list[str], bytes]]:
    """Every case, each on its own connection, or (keep_alive) all of one source's cases
    twice over on one connection: a request's real address must not outlive it."""
    out = []
    if not keep_alive:
        for src, host, path, extra in REALIP_CASES:
            c = _from(port, app, src)
            out.append(_answer(c.one(_req(path, extra, host)), (port, app), c))
            c.close()
        return out
    for src in ("127.0.0.2", "127.0.0.1", "127.0.0.3"):
        c = _from(port, app, src)
        for _ in range(2):
            for s, host, path, extra in REALIP_CASES:
                if s == src:
                    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
                    out.append(_answer(c.one(head), (port, app), c))
        c.close()
    return out


def _logs(tmp: Path, port: int) -> tuple[list[str], list[str]]:
    """The access log's lines and the error log's [error] lines (time and pid dropped)."""
    access = (tmp / f"access-rip-{port}.log").read_text().splitlines()
    return access, _log_lines(tmp / f"error-rip-{port}.log")


def _realip_files(stack: Stack) -> int:
    _files(stack)
    return stack.app("rip")


def test_realip_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """X-Forwarded-For at the server level (last address; recursive: the rightmost untrusted
    one, over several lines), a location's own settings (applied after its script: a return
    still sees the connection), X-Real-IP and another header (first line), ports from the
    header in $remote_port, $realip_remote_addr, $proxy_add_x_forwarded_for to an upstream,
    add_header on a file, deny by the real address: answers, access log and error log."""
    app = _realip_files(stack)
    ours_port = stack.proxy(REALIP_CONF, app=app)
    ours = _realip_run(ours_port, app, False)
    with _real_nginx(stack, nginx_bin, "rip", REALIP_CONF, app=app) as port:
        theirs = _realip_run(port, app, False)
    wrong = [(case, a, b) for case, a, b in zip(REALIP_CASES, ours, theirs, strict=True) if a != b]
    assert not wrong, "\n".join(f"{c}\n  pylvs: {a}\n  nginx: {b}" for c, a, b in wrong[:10])
    assert _logs(stack.tmp, ours_port) == _logs(stack.tmp, port)
    # the features are at work: a trusted proxy's header changed the address
    assert (200, b"127.0.0.3 127.0.0.2 [] 10.0.0.1, 127.0.0.3, 127.0.0.3\n") in [
        (a[0], a[2]) for a in ours]
    assert any(b"x-real-ip: 10.0.0.1\r\n" in a[2].lower() for a in ours)
    assert any("10.0.0.1 127.0.0.2 \"GET /deny/f.txt" in line and line.endswith(" 403")
               for line in _logs(stack.tmp, ours_port)[0])


def test_realip_never_outlives_its_request(stack: Stack, nginx_bin: str) -> None:
    """The same heads from trusted and untrusted clients, each twice over one keep-alive
    connection (pylvs knows repeated heads and answers them from caches): each request's
    address is its own, as in nginx; the access logs agree line for line."""
    app = _realip_files(stack)
    ours_port = stack.proxy(REALIP_CONF, app=app)
    ours = _realip_run(ours_port, app, True)
    with _real_nginx(stack, nginx_bin, "rip-ka", REALIP_CONF, app=app) as port:
        theirs = _realip_run(port, app, True)
    assert len(ours) == len(theirs) > 100
    wrong = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    assert not wrong, "\n".join(f"  pylvs: {a}\n  nginx: {b}" for a, b in wrong[:10])
    assert _logs(stack.tmp, ours_port) == _logs(stack.tmp, port)
