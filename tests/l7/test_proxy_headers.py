"""The upstream response's headers as nginx 1.22 rewrites them for the client, compared with
real nginx: ``proxy_redirect`` (its implicit ``default`` too) on Location and Refresh,
``proxy_hide_header``, ``proxy_pass_header`` and ``proxy_ignore_headers``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.l7.conftest import Stack, interop_head
from tests.l7.test_nginx_interop import _SERVER, _compare, _emerg, nginx_bin, t_both

__all__ = ["nginx_bin"]  # the fixture, used by name


async def _scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream answering each request with the header lines the client asked for in its
    ``X-Set`` headers (one line each), and the request line it got in ``X-Got``."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    out = [f"X-Got: {lines[0]}"]
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "x-set":
            out.append(value.strip())
    body = b"scripted\n"
    writer.write(("HTTP/1.1 302 Found\r\nContent-Type: text/plain\r\n"
                  f"Content-Length: {len(body)}\r\n" + "".join(x + "\r\n" for x in out)
                  + "Connection: close\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    writer.close()


def _req(path: str, *sets: str, host: str = "localhost", version: str = "1.1") -> bytes:
    hdrs = "".join(f"X-Set: {s}\r\n" for s in sets)
    hosts = f"Host: {host}\r\n" if host else ""
    return f"GET {path} HTTP/{version}\r\n{hosts}{hdrs}Connection: close\r\n\r\n".encode(
        "latin-1")


REDIRECT_CONF = interop_head("{tmp}/nginx-pr.pid", "{tmp}/error-pr.log") + """\
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location /one/ {{ proxy_pass http://127.0.0.1:{up}/two/; }}
        location /nouri/ {{ proxy_pass http://127.0.0.1:{up}; }}
        location = /ex {{ proxy_pass http://127.0.0.1:{up}/two/ex; }}
        location ~ ^/rx/ {{ proxy_pass http://127.0.0.1:{up}; }}
        location /off/ {{ proxy_pass http://127.0.0.1:{up}/two/; proxy_redirect off; }}
        location /str/ {{
            proxy_pass http://127.0.0.1:{up}/two/;
            proxy_redirect http://127.0.0.1:{up}/two/ /s/;
            proxy_redirect /rel/ $scheme://$host:1234/r/;
            proxy_redirect http://$host/ http://far/$host/;
        }}
        location /re/ {{
            proxy_pass http://127.0.0.1:{up}/two/;
            proxy_redirect ~^http://([^/:]+):\\d+/two/(?<rest>.*)$ http://$1/x/$rest;
            proxy_redirect ~*/UP/(.*)$ /low/$1;
            proxy_redirect default;
        }}
        location /nest/ {{
            proxy_pass http://127.0.0.1:{up}/two/;
            location /nest/in/ {{ proxy_pass http://127.0.0.1:{up}/three/; }}
        }}
        location /var/ {{ set $u 127.0.0.1:{up}; proxy_pass http://$u; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name inherit;
        proxy_redirect http://127.0.0.1:{up}/ /inherited/;
        location /one/ {{ proxy_pass http://127.0.0.1:{up}/two/; }}
        location /own/ {{ proxy_pass http://127.0.0.1:{up}/two/; proxy_redirect default; }}
    }}
}}
"""


def _redirect_requests(up: int) -> list[bytes]:
    u = f"http://127.0.0.1:{up}"
    return [
        # the implicit default: the proxy_pass URL becomes the location's name, made absolute
        _req("/one/a", f"Location: {u}/two/x?y=1", f"Refresh: 5; url={u}/two/r"),
        _req("/one/a", f"Location: {u}/two/x", host="Example.COM:8080"),
        _req("/one/a", f"Location: {u}/two/x", host="", version="1.0"),
        _req("/one/a", f"Location: {u}/twox", "Refresh: 3;URL=/two/q"),
        _req("/one/a", "Location: /two/rel", f"Refresh: 0; URL={u}/two/up"),
        _req("/one/a", f"Location: {u}/TWO/x", "Refresh: 7"),
        _req("/one/a", "Location: other/x"),
        _req("/nouri/a", f"Location: {u}/a/b", f"Refresh: 1; url={u}/c"),
        _req("/nouri/a", f"Location: {u}"),
        _req("/ex", f"Location: {u}/two/ex?q", f"Location: {u}/two/exy"),
        _req("/rx/a", f"Location: {u}/rx/b"),
        _req("/off/a", f"Location: {u}/two/x", f"Refresh: 5; url={u}/two/r"),
        _req("/str/a", f"Location: {u}/two/x"),
        _req("/str/a", "Location: /rel/p?q"),
        _req("/str/a", "Location: http://localhost/z", host="localhost"),
        _req("/str/a", f"Location: {u}/three/x"),
        _req("/re/a", f"Location: {u}/two/deep/er"),
        _req("/re/a", "Location: /up/Z", "Refresh: 2; url=http://h/Up/y"),
        _req("/re/a", f"Location: {u}/three/x"),
        _req("/nest/in/a", f"Location: {u}/three/x"),
        _req("/nest/in/a", f"Location: {u}/two/x"),
        _req("/var/a", f"Location: {u}/var/x"),
        _req("/one/a", f"Location: {u}/two/x", host="inherit"),
        _req("/one/a", f"Location: {u}/x", host="inherit"),
        _req("/own/a", f"Location: {u}/two/x", host="inherit"),
        _req("/own/a", f"Location: {u}/x", host="inherit"),
    ]


def _dirs(stack: Stack) -> None:
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir(exist_ok=True)


def test_proxy_redirect_as_nginx(stack: Stack, nginx_bin: str) -> None:
    _dirs(stack)
    up = stack.upstream(_scripted)
    fmt: dict[str, Any] = {"up": up}
    _compare(stack, nginx_bin, REDIRECT_CONF, "pr", _redirect_requests(up), **fmt)


async def _kept_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream keeping its connection, answering every request with the same head (a
    Location under the proxy_pass URL): the head the proxy's caches know after the first."""
    answer = (b"HTTP/1.1 301 Moved\r\nLocation: http://kept/two/k\r\n"
              b"Set-Cookie: s=1; domain=kept\r\nContent-Length: 3\r\n\r\nabc")
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


CACHED_CONF = interop_head("{tmp}/nginx-prk.pid", "{tmp}/error-prk.log") + """\
    upstream kept {{ server 127.0.0.1:{up}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /one/ {{ proxy_pass http://kept/two/; }}
        location /v/ {{ proxy_pass http://kept/two/; proxy_redirect http://kept/two/ http://$host/v/; }}
        location /off/ {{ proxy_pass http://kept/two/; proxy_redirect off; }}
        location /ck/ {{
            proxy_pass http://kept/two/;
            proxy_redirect off;
            proxy_cookie_domain kept $host;
        }}
    }}
}}
"""


def test_rewritten_heads_not_served_from_the_head_cache(stack: Stack, nginx_bin: str) -> None:
    """The same upstream head, again and again over a kept-alive upstream connection, to
    clients naming other hosts: each Location is made for its own request (a rewrite reads the
    request, so the head caches of the fast path must not answer it)."""
    _dirs(stack)
    up = stack.upstream(_kept_alive)
    reqs = [_req(p, host=h) for p in ("/one/a", "/v/a", "/off/a", "/one/b", "/ck/a")
            for h in ("a.example", "b.example", "a.example", "c.example:99")]
    _compare(stack, nginx_bin, CACHED_CONF, "prk", reqs, up=up)
    # and over one client connection, where the fast path answers
    import socket

    hosts = ("a.example", "b.example", "c.example")
    for path, header, want in (("/v/x", b"Location: ", "http://{}/v/k"),
                               ("/ck/x", b"Set-Cookie: ", "s=1; domain={}")):
        with socket.create_connection(("127.0.0.1", stack.port), 5) as s:
            got = b""
            for n, h in enumerate(hosts):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: {h}\r\n\r\n".encode())
                while got.count(b"abc") < n + 1:
                    got += s.recv(65536)
        assert [x.split(b"\r\n")[0].decode() for x in got.split(header)[1:]] == [
            want.format(h) for h in hosts]


_PP = "proxy_pass http://127.0.0.1:9/two/;"
REFUSED = {
    "word": f"  location / {{ {_PP} proxy_redirect foo; }}",
    "three": f"  location / {{ {_PP} proxy_redirect a b c; }}",
    "default_first": f"  location / {{ proxy_redirect default; {_PP} }}",
    "default_server": "  proxy_redirect default;",
    "default_vars": "  location / { set $u 127.0.0.1; proxy_pass http://$u; "
                    "proxy_redirect default; }",
    "off_after": f"  location / {{ {_PP} proxy_redirect / /x/; proxy_redirect off; }}",
    "after_off": f"  location / {{ {_PP} proxy_redirect off; proxy_redirect / /x/; }}",
    "off_off": f"  location / {{ {_PP} proxy_redirect off; proxy_redirect off; }}",
    "in_if": f"  location / {{ {_PP} if ($uri) {{ proxy_redirect off; }} }}",
    "regex": f"  location / {{ {_PP} proxy_redirect ~(a /x/; }}",
    "unknown_var": f"  location / {{ {_PP} proxy_redirect / /$nothing/; }}",
    "cookie_word": "  proxy_cookie_path foo;",
    "cookie_off_after": "  proxy_cookie_domain a b; proxy_cookie_domain off;",
    "cookie_after_off": "  proxy_cookie_path off; proxy_cookie_path / /x/;",
    "cookie_three": "  proxy_cookie_domain a b c;",
    "cookie_regex": "  proxy_cookie_path ~*(x /;",
    "flags_one": "  proxy_cookie_flags one;",
    "flags_six": "  proxy_cookie_flags one a b c d e;",
    "flags_after_off": "  proxy_cookie_flags off; proxy_cookie_flags one secure;",
    "flags_regex": "  proxy_cookie_flags ~( secure;",
    "ignore_word": "  proxy_ignore_headers Expires X-Nothing;",
    "ignore_none": "  proxy_ignore_headers;",
    "hide_two": "  proxy_hide_header a b;",
    "pass_none": "  proxy_pass_header;",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_t_refuses_proxy_redirect_as_nginx(tmp_path: Path, nginx_bin: str, name: str) -> None:
    theirs, ours = t_both(tmp_path, nginx_bin, _SERVER.format(http="", server=REFUSED[name]))
    assert theirs.returncode == 1 and ours.returncode == 1, (theirs.stderr, ours.stderr)
    assert _emerg(ours.stderr) == _emerg(theirs.stderr)


HIDE_CONF = interop_head("{tmp}/nginx-ph.pid", "{tmp}/error-ph.log") + """\
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        proxy_hide_header X-Server-Level;
        location /plain/ {{ proxy_pass http://127.0.0.1:{up}/; }}
        location /hide/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_hide_header x-secret;
            proxy_hide_header ETag;
        }}
        location /pass/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_pass_header Server;
            proxy_pass_header X-Pad;
            proxy_pass_header X-Accel-Buffering;
        }}
        location /date/ {{ proxy_pass http://127.0.0.1:{up}/; proxy_pass_header date; }}
        location /both/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_hide_header X-Both;
            proxy_pass_header X-Both;
            proxy_pass_header X-Accel-Expires;
        }}
        location /nest/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_pass_header X-Pad;
            location /nest/in/ {{ proxy_pass http://127.0.0.1:{up}/; proxy_hide_header X-Own; }}
        }}
    }}
}}
"""

_UP_HEADERS = ("Server: up/1", "Date: Thu, 01 Jan 2015 00:00:00 GMT", "X-Pad: pad",
               "X-Accel-Buffering: no", "X-Accel-Expires: 0", "X-Secret: s", "x-SECRET: t",
               "ETag: \"e\"", "X-Server-Level: sl", "X-Both: b", "X-Own: o", "X-Kept: k")


def _hide_requests(up: int) -> list[bytes]:
    return [_req(f"/{p}/a", *_UP_HEADERS)
            for p in ("plain", "hide", "pass", "date", "both", "nest", "nest/in")]


def _server_date(port: int, request: bytes) -> list[str]:
    """The Server and Date lines of the answer (which the comparison of whole answers leaves
    out), the proxy's own ones named as such."""
    import socket

    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(request)
        raw = b""
        while b"\r\n\r\n" not in raw:
            got = s.recv(65536)
            if not got:
                break
            raw += got
    out = []
    for line in raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(": ")
        if name.lower() in ("server", "date"):
            out.append(f"{name}: {value if value in _UP_HEADERS[0] + _UP_HEADERS[1] else 'OWN'}")
    return sorted(out)


def test_proxy_hide_and_pass_header_as_nginx(stack: Stack, nginx_bin: str) -> None:
    _dirs(stack)
    up = stack.upstream(_scripted)
    reqs = _hide_requests(up)
    _compare(stack, nginx_bin, HIDE_CONF, "ph", reqs, up=up)
    ours = [_server_date(stack.port, r) for r in reqs]
    from tests.l7.test_nginx_interop import _real_nginx

    with _real_nginx(stack, nginx_bin, "ph2", HIDE_CONF, up=up) as port:
        theirs = [_server_date(port, r) for r in reqs]
    assert ours == theirs
    assert ours[2] == ["Date: OWN", "Server: up/1"]  # the upstream's Server replaces nginx's


COOKIE_CONF = interop_head("{tmp}/nginx-pc.pid", "{tmp}/error-pc.log") + """\
    proxy_cookie_domain up.internal $host;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        proxy_ignore_headers X-Accel-Expires Expires Cache-Control Set-Cookie Vary;
        location /plain/ {{ proxy_pass http://127.0.0.1:{up}/; }}
        location /c/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_cookie_path /two/ /c/;
            proxy_cookie_path ~*^/RX/(.*)$ /re/$1/$host;
            proxy_cookie_domain .Example.ORG www.example.net;
            proxy_cookie_domain ~^(.+)\\.test$ $1.$host;
            proxy_ignore_headers x-accel-buffering;
        }}
        location /off/ {{ proxy_pass http://127.0.0.1:{up}/; proxy_cookie_domain off; }}
    }}
}}
"""

_COOKIES = (
    "Set-Cookie: a=1; Domain=up.internal; Path=/two/x; HttpOnly",
    "Set-Cookie: b=2;path=/two/;domain=.up.internal;  secure ;Max-Age=5",
    "Set-Cookie: c=3; domain=example.org",
    "Set-Cookie: d=4; Domain=.EXAMPLE.org; path=/rx/Deep",
    "Set-Cookie: e=5; domain=shop.test; path=/TWO/",
    "Set-Cookie: f; domain=up.internal",
    "Set-Cookie: g=7; domain; path",
    "Set-Cookie: h=8 ; Path = /two/ ; domain=up.internal ",
    "Set-Cookie: i=9; expires=Thu, 01 Jan 2037 00:00:00 GMT; domain=xup.internal",
    "Set-Cookie: j=10; path=/two/;",
    "Set-Cookie: k=11;; path=/two/; a=b=c",
    "Set-Cookie: =12; path=/two/",
)


def _cookie_requests(up: int) -> list[bytes]:
    return [_req(f"/{p}/a", c, host=h) for p in ("plain", "c", "off")
            for c in _COOKIES for h in ("localhost", "Other.Example")]


def test_proxy_cookie_domain_and_path_as_nginx(stack: Stack, nginx_bin: str) -> None:
    _dirs(stack)
    up = stack.upstream(_scripted)
    _compare(stack, nginx_bin, COOKIE_CONF, "pc", _cookie_requests(up), up=up)


FLAGS_CONF = interop_head("{tmp}/nginx-pf.pid", "{tmp}/error-pf.log") + """\
    proxy_cookie_flags ~ secure;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location /plain/ {{ proxy_pass http://127.0.0.1:{up}/; proxy_cookie_flags off; }}
        location /inherit/ {{ proxy_pass http://127.0.0.1:{up}/; }}
        location /a/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_cookie_flags one httponly;
            proxy_cookie_flags ~ nosecure samesite=strict;
        }}
        location /b/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_cookie_flags ~^t secure httponly samesite=lax;
            proxy_cookie_path /up/ /down/;
        }}
        location /c/ {{
            proxy_pass http://127.0.0.1:{up}/;
            proxy_cookie_flags ~(?i)^x nohttponly nosamesite nosecure;
            proxy_cookie_flags $arg_n samesite=none bogus;
        }}
    }}
}}
"""

_FLAG_COOKIES = (
    "Set-Cookie: one=1",
    "Set-Cookie: one=1; HttpOnly",
    "Set-Cookie: two=2;secure; Path=/",
    "Set-Cookie: three=3; SameSite=None; Secure",
    "Set-Cookie: tx=1;  path=/up/x ; httponly",
    "Set-Cookie: X=1; HTTPONLY; samesite=lax; SECURE;Domain=d",
    "Set-Cookie: noeq; Secure",
    "Set-Cookie: e=; secure=1; samesite",
    "Set-Cookie: f=f;samesite=Strict;samesite=Lax",
    "Set-Cookie: x2=2; Max-Age=3;SameSite=Strict",
    "Set-Cookie: var=1; SameSite=Lax",
)


def test_proxy_cookie_flags_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """Flags added where absent, kept as written where present, removed by no*, a SameSite of
    another value replaced; the first rule naming the cookie (a name, a variable, a regex)
    decides; ``off`` and inheritance; together with proxy_cookie_path."""
    _dirs(stack)
    up = stack.upstream(_scripted)
    reqs = [_req(f"/{p}/a?n=var", c) for p in ("plain", "inherit", "a", "b", "c")
            for c in _FLAG_COOKIES]
    _compare(stack, nginx_bin, FLAGS_CONF, "pf", reqs, up=up)
