"""nginx's alias: a location's matched prefix replaced by another directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.l7.conftest import Client, Stack, get, refused

CONF = """
events {{}}
http {{
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/html;
        location /images/ {{
            alias {tmp}/pics/;
        }}
        location = /logo.png {{
            alias {tmp}/pics/brand.png;
        }}
        location /docs/ {{
            alias {tmp}/manual/;
            index start.html;
        }}
    }}
}}
"""


def test_alias_replaces_the_matched_prefix(stack: Stack) -> None:
    tmp = stack.tmp
    for d in ("html/images", "pics", "manual"):
        (tmp / d).mkdir(parents=True)
    (tmp / "pics" / "cat.txt").write_text("from pics\n")
    (tmp / "pics" / "brand.png").write_bytes(b"PNG")
    (tmp / "html" / "images" / "cat.txt").write_text("from root: wrong\n")
    (tmp / "manual" / "start.html").write_text("manual start\n")
    port = stack.proxy(CONF)
    c = Client(port)
    r = c.one(get("/images/cat.txt"))
    assert (r.status, r.body) == (200, b"from pics\n")
    r = c.one(get("/logo.png"))
    assert (r.status, r.body) == (200, b"PNG")
    r = c.one(get("/docs/"))
    assert (r.status, r.body) == (200, b"manual start\n")
    assert c.one(get("/images/none.txt")).status == 404
    c.close()


@pytest.mark.parametrize("block,message", [
    ("root /a; alias /b/;", '"alias" directive is duplicate, "root" directive was specified earlier'),
    ("alias /b/; root /a;", '"root" directive is duplicate, "alias" directive was specified earlier'),
])
def test_root_and_alias_in_one_location_are_refused(tmp_path: Path, block: str, message: str) -> None:
    error = refused(tmp_path, f"  location /x/ {{\n   {block}\n  }}")
    assert message in error and ":6" in error


def test_alias_in_a_regex_location_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, "  location ~ ^/x/(.*)$ {\n   alias /b/$1;\n  }")
    assert "regular expression location" in error
