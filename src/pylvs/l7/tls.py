"""TLS for ``pylvs http``: ``listen ... ssl`` with nginx's ``ssl_*`` directives, SNI choosing the
certificate by ``server_name``, and ``proxy_pass https://`` with the ``proxy_ssl_*`` ones.

Why Python's ``ssl`` and a module of its own: termination is OpenSSL through the event loop's
TLS transport, so a TLS connection reaches ``connection`` as plain bytes and nothing on the
request path knows about TLS; the plain-HTTP path pays nothing (a TLS listener is a separate
socket with its own protocol class, ``scheme`` "https"). What nginx's directives mean in
OpenSSL terms is decided here, once per configuration:

- ``ssl_protocols``: Python sets a minimum and a maximum version, so the range from the lowest
  to the highest listed version is enabled (nginx can leave a hole; nobody lists one).
  TLSv1/TLSv1.1 also need OpenSSL's security level 0, as nginx's build gets them: the cipher
  string is given ``@SECLEVEL=0`` only when such an old version is listed.
- ``ssl_ciphers`` (TLS 1.2 and below, as nginx), ``ssl_prefer_server_ciphers``,
  ``ssl_session_tickets``: applied.
- ``ssl_session_cache``: checked as nginx checks it; ``off``/``none`` turn tickets off too (as
  nginx, a client then resumes nothing). OpenSSL's per-context cache is always on otherwise; a
  ``shared:`` cache is per worker here (Python has no cross-process session cache).
- ``ssl_session_timeout``: checked and kept; Python exposes no ``SSL_CTX_set_timeout``, so
  OpenSSL's default of 300 s (nginx's default too) applies.
- SNI: the name the client sends chooses the server whose ``server_name`` it matches (the
  same rule as Host), and that server's certificate; the request's Host still chooses the
  server for the request, as nginx 1.22 does when no client certificate is involved.

Not for: HTTP (``connection`` and above) or the sockets (``listen``).
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from typing import Any

from pylvs.l7.directives import HSL, HTTP, SERVER, Level, flag_value, setting, time_value
from pylvs.l7.model import DEFAULT_CIPHERS, DEFAULT_PROTOCOLS, ProxyTls, ServerTls, UpstreamConfig
from pylvs.l7.syntax import ConfigError, Directive

_PROTOCOLS = {"SSLv2": None, "SSLv3": None, "TLSv1": ssl.TLSVersion.TLSv1,
              "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
              "TLSv1.3": ssl.TLSVersion.TLSv1_3}


# -- the directives ------------------------------------------------------------------------------


def _path(lv: Level, d: Directive) -> None:
    lv.s[d.name] = lv.reader.abspath(d.args[0])


def _protocols(lv: Level, d: Directive) -> None:
    for p in d.args:
        if p not in _PROTOCOLS:
            raise ConfigError(f'invalid value "{p}"', d.file, d.line)
    lv.s[d.name] = tuple(d.args)


def _text(lv: Level, d: Directive) -> None:
    lv.s[d.name] = d.args[0]


def _flag(lv: Level, d: Directive) -> None:
    lv.s[d.name] = flag_value(d.args[0], d)


def _time(lv: Level, d: Directive) -> None:
    lv.s[d.name] = time_value(d.args[0], d)


def _session_cache(lv: Level, d: Directive) -> None:
    """nginx's forms: off | none | builtin[:size] | shared:name:size, the last two combinable."""
    for a in d.args:
        if a in ("off", "none") and len(d.args) == 1:
            continue
        if a == "builtin" or re.fullmatch(r"builtin:\d+", a):
            continue
        m = re.fullmatch(r"shared:([^:]+):(\d+)([kKmM]?)", a)
        if m is None:
            raise ConfigError(f'invalid session cache "{a}"', d.file, d.line)
        size = int(m.group(2)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(3).lower()]
        if size < 8192:
            raise ConfigError(f'session cache "{a}" is too small', d.file, d.line)
    lv.s[d.name] = " ".join(d.args)


for _n in ("ssl_certificate", "ssl_certificate_key"):
    setting(_n, (HTTP, SERVER), 1, 1)(_path)
setting("ssl_protocols", (HTTP, SERVER), 1, -1)(_protocols)
setting("ssl_ciphers", (HTTP, SERVER), 1, 1)(_text)
setting("ssl_prefer_server_ciphers", (HTTP, SERVER), 1, 1)(_flag)
setting("ssl_session_tickets", (HTTP, SERVER), 1, 1)(_flag)
setting("ssl_session_cache", (HTTP, SERVER), 1, 2)(_session_cache)
setting("ssl_session_timeout", (HTTP, SERVER), 1, 1)(_time)
setting("proxy_ssl_server_name", HSL, 1, 1)(_flag)
setting("proxy_ssl_verify", HSL, 1, 1)(_flag)
setting("proxy_ssl_name", HSL, 1, 1)(_text)
setting("proxy_ssl_trusted_certificate", HSL, 1, 1)(_path)
setting("proxy_ssl_protocols", HSL, 1, -1)(_protocols)
setting("proxy_ssl_ciphers", HSL, 1, 1)(_text)
# Python opens each upstream TLS connection with a full handshake (asyncio takes no session to
# resume): "on" is accepted and means "off" here
setting("proxy_ssl_session_reuse", HSL, 1, 1)(_flag)


def server_tls(s: dict[str, Any], d: Directive) -> ServerTls:
    """A server level's TLS settings from its merged directives."""
    return ServerTls(
        certificate=s.get("ssl_certificate"),
        certificate_key=s.get("ssl_certificate_key"),
        protocols=s.get("ssl_protocols", DEFAULT_PROTOCOLS),
        ciphers=s.get("ssl_ciphers", DEFAULT_CIPHERS),
        prefer_server_ciphers=s.get("ssl_prefer_server_ciphers", False),
        session_cache=s.get("ssl_session_cache", "none"),
        session_timeout=s.get("ssl_session_timeout", 300.0),
        session_tickets=s.get("ssl_session_tickets", True),
        file=d.file, line=d.line)


def proxy_tls(s: dict[str, Any]) -> ProxyTls:
    return ProxyTls(
        server_name=s.get("proxy_ssl_server_name", False),
        name=s.get("proxy_ssl_name"),
        verify=s.get("proxy_ssl_verify", False),
        trusted_certificate=s.get("proxy_ssl_trusted_certificate"),
        protocols=s.get("proxy_ssl_protocols", DEFAULT_PROTOCOLS),
        ciphers=s.get("proxy_ssl_ciphers", "DEFAULT"))


# -- OpenSSL contexts ------------------------------------------------------------------------------


def _versions(ctx: ssl.SSLContext, protocols: tuple[str, ...], ciphers: str) -> None:
    versions = [v for p in protocols if (v := _PROTOCOLS[p]) is not None]
    if not versions:
        raise ssl.SSLError("no protocols enabled")
    lo, hi = min(versions), max(versions)
    old = lo < ssl.TLSVersion.TLSv1_2
    if old:  # OpenSSL 3 refuses TLS 1.0/1.1 above security level 0; nginx's build allows them
        ciphers += ":@SECLEVEL=0"
    ctx.set_ciphers(ciphers)
    ctx.minimum_version, ctx.maximum_version = lo, hi


def server_context(t: ServerTls) -> ssl.SSLContext:
    """The context of one server block; errors in nginx's words, at the server's line."""
    if t.certificate is None:
        raise ConfigError('no "ssl_certificate" is defined for the "listen ... ssl" directive',
                          t.file, t.line)
    if t.certificate_key is None:
        raise ConfigError(f'no "ssl_certificate_key" is defined for certificate '
                          f'"{t.certificate}"', t.file, t.line)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(t.certificate, t.certificate_key)
    except FileNotFoundError as e:
        missing = t.certificate if e.filename in (None, t.certificate) else t.certificate_key
        raise ConfigError(f'cannot load certificate "{missing}": BIO_new_file() failed '
                          f'(SSL: error:80000002:system library::No such file or directory)',
                          t.file, t.line) from None
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f'cannot load certificate "{t.certificate}": {e}', t.file,
                          t.line) from None
    try:
        _versions(ctx, t.protocols, t.ciphers)
    except ssl.SSLError as e:
        raise ConfigError(f'SSL_CTX_set_cipher_list("{t.ciphers}") failed ({e})', t.file,
                          t.line) from None
    if t.prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if not t.session_tickets or t.session_cache in ("off", "none"):
        ctx.options |= ssl.OP_NO_TICKET
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def upstream_context(t: ProxyTls) -> ssl.SSLContext:
    """The client context for ``proxy_pass https://``: as nginx, no verification unless
    ``proxy_ssl_verify on`` (then against ``proxy_ssl_trusted_certificate``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if t.verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if t.trusted_certificate is not None:
            ctx.load_verify_locations(t.trusted_certificate)
        else:
            ctx.load_default_certs()
    else:
        ctx.verify_mode = ssl.CERT_NONE
    _versions(ctx, t.protocols, t.ciphers)
    return ctx


def sni_name(t: ProxyTls) -> str:
    """The name sent to the upstream in SNI ("" = none, nginx's default): ``proxy_ssl_name``,
    which defaults to the proxy_pass host (without its port)."""
    if not t.server_name or not t.name or t.name.startswith("["):
        return ""
    host, colon, port = t.name.rpartition(":")
    return host if colon and port.isdigit() else t.name


def https_upstream(upstreams: dict[str, UpstreamConfig], name: str, t: ProxyTls) -> str:
    """The pool ``proxy_pass https://NAME`` uses: a copy of the upstream ``name`` (its
    servers, weights and keepalive) whose connections speak TLS with ``t``; locations with other
    proxy_ssl settings get pools of their own."""
    t = dataclasses.replace(t, name=t.name or name)
    key = f"https://{name}"
    n = 1
    while key in upstreams and upstreams[key].tls != t:
        n += 1
        key = f"https://{name}#{n}"
    if key not in upstreams:
        upstreams[key] = dataclasses.replace(upstreams[name], name=key, tls=t)
    return key
