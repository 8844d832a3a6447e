"""Access log lines from a custom log_format: every kind of variable, and "-" for empty ones."""

from __future__ import annotations

from tests.l7.conftest import Client, Stack, get, wait_for

_CONF = """
events {{}}
http {{
    log_format probe '$request_method|$uri|$args|$arg_x|$cookie_c|$http_user_agent|'
                     '$http_x_none|$status|$body_bytes_sent|$upstream_addr|${{remote_addr}}';
    access_log {tmp}/probe.log probe;
    upstream up {{ server 127.0.0.1:{app}; keepalive 2; }}
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/html;
        location ~ \\.jsp$ {{ proxy_pass http://up; proxy_http_version 1.1;
                             proxy_set_header Connection ""; }}
    }}
}}
"""


def test_custom_log_format_fills_every_kind_of_variable(stack: Stack) -> None:
    (stack.tmp / "html").mkdir()
    (stack.tmp / "html" / "a.txt").write_text("hello\n")
    app = stack.app("4")
    port = stack.proxy(_CONF, app=app)
    c = Client(port)
    assert c.one(get("/a.txt?x=1&y=2", extra="Cookie: b=0; c=9\r\nUser-Agent: probe/1\r\n")
                 ).status == 200
    for _ in range(2):  # the second one rides a kept-alive upstream connection
        assert c.one(get("/p.jsp")).status == 200
    c.close()
    log = stack.tmp / "probe.log"
    assert wait_for(lambda: log.exists() and log.read_text().count("\n") == 3)
    lines = log.read_text().splitlines()
    assert lines[0] == "GET|/a.txt|x=1&y=2|1|9|probe/1|-|200|6|-|127.0.0.1"
    assert lines[1] == f"GET|/p.jsp|-|-|-|-|-|200|15|127.0.0.1:{app}|127.0.0.1"
    assert lines[2] == lines[1]
