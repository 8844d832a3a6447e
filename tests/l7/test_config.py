"""nginx-syntax configuration: the seed's directives, inheritance, and ``pylvs http -t`` giving
nginx -t's messages with file:line (checked against real nginx when it is installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.l7.cli import check
from pylvs.l7.config import ConfigError, Return, load

SEED = """
events { worker_connections 1024; }
http {
    upstream tomcat { server 127.0.0.1:8080 weight=2; server 127.0.0.1:8090 weight=1; }
    keepalive_timeout 65;
    proxy_set_header X-Outer 1;
    server {
        listen 127.0.0.1:8000;
        server_name nginx1;
        root html;
        location ~ .*.jsp$ {
            proxy_pass http://tomcat;
            proxy_set_header HOST $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
        location /plain/ { }
    }
}
"""

# Bad configurations, each with the [emerg] message nginx 1.22 prints for it.
BAD = {
    "unknown": ("events {}\nhttp {\n  server {\n    foo bar;\n  }\n}\n",
                'unknown directive "foo" in {f}:4'),
    "brace": ("events {}\nhttp {\n  server {\n    listen 127.0.0.1:1\n  }\n}\n",
              'unexpected "}" in {f}:5'),
    "eof": ("events {}\nhttp {\n  server {\n    listen 127.0.0.1:1;\n",
            'unexpected end of file, expecting "}" in {f}:5'),
    "context": ("events {}\nhttp {\n  server {\n    location / {\n      server { }\n    }\n  }\n}\n",
                '"server" directive is not allowed here in {f}:5'),
    "nargs": ("events {}\nhttp {\n  server {\n    location / {\n      proxy_pass;\n    }\n  }\n}\n",
              'invalid number of arguments in "proxy_pass" directive in {f}:5'),
    "dup_location": ("events {}\nhttp {\n  server {\n    location /a { }\n    location /a { }\n  }\n}\n",
                     'duplicate location "/a" in {f}:5'),
    "weight": ("events {}\nhttp {\n  upstream u {\n    server 127.0.0.1:8080 weight=x;\n  }\n}\n",
               'invalid parameter "weight=x" in {f}:4'),
    "uri_in_regex": ("events {}\nhttp {\n upstream u { server 127.0.0.1:1; }\n  server {\n"
                     "    location ~ \\.jsp$ {\n      proxy_pass http://u/x;\n    }\n  }\n}\n",
                     '"proxy_pass" cannot have URI part in location given by regular expression, '
                     'or inside named location, or inside "if" statement, or inside '
                     '"limit_except" block in {f}:6'),
    "dup_root": ("events {}\nhttp {\n  server {\n    root /a;\n    root /b;\n  }\n}\n",
                 '"root" directive is duplicate in {f}:5'),
    "no_brace": ("events {}\nhttp {\n  server;\n}\n", 'directive "server" has no opening "{" in {f}:3'),
    "semicolon": ("events {}\nhttp {\n  ;\n}\n", 'unexpected ";" in {f}:3'),
    "time": ("events {}\nhttp {\n  keepalive_timeout abc;\n}\n",
             '"keepalive_timeout" directive invalid value in {f}:3'),
    "dup_upstream": ("events {}\nhttp {\n  upstream u { server 127.0.0.1:1; }\n"
                     "  upstream u { server 127.0.0.1:2; }\n}\n", 'duplicate upstream "u" in {f}:4'),
    "listen": ("events {}\nhttp {\n  server {\n    listen 127.0.0.1:1 bogus;\n  }\n}\n",
               'invalid parameter "bogus" in {f}:4'),
    "http_version": ("events {}\nhttp {\n  proxy_http_version 2.0;\n}\n", 'invalid value "2.0" in {f}:3'),
    "empty_upstream": ("events {}\nhttp {\n  upstream u { keepalive 2; }\n}\n",
                       "no servers are inside upstream in {f}:3"),
    "include": ("events {}\nhttp {\n  include nosuchfile.conf;\n}\n",
                'open() "{d}/nosuchfile.conf" failed (2: No such file or directory) in {f}:3'),
    "next_upstream": ("events {}\nhttp {\n  proxy_next_upstream bogus;\n}\n", 'invalid value "bogus" in {f}:3'),
    "not_terminated": ("events {}\nhttp {\n  root /x {\n  }\n}\n",
                       'directive "root" is not terminated by ";" in {f}:3'),
    "log_format": ("events {}\nhttp {\n  access_log /dev/null nosuch;\n}\n",
                   'unknown log format "nosuch" in {f}:3'),
}


def test_seed_config_reads_as_nginx_merges_it(tmp_path: Path) -> None:
    p = tmp_path / "nginx.conf"
    p.write_text(SEED)
    cfg = load(str(p))
    up = cfg.upstreams["tomcat"]
    assert [(s.port, s.weight, s.max_fails, s.fail_timeout) for s in up.servers] == [
        (8080, 2, 1, 10.0), (8090, 1, 1, 10.0)]
    (srv,) = cfg.servers
    assert srv.listens[0].host == "127.0.0.1" and srv.listens[0].port == 8000
    jsp, plain = srv.locations
    assert jsp.modifier == "~" and jsp.regex is not None and jsp.regex.search("/index.jsp")
    assert jsp.proxy_pass is not None and jsp.proxy_pass.upstream == "tomcat"
    assert jsp.root == str(tmp_path / "html")
    assert jsp.keepalive_timeout == 65
    names = [n.lower() for n, _ in jsp.proxy_set_header]
    # its own proxy_set_header replace the inherited ones; nginx's defaults it leaves follow
    # them (nginx sends them in that order)
    assert names == ["host", "x-real-ip", "x-forwarded-for", "connection"]
    assert [n for n, _ in plain.proxy_set_header] == ["X-Outer", "Host", "Connection"]
    assert jsp.proxy_http_version == "1.0"
    assert jsp.proxy_next_upstream == frozenset({"error", "timeout"})


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_gets_nginx_message_with_file_and_line(tmp_path: Path, name: str) -> None:
    text, expected = BAD[name]
    p = tmp_path / f"{name}.conf"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load(str(p))
    assert str(ei.value) == expected.replace("{f}", str(p)).replace("{d}", str(tmp_path))


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (Debian nginx-light)")
def test_check_agrees_with_real_nginx_t(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (text, _) in sorted(BAD.items()):
        p = tmp_path / f"{name}.conf"
        p.write_text(text)
        rc, _cfg = check(str(p))
        ours = subprocess.CompletedProcess([], rc, "", capsys.readouterr().err)
        theirs = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", "/dev/null", "-c", str(p)],
                                capture_output=True, text=True, timeout=30)
        assert ours.returncode == theirs.returncode == 1, name
        emerg = [ln.split(": ", 1)[1] for ln in theirs.stderr.splitlines() if "[emerg]" in ln]
        mine = [ln.split(": ", 1)[1] for ln in ours.stderr.splitlines() if "[emerg]" in ln]
        assert mine == emerg, name


def test_check_success_and_failure_messages(tmp_path: Path) -> None:
    p = tmp_path / "nginx.conf"
    p.write_text(SEED)
    r = _pylvs_t(p)
    assert r.returncode == 0
    assert r.stderr == (f"pylvs http: the configuration file {p} syntax is ok\n"
                        f"pylvs http: configuration file {p} test is successful\n")
    p.write_text(SEED.replace("keepalive_timeout 65;", "keepalive_timeout 65"))
    r = _pylvs_t(p)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith("pylvs http: [emerg] ") and lines[0].endswith(f" in {p}:6")
    assert lines[1] == f"pylvs http: configuration file {p} test failed"


def _pylvs_t(p: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylvs.cli.main", "http", "-t", "-c", str(p)],
                          capture_output=True, text=True, timeout=60)


def test_includes_types_and_log_format(tmp_path: Path) -> None:
    (tmp_path / "mime.types").write_text("types {\n text/html html;\n image/png png PNG;\n}\n")
    (tmp_path / "nginx.conf").write_text(
        "events {}\nhttp {\n include mime.types;\n default_type application/octet-stream;\n"
        " log_format short '$remote_addr $status';\n access_log logs.txt short;\n"
        " server { listen 127.0.0.1:1; location = /x { return 200 'hi $host'; } }\n}\n")
    cfg = load(str(tmp_path / "nginx.conf"))
    loc = cfg.servers[0].locations[0]
    assert loc.types == {"html": "text/html", "png": "image/png"}
    assert loc.default_type == "application/octet-stream"
    assert loc.access_log[0].path == str(tmp_path / "logs.txt")
    assert loc.access_log[0].format == (("remote_addr",), " ", ("status",))
    ret = loc.rewrites[0]
    assert isinstance(ret, Return) and ret.code == 200


_ALPHABET = st.sampled_from(["{", "}", ";", " ", "\n", "#", "'", '"', "\\", "$", "http", "server",
                             "location", "~", "/", "listen", "1", "upstream", "u", "proxy_pass",
                             "http://u", "events", "x", "=", "weight=2", "root"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ALPHABET, max_size=40))
def test_parser_never_fails_other_than_config_error(tmp_path: Path, parts: list[str]) -> None:
    p = tmp_path / "fuzz.conf"
    p.write_text(" ".join(parts))
    try:
        load(str(p))
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_parser_survives_arbitrary_text(tmp_path: Path, text: str) -> None:
    p = tmp_path / "fuzz.conf"
    p.write_text(text)
    try:
        load(str(p))
    except ConfigError:
        pass


def test_add_header_inherits_like_proxy_set_header(tmp_path: Path) -> None:
    p = tmp_path / "n.conf"
    p.write_text("events {}\nhttp {\n add_header X-A 1;\n server { listen 127.0.0.1:1;\n"
                 "  location /own { add_header X-B 2 always; }\n  location /inh { }\n }\n}\n")
    srv = load(str(p)).servers[0]
    own, inh = srv.locations
    assert [(n, a) for n, _, a in own.add_header] == [("X-B", True)]
    assert [(n, a) for n, _, a in inh.add_header] == [("X-A", False)]
    p.write_text("events {}\nhttp { add_header X-A 1 sometimes; }\n")
    with pytest.raises(ConfigError, match='invalid parameter "sometimes"'):
        load(str(p))


def test_upstream_keepalive_settings(tmp_path: Path) -> None:
    p = tmp_path / "n.conf"
    p.write_text("events {}\nhttp {\n upstream u {\n  server 127.0.0.1:1 max_fails=3 fail_timeout=30s;\n"
                 "  server 127.0.0.1:2 backup;\n  server 127.0.0.1:3 down;\n  keepalive 16;\n"
                 "  keepalive_requests 50;\n  keepalive_timeout 5s;\n  zone u 64k;\n }\n}\n")
    up = load(str(p)).upstreams["u"]
    assert (up.keepalive, up.keepalive_requests, up.keepalive_timeout) == (16, 50, 5.0)
    assert [(s.max_fails, s.fail_timeout, s.backup, s.down) for s in up.servers] == [
        (3, 30.0, False, False), (1, 10.0, True, False), (1, 10.0, False, True)]
