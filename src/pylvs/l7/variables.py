"""nginx ``$variables`` in directive values (proxy_set_header, log_format, return).

Values are compiled once when the configuration is read, into literal and variable parts, so a
request only concatenates; an unknown variable is a configuration error, as in nginx.

Not for: the values themselves, which depend on a live request and are computed by the server
(``server.Exchange.variable``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A part is a literal string or, for a variable, a 1-tuple holding its name.
Part = str | tuple[str]
Template = tuple[Part, ...]

KNOWN = frozenset({
    "host", "http_host", "remote_addr", "remote_port", "remote_user", "server_addr",
    "server_port", "server_name", "server_protocol", "scheme", "request_uri", "uri",
    "document_uri", "args", "query_string", "is_args", "request_method", "request",
    "proxy_add_x_forwarded_for", "proxy_host", "proxy_port", "status", "body_bytes_sent",
    "bytes_sent", "time_local", "time_iso8601", "msec", "request_time", "request_length",
    "upstream_addr", "upstream_status", "upstream_response_time", "connection",
    "connection_requests", "content_length", "content_type", "pid", "hostname",
    "document_root", "nginx_version", "upstream_connect_time", "upstream_header_time",
    "connection_time", "https", "ssl_server_name", "realip_remote_addr", "realip_remote_port",
    "proxy_protocol_addr", "proxy_protocol_port", "proxy_protocol_server_addr",
    "proxy_protocol_server_port",
})
# Built-in variables ``set`` may assign (nginx's changeable ones); others are "duplicate".
CHANGEABLE = frozenset({"args", "limit_rate"})
_PREFIXES = ("http_", "sent_http_", "upstream_http_", "arg_", "cookie_")

_VAR = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def compile_template(text: str, unknown: Callable[[str], None] | None = None) -> Template:
    """``text`` as literal and variable parts. A name nginx does not know raises, or is handed
    to ``unknown`` when given: a configuration's ``set`` and regex captures declare names
    anywhere in the file, so its reader checks them once the whole file is read."""
    parts: list[Part] = []
    pos = 0
    for m in _VAR.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        name = (m.group(1) or m.group(2)).lower()
        if name not in KNOWN and not name.startswith(_PREFIXES) and not name.isdigit():
            if unknown is None:
                raise ValueError(f'unknown "{name}" variable')
            unknown(name)
        parts.append((name,))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    if "$" in "".join(p for p in parts if isinstance(p, str)):
        raise ValueError(f'invalid variable name in "{text}"')
    return tuple(parts)


def expand(template: Template, lookup: Callable[[str], str], empty: str = "") -> str:
    """Concatenate; ``empty`` stands for a variable without value ("-" in access logs)."""
    out: list[str] = []
    for p in template:
        if isinstance(p, str):
            out.append(p)
        else:
            v = lookup(p[0])
            out.append(v if v else empty)
    return "".join(out)


def is_constant(template: Template) -> bool:
    return all(isinstance(p, str) for p in template)
