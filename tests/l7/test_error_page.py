"""nginx's error_page: the page a client gets for an error, with the error's status."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.l7.conftest import Client, Stack, free_port, get, refused

CONF = """
events {{}}
http {{
    error_page 404 /errors/http-level.html;
    upstream dead {{
        server 127.0.0.1:{dead};
    }}
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/html;
        error_page 404 /errors/404.html;
        error_page 500 502 503 504 /errors/50x.html;
        error_page 403 =200 /errors/open.html;
        location /app/ {{
            proxy_pass http://dead;
            proxy_connect_timeout 2s;
        }}
        location /moved/ {{
            error_page 404 https://elsewhere.example/;
        }}
        location /plain/ {{
            error_page 404 /errors/missing.html;
        }}
    }}
}}
"""


def test_error_pages_keep_the_status_and_follow_the_levels(stack: Stack) -> None:
    html = stack.tmp / "html"
    (html / "errors").mkdir(parents=True)
    (html / "moved").mkdir()
    (html / "plain").mkdir()
    (html / "locked").mkdir(mode=0o755)
    (html / "errors" / "404.html").write_text("custom not found\n")
    (html / "errors" / "http-level.html").write_text("not used: the server has its own\n")
    (html / "errors" / "50x.html").write_text("custom upstream trouble\n")
    (html / "errors" / "open.html").write_text("nothing to see, all fine\n")
    port = stack.proxy(CONF, dead=free_port())
    c = Client(port)
    r = c.one(get("/nope.html"))  # the server's own lines replace the http level's, as in nginx
    assert (r.status, r.body) == (404, b"custom not found\n")
    r = c.one(get("/app/x"))  # nobody listens upstream: 502, the server's 50x page
    assert (r.status, r.body) == (502, b"custom upstream trouble\n")
    r = c.one(get("/locked/"))  # no index: 403, answered as 200 with another page ("=200")
    assert (r.status, r.body) == (200, b"nothing to see, all fine\n")
    r = c.one(get("/moved/gone"))  # an absolute URL: a redirect
    assert r.status == 302 and r.headers["location"] == "https://elsewhere.example/"
    r = c.one(get("/plain/gone"))  # the error page itself is missing: the plain 404
    assert r.status == 404 and b"404 Not Found" in r.body
    c.close()


@pytest.mark.parametrize("line,message", [
    ("error_page 200 /x.html;", 'value "200" must be between 300 and 599'),
    ("error_page 404 =abc /x.html;", 'invalid value "=abc"'),
    ("error_page =200 /x.html;", "invalid number of arguments"),
])
def test_bad_error_page_lines_are_refused(tmp_path: Path, line: str, message: str) -> None:
    error = refused(tmp_path, f"  {line}")
    assert message in error and ":5" in error
