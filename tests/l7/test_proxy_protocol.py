"""``listen ... proxy_protocol`` compared with real nginx 1.22 on the same file: PROXY protocol
v1 (TCP4, TCP6, UNKNOWN) and v2 (PROXY over IPv4 and IPv6, LOCAL, TLVs) before the request,
the ``$proxy_protocol_*`` variables, ``real_ip_header proxy_protocol`` with a trusted and an
untrusted balancer (allow/deny of the address it sets), and headers nginx refuses (also one
split over two writes: nginx 1.22 reads it from the first read only) (the connection
closed without an answer, "broken header" logged); a listener without proxy_protocol reads
the same bytes as HTTP. Then the parser alone over hypothesis' byte strings: never an
exception other than ``Broken``."""

from __future__ import annotations

import re
import socket
import struct
import time

from hypothesis import given
from hypothesis import strategies as st

from pylvs.l7.proxyprotocol import V2_SIGNATURE, Broken, parse
from tests.l7.conftest import Stack, interop_head
from tests.l7.test_nginx_interop import _real_nginx, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-pp.pid", "{tmp}/error-pp.log") + """\
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        server_name localhost;
        location / {{
            return 200 "remote=$remote_addr:$remote_port pp=$proxy_protocol_addr:$proxy_protocol_port server=$proxy_protocol_server_addr:$proxy_protocol_server_port\\n";
        }}
        # (realip runs after the rewrite phase, where return would answer: a file, and
        # allow/deny of the address realip set)
        location /real/ {{
            root {tmp}/html;
            set_real_ip_from 127.0.0.1;
            real_ip_header proxy_protocol;
            allow 192.0.2.0/24;
            deny all;
        }}
        location /untrusted/ {{
            root {tmp}/html;
            set_real_ip_from 10.0.0.0/8;
            real_ip_header proxy_protocol;
            allow 192.0.2.0/24;
            deny all;
        }}
    }}
}}
"""

GET = b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def _v2(cmd: int, family: int, addrs: bytes, tlv: bytes = b"") -> bytes:
    body = addrs + tlv
    return V2_SIGNATURE + bytes((0x20 | cmd, family)) + struct.pack("!H", len(body)) + body


V2_TCP4 = _v2(1, 0x11, socket.inet_aton("192.0.2.7") + socket.inet_aton("198.51.100.1")
              + struct.pack("!HH", 40001, 443))
V2_TCP6 = _v2(1, 0x21, socket.inet_pton(socket.AF_INET6, "2001:db8::7")
              + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 5, 80),
              tlv=b"\x04\x00\x03abc")

CASES: list[tuple[bytes, ...]] = [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n" + GET % b"/",),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 5 80\r\n" + GET % b"/",),
    (b"PROXY UNKNOWN\r\n" + GET % b"/",),
    (b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n" + GET % b"/",),
    (V2_TCP4 + GET % b"/",),
    (V2_TCP6 + GET % b"/",),
    (_v2(0, 0x00, b"") + GET % b"/",),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n" + GET % b"/real/x",),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n" + GET % b"/untrusted/x",),
    (b"PROXY UNKNOWN\r\n" + GET % b"/real/x",),
    (b"PROXY TCP4 192.0.2.7 198.51.", b"100.1 40001 443\r\n" + GET % b"/"),  # two writes: broken
    (GET % b"/",),  # no header: broken
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 40001\r\n" + GET % b"/",),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n" + GET % b"/",),
    (b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n" + GET % b"/",),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 443\r\n" + GET % b"/",),
    (b"PROXY " + b"x" * 120 + b"\r\n" + GET % b"/",),
]


def _answer(port: int, parts: tuple[bytes, ...]) -> bytes:
    """The body answered (b"" when closed without an answer); each part a write of its own."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.05)
            s.sendall(part)
        s.settimeout(5)
        raw = b""
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            raw += got
    head, _, body = raw.partition(b"\r\n\r\n")
    body = re.sub(rb"<hr><center>[^<]*</center>", b"<hr><center>SIG</center>", body)
    return head.split(b"\r\n")[0] + b" | " + body if raw else b""


def test_proxy_protocol_as_nginx(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "html/real", "html/untrusted"):
        (stack.tmp / d).mkdir(parents=True)
    (stack.tmp / "html/real/x").write_text("real\n")
    (stack.tmp / "html/untrusted/x").write_text("untrusted\n")
    ours_port = stack.proxy(CONF)
    ours = [_answer(ours_port, c) for c in CASES]
    with _real_nginx(stack, nginx_bin, "pp", CONF) as port:
        theirs = [_answer(port, c) for c in CASES]
    ours = [a.replace(str(ours_port).encode(), b"PORT") for a in ours]
    theirs = [a.replace(str(port).encode(), b"PORT") for a in theirs]
    ours = [a.split(b"remote=127.0.0.1:")[0] + (b"remote=LOCAL" if b"remote=127" in a else b"")
            + (a.split(b" pp=", 1)[1] if b" pp=" in a else b"") for a in ours]
    theirs = [a.split(b"remote=127.0.0.1:")[0] + (b"remote=LOCAL" if b"remote=127" in a else b"")
              + (a.split(b" pp=", 1)[1] if b" pp=" in a else b"") for a in theirs]
    wrong = [(c, a, b) for c, a, b in zip(CASES, ours, theirs, strict=True) if a != b]
    assert not wrong, "\n".join(f"{c!r}\n  pylvs: {a!r}\n  nginx: {b!r}" for c, a, b in wrong)
    assert b"192.0.2.7:40001" in ours[0] and ours[-1] == b""
    real = ours[CASES.index((b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n"
                             + GET % b"/real/x",))]
    assert real == b"HTTP/1.1 200 OK | real\n"  # realip took the PROXY header's address
    log = (stack.tmp / "error-pp.log").read_text()
    assert 'broken header: "GET / HTTP/1.1" while reading PROXY protocol' in log


@given(st.binary(max_size=120))
def test_the_parser_says_complete_incomplete_or_broken(data: bytes) -> None:
    for chunk in (data, b"PROXY " + data, V2_SIGNATURE + data):
        try:
            got = parse(chunk)
        except Broken:
            continue
        if got is not None:
            assert 0 < got[1] <= len(chunk)
