"""nginx's rewrite rules, sans-IO: captures, variables, arguments, flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pylvs.l7.config import Rewrite
from pylvs.l7.rewrite import run
from tests.l7.conftest import refused


def rw(pattern: str, replacement: str, flag: str = "") -> Rewrite:
    return Rewrite(re.compile(pattern), replacement, flag)


def var(name: str) -> str:
    return {"host": "example.org", "scheme": "http"}.get(name, "")


def test_captures_variables_and_arguments() -> None:
    out = run((rw(r"^/u/(\w+)/(\d+)$", "/user.php?name=$1&id=$2&h=${host}"),), "/u/ann/7", "x=1", var)
    assert (out.uri, out.args, out.action) == ("/user.php", "name=ann&id=7&h=example.org&x=1", "changed")
    out = run((rw(r"^/a$", "/b?"),), "/a", "drop=me", var)
    assert (out.uri, out.args) == ("/b", "")
    out = run((rw(r"^/a$", "/b"),), "/a", "keep=me", var)
    assert (out.uri, out.args) == ("/b", "keep=me")
    assert run((rw(r"^/z$", "/y"),), "/a", "", var).action == ""


def test_flags_stop_or_go_on() -> None:
    rules = (rw(r"^/one$", "/two"), rw(r"^/two$", "/three", "break"), rw(r"^/three$", "/four"))
    out = run(rules, "/one", "", var)
    assert (out.uri, out.action) == ("/three", "break")  # no flag goes on; break stops
    out = run((rw(r"^/a$", "/b", "last"), rw(r"^/b$", "/c")), "/a", "", var)
    assert (out.uri, out.action) == ("/b", "last")
    out = run((rw(r"^/p/(.*)$", "/q/$1", "permanent"),), "/p/x", "k=v", var)
    assert (out.action, out.status, out.location) == ("redirect", 301, "/q/x?k=v")
    out = run((rw(r"^/(.*)$", "$scheme://other.example/$1"),), "/x", "", var)
    assert (out.action, out.status, out.location) == ("redirect", 302, "http://other.example/x")


@pytest.mark.parametrize("line,message", [
    ("rewrite ^/a$ /b sideways;", 'invalid parameter "sideways"'),
    ("rewrite ^/a($ /b;", "pcre2_compile() failed"),
])
def test_bad_rewrite_lines_are_refused(tmp_path: Path, line: str, message: str) -> None:
    error = refused(tmp_path, f"  {line}")
    assert message in error and ":5" in error
