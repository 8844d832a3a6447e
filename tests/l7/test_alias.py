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


def test_alias_in_a_regex_location_takes_its_captures(stack: Stack) -> None:
    """In a regex location the alias, captures substituted, is the whole path; a literal one
    names one file for every URI the regex matches."""
    (stack.tmp / "pics").mkdir()
    (stack.tmp / "pics" / "cat.txt").write_text("cat\n")
    port = stack.proxy("events {{}}\nhttp {{ server {{ listen 127.0.0.1:{port};\n"
                       " location ~ ^/x/(?<n>.+)\\.img$ {{ alias {tmp}/pics/$n.txt; }}\n"
                       " location ~ ^/y/(.*)$ {{ alias {tmp}/pics/$1; }}\n"
                       " location ~ ^/one/ {{ alias {tmp}/pics/cat.txt; }} }} }}\n")
    c = Client(port)
    assert (c.one(get("/x/cat.img")).body, c.one(get("/y/cat.txt")).body) == (b"cat\n", b"cat\n")
    assert c.one(get("/one/any/thing")).body == b"cat\n"
    assert c.one(get("/y/dog.txt")).status == 404
    c.close()
