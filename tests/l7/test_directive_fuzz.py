"""The directives added to ``pylvs http`` (map, allow/deny, expires, the upstream methods, the
proxy header rules, realip, internal, etag, the redirect flags, auth_basic and satisfy,
gzip_static, autoindex) never end ``-t`` in anything but nginx's one-line ``[emerg]`` (a
``ConfigError``), whatever arguments they are given: random lines of those directives, each with
arguments drawn from values near and past what it accepts, placed where the directive is allowed
in an otherwise valid file (so most files get past the first line and the readers' deeper checks
run)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.l7.config import load
from pylvs.l7.syntax import ConfigError

_ADDR = ["all", "unix:", "10.0.0.1", "10.0.0.1/8", "10.0.0.1/33", "::1", "::1/129", "300.1.1.1",
         "010.1.1.1", "fe80::1%eth0", "1.2.3.4/x", "-1", "::ffff:1.2.3.4/96", "0.0.0.0/0"]
_TEXT = ["", "off", "on", "default", "$host", "$1", "$n", "$nosuch", "x", "/", "/a/", "~", "~*",
         "~^/(a)(", "~^/(?<n>a)/", "http://127.0.0.1:1/x/", "'a b'", "\\", "{", "}", ";"]
# each directive: where it goes, its argument pool, how many arguments at most
_ROWS: dict[str, tuple[str, list[str], int]] = {
    "allow": ("hsl", _ADDR, 1),
    "deny": ("hsl", _ADDR, 1),
    "expires": ("hsl", ["off", "epoch", "max", "modified", "1d", "-1h", "@25h", "@12h30m",
                        "+5m", "1x", "", "$host", "-", "@"], 2),
    "proxy_redirect": ("hsl", _TEXT, 2),
    "proxy_hide_header": ("hsl", _TEXT, 1),
    "proxy_pass_header": ("hsl", _TEXT, 1),
    "proxy_cookie_domain": ("hsl", _TEXT, 2),
    "proxy_cookie_path": ("hsl", _TEXT, 2),
    "proxy_cookie_flags": ("hsl", ["off", "one", "~^a", "~(", "secure", "nosamesite",
                                   "samesite=lax", "$host", ""], 5),
    "proxy_ignore_headers": ("hsl", ["X-Accel-Redirect", "Set-Cookie", "Vary", "x", ""], 3),
    # (only values read as addresses: anything else is a host name nginx resolves)
    "set_real_ip_from": ("hsl", ["unix:", "10.0.0.1", "10.0.0.1/8", "10.0.0.1/24", "::1",
                                 "::1/64", "0.0.0.0/0", "010.1.1.1"], 1),
    "real_ip_header": ("hsl", ["X-Forwarded-For", "X-Real-IP", "proxy_protocol", "", "x y"], 1),
    "real_ip_recursive": ("hsl", ["on", "off", "1", ""], 1),
    "etag": ("hsl", ["on", "off", "x"], 1),
    "absolute_redirect": ("hsl", ["on", "off", "x"], 1),
    "port_in_redirect": ("hsl", ["on", "off", ""], 1),
    "server_name_in_redirect": ("hsl", ["on", "off", "1"], 1),
    "auth_basic": ("hsl", ["realm", "off", "$host", "$nosuch", ""], 1),
    "auth_basic_user_file": ("hsl", ["/etc/nonexistent", "rel/file", "$host", ""], 1),
    "satisfy": ("hsl", ["all", "any", "x"], 1),
    "gzip_static": ("hsl", ["on", "off", "always", "x"], 1),
    "autoindex": ("hsl", ["on", "off", "x"], 1),
    "autoindex_format": ("hsl", ["html", "xml", "json", "jsonp", "x"], 1),
    "autoindex_exact_size": ("hsl", ["on", "off", ""], 1),
    "autoindex_localtime": ("hsl", ["on", "off", "1"], 1),
    "if_modified_since": ("hsl", ["off", "exact", "before", "x"], 1),
    "root": ("hsl", ["/srv/$host", "$1", "/x", "", "$nosuch/y"], 1),
    "internal": ("l", ["", "x"], 0),
    "least_conn": ("u", ["x"], 0),
    "ip_hash": ("u", ["x"], 0),
    "hash": ("u", ["$remote_addr", "$nosuch", "consistent", "", "x$uri"], 2),
    "random": ("u", ["two", "least_conn", "x", ""], 2),
    "server": ("u", ["max_conns=-1", "max_conns=2", "max_conns=x", "backup",
                     "weight=0", "weight=2", "down"], 4),
    "keepalive": ("u", ["8", "0", "-1"], 1),
}


def _word(a: str) -> str:
    """An argument as written in the file: quoted where it would not be one word."""
    return f'"{a}"' if a in ("", "{", "}", ";") else a


def _lines(where: str) -> st.SearchStrategy[list[str]]:
    names = sorted(n for n, (ctx, _, _) in _ROWS.items() if where in ctx)

    @st.composite
    def line(draw: st.DrawFn) -> str:
        name = draw(st.sampled_from(names))
        _, pool, most = _ROWS[name]
        # mostly the row's own count, sometimes one more or one less
        n = draw(st.sampled_from([most] * 12 + [max(0, most - 1), most + 1]))
        args = [draw(st.sampled_from(pool)) for _ in range(n)]
        if name == "server":  # an address first (a name would be looked up in the DNS)
            args = ["127.0.0.1:2", *args[1:]]
        return " ".join([name, *map(_word, args)]) + ";"

    return st.lists(line(), max_size=3)


_map_line = st.tuples(st.sampled_from([*_TEXT, "default", "hostnames", "volatile", "*.a",
                                       ".a", "a.*", "include"]),
                      st.lists(st.sampled_from(_TEXT), min_size=1, max_size=1)).map(
    lambda t: " ".join(map(_word, (t[0], *t[1]))) + ";")


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_lines("h"), _lines("u"), _lines("s"), _lines("l"), st.lists(_map_line, max_size=4),
       st.sampled_from(["$http_x", "$http_x", "$host$uri", "", "x"]),
       st.sampled_from(["$m", "$m", "$m", "$m", "m", "$host"]))
def test_new_directives_fail_only_as_config_errors(
        tmp_path: Path, http: list[str], upstream: list[str], server: list[str],
        location: list[str], map_lines: list[str], source: str, var: str) -> None:
    text = ("events {}\nhttp {\n" + "\n".join(http)
            + f'\nmap "{source}" {var} {{\n' + "\n".join(map_lines) + "\n}\n"
            + "upstream u {\n server 127.0.0.1:1;\n" + "\n".join(upstream) + "\n}\n"
            + "server {\n listen 127.0.0.1:1;\n" + "\n".join(server)
            + "\n location / {\n proxy_pass http://u;\n" + "\n".join(location) + "\n }\n}\n}\n")
    p = tmp_path / "fuzz.conf"
    p.write_text(text)
    try:
        load(str(p))
    except ConfigError as e:
        assert "\n" not in str(e)
