"""nginx's try_files: the first file that exists, else an internal redirect or a status."""

from __future__ import annotations

from tests.l7.conftest import Client, Stack, get

CONF = """
events {{}}
http {{
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/html;
        location / {{
            try_files $uri $uri/ /app.html;
        }}
        location /strict/ {{
            try_files $uri =404;
        }}
        location /loop/ {{
            try_files $uri /loop/again;
        }}
    }}
}}
"""


def test_first_existing_candidate_else_the_fallback(stack: Stack) -> None:
    html = stack.tmp / "html"
    (html / "docs").mkdir(parents=True)
    (html / "strict").mkdir()
    (html / "real.txt").write_text("a real file\n")
    (html / "app.html").write_text("the single-page app\n")
    (html / "docs" / "index.html").write_text("docs index\n")
    (html / "strict" / "here.txt").write_text("strict file\n")
    port = stack.proxy(CONF)
    c = Client(port)
    assert c.one(get("/real.txt")).body == b"a real file\n"
    assert c.one(get("/docs/")).body == b"docs index\n"  # $uri/: the directory, its index
    r = c.one(get("/some/client/route?x=1"))
    assert (r.status, r.body) == (200, b"the single-page app\n")
    assert c.one(get("/strict/here.txt")).body == b"strict file\n"
    assert c.one(get("/strict/missing.txt")).status == 404
    assert c.one(get("/loop/x")).status == 500  # redirects to itself: a cycle, as nginx says
    c.close()


def test_named_location_fallback(stack: Stack) -> None:
    """``try_files ... @name``: the named location answers with the URI unchanged; one that
    does not exist is nginx's 500."""
    (stack.tmp / "html").mkdir()
    port = stack.proxy("events {{}}\nhttp {{ server {{ listen 127.0.0.1:{port}; root {tmp}/html;\n"
                       " location / {{ try_files $uri @app; }}\n"
                       " location /gone/ {{ try_files $uri @nowhere; }}\n"
                       " location @app {{ return 200 \"app $uri $args\"; }} }} }}\n")
    c = Client(port)
    r = c.one(get("/x/y?q=1"))
    assert (r.status, r.body) == (200, b"app /x/y q=1")
    assert c.one(get("/gone/x")).status == 500
    c.close()
