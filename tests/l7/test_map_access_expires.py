"""``map``, ``allow``/``deny`` and ``expires`` under pylvs http and real nginx 1.22: the same
configuration, the same raw requests, the same answers (``_compare``), and the same ``-t``
words for their misuse. Requests whose answer depends on a map or on the client's address are
also repeated byte for byte on one connection and from other addresses (127.0.0.N), where the
known-head fast paths of ``connection`` could otherwise answer from what another client got."""

from __future__ import annotations

import asyncio
import os
import socket
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from tests.l7.conftest import Client, Stack
from tests.l7.test_nginx_interop import _compare, _emerg, _real_nginx, nginx_bin, t_both

__all__ = ["nginx_bin"]  # the fixture, used by name

_TEMPS = """
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
"""


def _temps(stack: Stack) -> None:
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir(exist_ok=True)


class From(Client):
    """A Client whose connection comes from ``source`` (another 127.0.0.0/8 address)."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__(port)
        self.sock.close()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout,
                                             source_address=(source, 0))


def _req(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n".encode()


# -- map ------------------------------------------------------------------------------------------

MAP_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-map.pid;
error_log {tmp}/error-map.log;
events {{ worker_connections 64; }}
http {{
""" + _TEMPS + """
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    map $arg_k $exact {{
        default dflt;
        foo exact-foo;
        ~^fo regex-fo;
        ~*^BA(?<tail>.*)$ "ci-$tail";
        ~^(\\d+)-(\\d+)$ "$2-$1";
        "" empty;
        \\default escaped;
    }}
    map $arg_h $host_kind {{
        hostnames;
        default none;
        example.com exact;
        *.example.com star;
        *.a.example.com longer;
        .test.org dot;
        www.example.* tail;
        ~^www\\. regex;
    }}
    map $uri$arg_x $combo {{ default no; /m/combo1 yes; }}
    map $exact $chained {{ default c0; exact-foo c1; }}
    map $arg_e $emptyre {{ default d; ~^$ empty-regex; }}
    map $arg_i $inc {{ default d; include {tmp}/map.inc; }}
    map $src $nv {{ default none; a A; b B; }}
    map $src $vv {{ volatile; default none; a A; b B; }}
    map $remote_addr $from_two {{ default no; 127.0.0.2 yes; }}
    map $http_x_who $who {{ default anon; alice A; bob B; }}
    log_format mapfmt '$exact|$who|$connection_upgrade';
    access_log {tmp}/map-{port}.log mapfmt;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location = /m/up {{ return 200 "$connection_upgrade\\n"; }}
        location = /m/exact {{ return 200 "$exact tail=$tail 1=$1\\n"; }}
        location = /m/host {{ return 200 "$host_kind\\n"; }}
        location = /m/combo1 {{ return 200 "$combo\\n"; }}
        location = /m/chain {{ return 200 "$chained $exact\\n"; }}
        location = /m/empty {{ return 200 "$emptyre\\n"; }}
        location = /m/inc {{ return 200 "$inc\\n"; }}
        location = /m/vol {{
            set $src a;
            set $first "$nv/$vv";
            set $src b;
            return 200 "$first $nv/$vv\\n";
        }}
        location /m/if {{
            if ($exact = exact-foo) {{ return 200 "if-yes\\n"; }}
            return 200 "if-no\\n";
        }}
        location /m/hdr {{
            add_header X-Map "$exact/$who";
            proxy_set_header X-Who $who;
            proxy_pass http://127.0.0.1:{app};
        }}
        location /m/file {{
            if ($who = B) {{ return 403; }}
            add_header X-Who $who;
        }}
        location /m/two {{
            if ($from_two = yes) {{ return 200 "two\\n"; }}
        }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name other;
        if ($who = B) {{ return 403; }}
        location / {{ return 200 "other $who $from_two\n"; }}
    }}
}}
"""

MAP_REQUESTS = [
    _req("/m/up"),
    _req("/m/up", "Upgrade: websocket\r\n"),
    _req("/m/exact?k=foo"),
    _req("/m/exact?k=FOO"),
    _req("/m/exact?k=fox"),
    _req("/m/exact?k=bar"),
    _req("/m/exact?k=BAzz"),
    _req("/m/exact?k=12-34"),
    _req("/m/exact?k="),
    _req("/m/exact"),
    _req("/m/exact?k=default"),
    _req("/m/exact?k=zzz"),
    *[_req(f"/m/host?h={h}") for h in (
        "example.com", "EXAMPLE.com", "example.com.", "a.example.com", "b.a.example.com",
        "test.org", "x.test.org", "www.example.net", "www.other.com", "other.com", "")],
    _req("/m/combo1"),
    _req("/m/combo1?x=1"),
    _req("/m/chain?k=foo"),
    _req("/m/chain?k=bar"),
    _req("/m/empty"),
    _req("/m/empty?e=x"),
    _req("/m/inc?i=one"),
    _req("/m/inc?i=TWO"),
    _req("/m/inc?i=three"),
    _req("/m/vol"),
    _req("/m/if/x?k=foo"),
    _req("/m/if/x?k=Foo"),
    _req("/m/if/x?k=fox"),
    _req("/m/hdr?echo=headers&k=foo", "X-Who: alice\r\n"),
    _req("/m/file/f.txt", "X-Who: alice\r\n"),
    _req("/m/file/f.txt", "X-Who: bob\r\n"),
    _req("/m/file/f.txt"),
    _req("/m/two/f.txt"),
    b"GET /x HTTP/1.1\r\nHost: other\r\nX-Who: bob\r\nConnection: close\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: other\r\nX-Who: alice\r\nConnection: close\r\n\r\n",
]


def _map_files(stack: Stack) -> None:
    _temps(stack)
    (stack.tmp / "map.inc").write_text("one 1;\ntwo 2;\n")
    for d in ("m/file", "m/two"):
        (stack.tmp / "html" / d).mkdir(parents=True)
        (stack.tmp / "html" / d / "f.txt").write_text(f"file of {d}\n")


def test_map_answers_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """Exact keys (caseless) over regexes, regexes in order with their captures, hostnames'
    priorities, ``default``/``\\default``/``""``, includes, chained maps, volatile, and map
    variables in return, if, add_header, proxy_set_header and log_format."""
    _map_files(stack)
    app = stack.app("m")
    _compare(stack, nginx_bin, MAP_CONF, "map", MAP_REQUESTS, app=app)
    logs = sorted(stack.tmp.glob("map-*.log"))
    assert len(logs) == 2
    ours, theirs = (p.read_text().splitlines() for p in logs)
    assert ours == theirs
    assert "exact-foo|A|close" in ours  # (the log lines hold the map values)


def _answers(client: Client, requests: list[bytes]) -> list[tuple[int, bytes, str | None]]:
    out = []
    for r in requests:
        got = client.one(r)
        out.append((got.status, got.body, got.headers.get("x-who")))
    return out


def test_map_values_with_the_same_head_again(stack: Stack, nginx_bin: str) -> None:
    """A keep-alive client repeating its request, and others sending the very same bytes:
    whatever pylvs keeps of a head must not keep a map's value. Where the source is a header
    the heads differ; where it is $remote_addr (an if in the location, a server-level if on
    a header) the bytes are the same from 127.0.0.1 and 127.0.0.2."""
    _map_files(stack)
    app = stack.app("m")
    head = b"GET /m/two/f.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
    file_a = b"GET /m/file/f.txt HTTP/1.1\r\nHost: localhost\r\nX-Who: alice\r\n\r\n"
    file_b = b"GET /m/file/f.txt HTTP/1.1\r\nHost: localhost\r\nX-Who: bob\r\n\r\n"
    file_n = b"GET /m/file/f.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
    other = b"GET /x HTTP/1.1\r\nHost: other\r\n\r\n"
    seq = [head, head, file_a, file_n, file_a, other, other, file_b]

    def run(port: int) -> list[list[tuple[int, bytes, str | None]]]:
        got = []
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"):
            c = From(port, source)
            got.append(_answers(c, seq))
            c.close()
        return got

    ours = run(stack.proxy(MAP_CONF, app=app))
    with _real_nginx(stack, nginx_bin, "map-again", MAP_CONF, app=app) as port:
        theirs = run(port)
    for a, b in zip(ours, theirs, strict=True):
        assert [(s, body if s == 200 else b"", w) for s, body, w in a] == \
            [(s, body if s == 200 else b"", w) for s, body, w in b]
    assert ours[0][0][1] == b"file of m/two\n" and ours[1][0][1] == b"two\n"
    assert ours[0][2][2] == "A" and ours[0][3][2] == "anon" and ours[0][7][0] == 403
    assert ours[1][6][1] == b"other anon yes\n"


_MAP_T = """events {{}}
http {{
    {http}
    server {{ listen 127.0.0.1:8080; location / {{ return 200 "$mv"; }} }}
}}
"""

MAP_REFUSED = {
    "name": "map $uri mv { default 1; }",
    "conflict": "map $uri $mv { a 1; A 2; }",
    "three": "map $uri $mv { a 1 2; }",
    "one": "map $uri $mv { a; }",
    "defaults": "map $uri $mv { default 1; default 2; }",
    "regex": "map $uri $mv { ~(a 1; }",
    "args": "map $uri $mv $x { a 1; }",
    "noblock": "map $uri $mv;",
    "builtin": "map $uri $uri { a 1; }",
    "unknown_value": "map $uri $mv { a $nope; }",
    "unknown_source": "map $nope $mv { a 1; }",
    "include": "map $uri $mv { include nofile; }",
    "block": "map $uri $mv { a { } }",
    "wildcard": "map $uri $mv { hostnames; a*b 1; }",
    "star_dot": "map $uri $mv { hostnames; *.a.com 1; .a.com 2; }",
    "dot_exact": "map $uri $mv { hostnames; .a.com 1; a.com 2; }",
    "tails": "map $uri $mv { hostnames; a.* 1; a.* 2; }",
    "in_server": "server { map $uri $x { a 1; } }",
}


def _t_both(tmp_path: Path, nginx_bin: str, text: str) -> tuple[str, str]:
    theirs, ours = t_both(tmp_path, nginx_bin, text)
    assert theirs.returncode == 1 and ours.returncode == 1, (theirs.stderr, ours.stderr)
    assert "Traceback" not in ours.stderr
    return _emerg(ours.stderr), _emerg(theirs.stderr)


@pytest.mark.parametrize("name", sorted(MAP_REFUSED))
def test_map_refused_as_nginx(tmp_path: Path, nginx_bin: str, name: str) -> None:
    ours, theirs = _t_both(tmp_path, nginx_bin, _MAP_T.format(http=MAP_REFUSED[name]))
    assert ours == theirs


# -- allow / deny ---------------------------------------------------------------------------------

ACCESS_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-acc.pid;
error_log {tmp}/error-acc-{port}.log;
events {{ worker_connections 64; }}
http {{
""" + _TEMPS + """
    access_log off;
    allow 127.0.0.3;
    deny 127.0.0.4;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /open/ {{ }}
        location /a/ {{ allow 127.0.0.2; deny all; }}
        location /net/ {{ deny 127.0.0.0/30; allow all; }}
        location /ret/ {{ deny all; return 200 "ret\\n"; }}
        location /if/ {{ deny all; if ($arg_x) {{ return 200 "if\\n"; }} }}
        location /px/ {{ allow 127.0.0.2; deny all; proxy_pass http://127.0.0.1:{app}; }}
        location /nest/ {{ deny 127.0.0.1; location /nest/in/ {{ allow all; }} }}
        location /nest2/ {{ deny 127.0.0.1; location /nest2/in/ {{ }} }}
        location /ep/ {{ deny all; error_page 403 /errors/forbidden.txt; }}
        location /errors/ {{ }}
        location /v6/ {{ deny ::1; allow 127.0.0.1/32; deny all; }}
        location /tf/ {{ deny 127.0.0.2; try_files $uri /open/f.txt; }}
    }}
}}
"""

ACCESS_PATHS = ["/open/f.txt", "/a/f.txt", "/net/f.txt", "/ret/x", "/if/f.txt", "/if/f.txt?x=1",
                "/px/x?echo=uri", "/nest/f.txt", "/nest/in/f.txt", "/nest2/in/f.txt", "/ep/f.txt",
                "/v6/f.txt", "/tf/none"]


def _access_files(stack: Stack) -> None:
    _temps(stack)
    html = stack.tmp / "html"
    for f in ("open/f.txt", "a/f.txt", "net/f.txt", "if/f.txt", "nest/f.txt", "nest/in/f.txt",
              "nest2/in/f.txt", "ep/f.txt", "errors/forbidden.txt", "v6/f.txt"):
        (html / f).parent.mkdir(parents=True, exist_ok=True)
        (html / f).write_text(f"file {f}\n")


def test_access_answers_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """First matching rule decides, in order; a level without rules inherits its parent's
    whole list; a return (also in an if) answers before deny; error_page 403 takes a denied
    request; the IPv6 rule is not compared with an IPv4 client."""
    _access_files(stack)
    app = stack.app("acc")
    _compare(stack, nginx_bin, ACCESS_CONF, "acc", [_req(p) for p in ACCESS_PATHS], app=app)


def test_access_by_client_address_with_repeated_heads(stack: Stack, nginx_bin: str) -> None:
    """Clients from 127.0.0.1-4 each send every head twice on one keep-alive connection (the
    same bytes from every address, so pylvs's known-head caches see them all): the answers and
    the "access forbidden by rule" lines in the error log are nginx's."""
    _access_files(stack)
    app = stack.app("acc")
    heads = [f"GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for p in ACCESS_PATHS]

    def run(port: int) -> list[tuple[str, str, int, bytes]]:
        got = []
        for n in (1, 2, 3, 4, 2, 1):
            c = From(port, f"127.0.0.{n}")
            for h in heads:
                for _ in range(2):
                    r = c.one(h)
                    got.append((f"127.0.0.{n}", h.split(b" ")[1].decode(), r.status,
                                r.body if r.status == 200 else b""))
            c.close()
        return got

    ours_port = stack.proxy(ACCESS_CONF, app=app)
    ours = run(ours_port)
    with _real_nginx(stack, nginx_bin, "acc-again", ACCESS_CONF, app=app) as port:
        theirs = run(port)
        their_log = _forbidden(stack.tmp / f"error-acc-{port}.log")
    assert ours == theirs
    assert ("127.0.0.1", "/a/f.txt", 403, b"") in ours
    assert ("127.0.0.2", "/a/f.txt", 200, b"file a/f.txt\n") in ours
    ours_log = _forbidden(stack.tmp / f"error-acc-{ours_port}.log")
    assert ours_log == their_log and len(ours_log) > 20


def _forbidden(path: Path) -> list[str]:
    """The "access forbidden by rule" lines of an error log, from the message on."""
    out = []
    for line in path.read_text().splitlines():
        if "access forbidden by rule" in line:
            out.append(line[line.index("[error]"):].split(" ", 2)[2].split(" ", 1)[1])
    return out


ACCESS_REFUSED = {
    "short": "allow 1.2.3;",
    "prefix": "allow 1.2.3.4/33;",
    "name": "deny localhost;",
    "v6_prefix": "deny ::1/129;",
    "no_bits": "allow 1.2.3.4/;",
    "octet": "allow 256.1.1.1;",
    "scope": "allow fe80::1%eth0;",
    "two": "allow 1.2.3.4 5;",
    "none": "deny;",
    "in_if": "server { location / { if ($uri) { deny all; } } }",
}


@pytest.mark.parametrize("name", sorted(ACCESS_REFUSED))
def test_access_refused_as_nginx(tmp_path: Path, nginx_bin: str, name: str) -> None:
    ours, theirs = _t_both(tmp_path, nginx_bin, _MAP_T.format(http=ACCESS_REFUSED[name]))
    assert ours == theirs


# -- expires --------------------------------------------------------------------------------------

EXPIRES_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-exp.pid;
error_log {tmp}/error-exp.log;
events {{ worker_connections 64; }}
http {{
""" + _TEMPS + """
    access_log off;
    expires 1h;
    upstream up {{ server 127.0.0.1:{up}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /f/ {{ }}
        location /off/ {{ expires off; }}
        location /mod/ {{ expires modified 1d; }}
        location = /neg {{ expires -10; return 200 "neg\\n"; }}
        location = /epoch {{ expires epoch; return 200 "x\\n"; }}
        location = /max {{ expires max; return 200 "x\\n"; }}
        location = /modret {{ expires modified 1d; return 200 "x\\n"; }}
        location = /at {{ expires @15h30m; return 200 "x\\n"; }}
        location = /zero {{ expires 0; return 200 "x\\n"; }}
        location = /r301 {{ return 301 /x; }}
        location = /r302 {{ return 302 /x; }}
        location = /c204 {{ return 204; }}
        location = /r404 {{ return 404; }}
        location = /e404 {{ return 404 "x"; }}
        location = /missing {{ expires 2h; }}
        location /if/ {{ if ($arg_x) {{ expires 3h; }} }}
        location /px/ {{
            expires 2d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://up;
        }}
        location /pxmod/ {{
            expires modified 1h;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://up;
        }}
        location /pxoff/ {{ expires off; proxy_pass http://up; }}
        # nginx's usual idiom: the expiry by the type of what is sent; and a value per request
        location /bytype/ {{ alias {tmp}/html/f/; expires $by_type; }}
        location /var/ {{ alias {tmp}/html/mod/; expires $arg_e; }}
        location /varmod/ {{ alias {tmp}/html/mod/; expires modified $arg_e; }}
        location /pxvar/ {{
            expires $arg_e;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://up;
        }}
    }}
    map $sent_http_content_type $by_type {{
        default off;
        text/plain 4h;
        ~^text/html epoch;
    }}
}}
"""

EXPIRES_PATHS = ["/f/a.txt", "/f/a.txt", "/f/a.txt", "/off/a.txt", "/mod/a.txt", "/mod/a.txt",
                 "/neg", "/epoch", "/max", "/modret", "/at", "/zero", "/r301", "/r302", "/c204",
                 "/r404", "/e404", "/missing", "/if/a.txt", "/if/a.txt?x=1", "/px/ok", "/px/ok",
                 "/px/ok", "/px/404", "/pxmod/ok", "/pxmod/ok", "/pxoff/ok",
                 "/bytype/a.txt", "/bytype/a.txt", "/bytype/b.html", "/bytype/c.bin",
                 "/var/a.txt?e=2h", "/var/a.txt?e=max", "/var/a.txt?e=bogus", "/var/a.txt",
                 "/var/a.txt?e=epoch", "/var/a.txt?e=-5m", "/varmod/a.txt?e=1d",
                 "/varmod/a.txt?e=epoch", "/varmod/a.txt?e=@1h", "/pxvar/ok?e=30m",
                 "/pxvar/ok?e=30m", "/pxvar/ok?e=off", "/pxvar/ok?e=1h"]


async def _upstream(reader: Any, writer: Any) -> None:
    """An app server whose answers carry their own Cache-Control, Expires and Last-Modified."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        status = b"404 Not Found" if b" /px/404 " in head else b"200 OK"
        writer.write(b"HTTP/1.1 " + status + b"\r\nCache-Control: private\r\n"
                     b"Expires: Thu, 01 Jan 2099 00:00:00 GMT\r\n"
                     b"Last-Modified: Wed, 01 Jan 2020 00:00:00 GMT\r\n"
                     b"Content-Length: 3\r\n\r\nup\n")
        await writer.drain()


def _expiry(path: str, h: dict[str, str]) -> tuple[object, ...]:
    """What a response says about expiry, independent of when it was sent: a fixed Expires as
    it is, else its distance from Date, and Cache-Control's max-age checked against it."""
    e, cc = h.get("expires"), h.get("cache-control")
    if e is None:
        return (None, cc)
    exp = parsedate_to_datetime(e).timestamp()
    delta = int(exp - parsedate_to_datetime(h["date"]).timestamp())
    if not 1700000000 < exp < 4000000000 or e.startswith("Thu, 31 Dec 2037"):
        return (e, cc)  # (max's max-age is a constant ten years, not the distance)
    if cc is not None and cc.startswith("max-age="):
        assert int(cc[8:]) == delta, (path, h)
    if path == "/at":
        return (e, cc is not None and cc.startswith("max-age="))
    return ("date+", delta, cc if cc == "no-cache" else "max-age")


def _expires_answers(port: int) -> list[tuple[object, ...]]:
    c = Client(port)
    out: list[tuple[object, ...]] = []
    for p in EXPIRES_PATHS:
        r = c.one(f"GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        h = dict(r.headers)
        rest = sorted((k, v.replace(str(port), "PORT")) for k, v in h.items()
                      if k not in ("date", "server", "expires", "cache-control")
                      and not (k == "content-length" and r.status >= 300))
        lines = sum(k.lower() in ("expires", "cache-control") for k, _ in r.raw_headers)
        out.append((p, r.status, r.body if r.status < 300 else b"", rest, _expiry(p, h), lines))
    c.close()
    return out


def test_expires_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """Expires and Cache-Control for files (also repeated: the cached fast path), returns,
    redirects and proxied answers (replacing the app's own; ``modified`` counts from the app's
    Last-Modified), none for 404s; inherited from http, off in a location, set in an if; a
    value from a map of ``$sent_http_content_type`` and from an argument (read per response:
    nothing for one that does not parse), on files and proxied answers alike."""
    _temps(stack)
    html = stack.tmp / "html"
    for d in ("f", "off", "mod", "if"):
        (html / d).mkdir(parents=True)
        (html / d / "a.txt").write_text(f"{d}\n")
    (html / "f" / "b.html").write_text("<p>b</p>\n")
    (html / "f" / "c.bin").write_bytes(b"\0")
    os.utime(html / "mod" / "a.txt", (1577836800, 1577836800))  # 2020-01-01 00:00:00 UTC
    up = stack.upstream(_upstream)
    ours = _expires_answers(stack.proxy(EXPIRES_CONF, up=up))
    with _real_nginx(stack, nginx_bin, "exp", EXPIRES_CONF, up=up) as port:
        theirs = _expires_answers(port)
    assert ours == theirs
    got = {(a[0], str(a[4])) for a in ours}
    assert ("/f/a.txt", "('date+', 3600, 'max-age')") in got
    assert ("/px/ok", "('date+', 172800, 'max-age')") in got
    assert ("/mod/a.txt", "('Thu, 02 Jan 2020 00:00:00 GMT', 'no-cache')") in got
    assert ("/bytype/a.txt", "('date+', 14400, 'max-age')") in got  # text/plain: 4h
    assert ("/bytype/b.html", "('Thu, 01 Jan 1970 00:00:01 GMT', 'no-cache')") in got
    assert ("/var/a.txt?e=bogus", "(None, None)") in got


EXPIRES_REFUSED = {
    "three": "expires 1h 2h;",
    "modified_alone": "expires modified;",
    "modified_max": "expires modified max;",
    "modified_daily": "expires modified @1h;",
    "daily_25h": "expires @25h;",
    "unit": "expires 1x;",
    "duplicate": "expires 1h; expires 2h;",
    "none": "expires;",
    "order": "expires 30m1h;",
    "empty": 'expires "";',
    "minus": "expires -;",
    "ms": "expires 5ms;",
    "at": "expires @;",
    "huge": "expires 9999999999999999999;",
    "in_server_if": "server { if ($uri) { expires 1h; } }",
}


@pytest.mark.parametrize("name", sorted(EXPIRES_REFUSED))
def test_expires_refused_as_nginx(tmp_path: Path, nginx_bin: str, name: str) -> None:
    ours, theirs = _t_both(tmp_path, nginx_bin, _MAP_T.format(http=EXPIRES_REFUSED[name]))
    assert ours == theirs


def test_access_low_bits_warned_as_nginx(tmp_path: Path, nginx_bin: str) -> None:
    """A CIDR with bits past its prefix is accepted with nginx's [warn] line, each in order."""
    theirs, ours = t_both(
        tmp_path, nginx_bin,
        "events {}\nhttp {\n  allow 10.1.1.1/8;\n  server { listen 127.0.0.1:8080;"
        " deny 2001:db8::1/32; allow 1.2.3.0/24; allow 010.1.1.1/08; }\n}\n")
    assert theirs.returncode == 0 and ours.returncode == 0, (theirs.stderr, ours.stderr)

    def warns(err: str) -> list[str]:  # from the message on (nginx puts a pid before it)
        return [x[x.index("low address"):] for x in err.splitlines() if "[warn]" in x]

    assert warns(ours.stderr) == warns(theirs.stderr)
    assert len(warns(ours.stderr)) == 3


CONN_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-conn.pid;
error_log {tmp}/error-conn.log;
events {{ worker_connections 64; }}
http {{
""" + _TEMPS + """
    access_log off;
    map $connection $parity {{ ~[02468]$ even; default odd; }}
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/html;
        location /p/ {{
            add_header X-Conn $connection;
            if ($parity = even) {{ return 200 "even\\n"; }}
        }}
    }}
}}
"""


def test_map_of_connection_with_the_same_head_on_new_connections(stack: Stack,
                                                                  nginx_bin: str) -> None:
    """The very same bytes on successive connections: the answer follows each connection's
    own $connection (through a map and an if), never what an earlier connection got."""
    _temps(stack)
    (stack.tmp / "html" / "p").mkdir(parents=True)
    (stack.tmp / "html" / "p" / "f.txt").write_text("odd file\n")
    head = b"GET /p/f.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"

    def run(port: int) -> set[str]:
        seen = set()
        for _ in range(6):
            c = Client(port)
            for _ in range(3):
                r = c.one(head)
                even = int(r.headers["x-conn"]) % 2 == 0
                assert r.body == (b"even\n" if even else b"odd file\n"), (r.headers, r.body)
                seen.add(r.body.decode())
            c.close()
        return seen

    assert run(stack.proxy(CONN_CONF)) == {"even\n", "odd file\n"}
    with _real_nginx(stack, nginx_bin, "conn", CONN_CONF) as port:
        assert run(port) == {"even\n", "odd file\n"}
