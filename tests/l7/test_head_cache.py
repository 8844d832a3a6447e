"""Request heads read again are answered from what their first parse left (``ListenGroup.heads``)
and routed again wherever routing depends on more than the head's bytes: every repetition gets
the answer a fresh parse would give.

The byte-for-byte comparison with nginx of everything else runs with the cache active too
(``test_nginx_interop``): its clients send each head in one write, as keep-alive clients do.
"""

from __future__ import annotations

import os
import re
import socket
import time

from tests.l7.conftest import Client, Stack, get

_CONF = """
events {{}}
http {{
    error_log {tmp}/error.log;
    server {{
        listen 127.0.0.1:{port};
        server_name one;
        set $who $remote_port;
        location / {{ return 200 "who=$who"; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name two;
        location ~ ^/(?<name>[a-z]+)/(\\d+)$ {{ return 200 "$name $1 $2 $remote_port"; }}
        location = /status {{ stub_status; }}
        location / {{ return 200 "plain $uri $args"; }}
    }}
}}
"""


def _port(c: Client) -> str:
    return str(c.sock.getsockname()[1])


def test_a_server_script_runs_for_each_repetition(stack: Stack) -> None:
    port = stack.proxy(_CONF)
    a, b = Client(port), Client(port)
    for _ in range(3):
        for c in (a, b):
            r = c.one(get("/x", host="one"))
            assert (r.status, r.body) == (200, f"who={_port(c)}".encode())
    a.close()
    b.close()


def test_captures_and_connection_values_are_each_requests_own(stack: Stack) -> None:
    port = stack.proxy(_CONF)
    a, b = Client(port), Client(port)
    for _ in range(3):
        for c in (a, b):
            assert c.one(get("/abc/42", host="two")).body == f"abc abc 42 {_port(c)}".encode()
            assert c.one(get("/de/7", host="two")).body == f"de de 7 {_port(c)}".encode()
            assert c.one(get("/p?q=1", host="two")).body == b"plain /p q=1"
            assert c.one(get("/p", host="two")).body == b"plain /p "
    a.close()
    b.close()


def test_nothing_is_answered_after_a_request_that_closes(stack: Stack) -> None:
    port = stack.proxy(_CONF)
    c = Client(port)
    head = get("/p", host="two")
    assert c.one(head).status == 200  # the head is now known
    c.send(get("/p", host="two", extra="Connection: close\r\n"))
    assert c.read(1)[0].status == 200
    try:
        c.send(head)  # the peer may already have closed: what matters is no second answer
    except OSError:
        pass
    assert c.read(1) == [] and c.closed
    c.close()


def test_stub_status_counts_every_repeated_request(stack: Stack) -> None:
    port = stack.proxy(_CONF)
    c = Client(port)
    status = get("/status", host="two")

    def handled() -> int:
        m = re.search(rb"\n \d+ \d+ (\d+) \n", c.one(status).body)
        assert m is not None
        return int(m.group(1))

    first = handled()
    for _ in range(5):
        assert c.one(get("/p", host="two")).status == 200
    assert handled() == first + 6  # five pages and the status page itself
    c.close()


def test_a_read_of_two_heads_is_two_requests_every_time(stack: Stack) -> None:
    port = stack.proxy(_CONF)
    c = Client(port)
    two = get("/a/1", host="two") + get("/b/2", host="two")
    for _ in range(3):
        c.send(two)
        rs = c.read(2)
        assert [r.body.split()[:3] for r in rs] == [[b"a", b"a", b"1"], [b"b", b"b", b"2"]]
    c.sock.shutdown(socket.SHUT_WR)
    assert c.read(1) == []
    c.close()


_FILES = """
events {{}}
http {{
    error_log {tmp}/error.log;
    keepalive_requests 4;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/html;
        location /h/ {{ add_header X-Seq $connection_requests; }}
    }}
}}
"""


def test_a_repeated_file_head_closes_at_keepalive_requests_and_keeps_add_header(
        stack: Stack) -> None:
    html = stack.tmp / "html"
    (html / "h").mkdir(parents=True)
    for p in (html / "f.txt", html / "h" / "g.txt"):
        p.write_bytes(b"file\n")
        os.utime(p, (time.time() - 10, time.time() - 10))  # old enough for the file cache
    port = stack.proxy(_FILES)
    for path in ("/f.txt", "/h/g.txt"):
        c = Client(port)
        rs = [c.one(get(path)) for _ in range(4)]
        assert [r.headers["connection"] for r in rs] == ["keep-alive"] * 3 + ["close"]
        assert all(r.body == b"file\n" and r.headers["content-type"] == "text/plain"
                   for r in rs)
        if path.startswith("/h/"):
            assert [r.headers["x-seq"] for r in rs] == ["1", "2", "3", "4"]
        assert c.wait_closed()
        c.close()
