"""nginx's try_files: the first file that exists, else an internal redirect or a status."""

from __future__ import annotations

from pathlib import Path

from tests.l7.conftest import Client, Stack, get, refused

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


def test_named_location_fallback_is_refused_at_load(tmp_path: Path) -> None:
    assert "named locations" in refused(tmp_path, "  location / {\n   try_files $uri @backend;\n  }")
