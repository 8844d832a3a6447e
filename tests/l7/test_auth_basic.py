"""``auth_basic``, ``auth_basic_user_file`` and ``satisfy`` compared with real nginx 1.22 on the
same file and the same htpasswd file (its hashes made by openssl and hashlib, not by pylvs):
every password form nginx reads ({PLAIN}, {SHA}, {SSHA}, $apr1$, and crypt()'s $1$ and $6$),
comments, CRLF and comment fields in the file; right and wrong passwords, unknown users,
missing and malformed Authorization headers; ``auth_basic off`` in a nested location, a realm
from a variable, a relative and a missing user file, error_page 401, ``satisfy any`` with
``allow``/``deny``; and ``$remote_user`` with or without auth_basic."""

from __future__ import annotations

import base64
import hashlib
import subprocess

from tests.l7.conftest import Stack, interop_head
from tests.l7.test_nginx_interop import _compare, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-auth.pid", "{tmp}/error-auth.log info") + """\
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /a/ {{
            auth_basic "Area 51";
            auth_basic_user_file {tmp}/htpasswd;
            location /a/open/ {{ auth_basic off; }}
        }}
        location /rel/ {{ auth_basic "rel"; auth_basic_user_file htpasswd; }}
        location /nofile/ {{ auth_basic "x"; auth_basic_user_file {tmp}/missing; }}
        location /nouserfile/ {{ auth_basic "x"; }}
        location /anyok/ {{
            satisfy any; allow 127.0.0.1; deny all;
            auth_basic "x"; auth_basic_user_file {tmp}/htpasswd;
        }}
        location /anyno/ {{
            satisfy any; deny all;
            auth_basic "x"; auth_basic_user_file {tmp}/htpasswd;
        }}
        location /allno/ {{ deny all; auth_basic "x"; auth_basic_user_file {tmp}/htpasswd; }}
        location /var/ {{ auth_basic $arg_realm; auth_basic_user_file {tmp}/htpasswd; }}
        location /ep/ {{
            auth_basic "e"; auth_basic_user_file {tmp}/htpasswd;
            error_page 401 /err401.html;
        }}
        location = /who {{ return 200 "user=[$remote_user]\\n"; }}
    }}
}}
"""

PASSWORDS = {"plain": "pw-plain", "sha": "pw-sha", "ssha": "pw-ssha", "apr": "pw-apr",
             "six": "pw-six", "md5": "pw-md5", "trail": "pw-trail", "crlf": "pw-crlf"}


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", "passwd", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _htpasswd() -> bytes:
    salt = b"s4lt!"
    ssha = base64.b64encode(hashlib.sha1(b"pw-ssha" + salt).digest() + salt).decode()
    sha = base64.b64encode(hashlib.sha1(b"pw-sha").digest()).decode()
    lines = [
        "# a comment line",
        "plain:{PLAIN}pw-plain",
        f"sha:{{SHA}}{sha}",
        f"ssha:{{SSHA}}{ssha}",
        "apr:" + _openssl("-apr1", "-salt", "saltsalt", "pw-apr"),
        "six:" + _openssl("-6", "-salt", "abcdefgh", "pw-six"),
        "md5:" + _openssl("-1", "-salt", "xyz", "pw-md5"),
        "trail:{PLAIN}pw-trail:a comment field",
        "#hidden:{PLAIN}hidden",
        "",
    ]
    return "\n".join(lines).encode() + b"crlf:{PLAIN}pw-crlf\r\nlast:{PLAIN}no-newline"


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def _requests() -> list[bytes]:
    def get(path: str, auth: str | None) -> bytes:
        hdr = f"Authorization: {auth}\r\n" if auth is not None else ""
        # (Connection: close: each answer ends with its connection, no read timeout to wait)
        return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{hdr}\r\n".encode()

    out = []
    for user, pw in [*PASSWORDS.items(), ("last", "no-newline")]:
        out.append(get("/a/f.txt", _basic(f"{user}:{pw}".encode())))
        out.append(get("/a/f.txt", _basic(f"{user}:{pw}x".encode())))
    for auth in (None, "Basic", "Basic ", "Basic !!!!", "bAsIc " + _basic(b"plain:pw-plain")[6:],
                 "Basic    " + _basic(b"plain:pw-plain")[6:], _basic(b"plainpw-plain"),
                 _basic(b":pw-plain"), _basic(b"plain:pw-plain") + "=garbage", "Bearer x",
                 _basic(b"nobody:pw"), _basic(b"hidden:hidden"), _basic(b"#hidden:hidden"),
                 _basic(b"plain:pw-plain\x00more"), _basic(b"plain:pw-plain:extra"),
                 _basic(b"PLAIN:pw-plain")):
        out.append(get("/a/f.txt", auth))
    good = _basic(b"apr:pw-apr")
    for path in ("/a/open/f.txt", "/rel/f.txt", "/nofile/f.txt", "/nouserfile/f.txt",
                 "/anyok/f.txt", "/anyno/f.txt", "/allno/f.txt", "/var/f.txt?realm=R%20x",
                 "/var/f.txt?realm=off", "/ep/f.txt", "/who"):
        for auth in (None, good, _basic(b"apr:wrong")):
            out.append(get(path, auth))
    return out


def test_auth_basic_answers_as_nginx(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    html = stack.tmp / "html"
    for d in ("a/open", "rel", "nofile", "nouserfile", "anyok", "anyno", "allno", "var", "ep"):
        (html / d).mkdir(parents=True)
        (html / d / "f.txt").write_text(f"file {d}\n")
    (html / "a" / "f.txt").write_text("file a\n")
    (html / "err401.html").write_text("custom 401 page\n")
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    (stack.tmp / "htpasswd").write_bytes(_htpasswd())
    requests = _requests()
    ours = _compare(stack, nginx_bin, CONF, "auth", requests)  # (ports masked: "PORT")
    statuses = [a[0][0] for a in ours]
    # every kind of answer came up (the file has working entries of every form)
    assert sum(s.endswith("200 OK") for s in statuses) >= 12
    assert any("401" in s for s in statuses) and any("403" in s for s in statuses)
    log = (stack.tmp / "error-auth.log").read_text()  # pylvs' (nginx writes to its own)
    assert 'user "plain": password mismatch' in log
    assert 'user "nobody" was not found in' in log
