"""HTTP_GET and SSL_GET: every ``url { }`` must answer within connect_timeout with an accepted
status code, and the MD5 digest and regex it names; keepalived's HTTP/1.0 request by default.

Keywords: url { path, digest, status_code, virtualhost, regex, regex_no_match }, http_protocol,
enable_sni (SSL_GET), and nb_get_retry (keepalived's older name for retry). Defaults: port 80 /
443, delay_before_retry 3 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.checkers import CheckerConfig, Endpoint, Inherit
from pylvs.config.values import Invalid, Report, arg, words
from pylvs.health.checkers.base import CheckResult, HealthChecker, open_stream
from pylvs.health.wording import retries_text

__all__ = ["MAX_BODY", "HttpCheck", "HttpOptions", "UrlCheck", "fetch_url", "http_check"]

# A real server that sends more than this for one URL is cut off: the digest covers what was read.
MAX_BODY = 16 << 20


@dataclass(frozen=True, slots=True)
class UrlCheck:
    """One ``url { }`` of HTTP_GET/SSL_GET: what a good answer looks like."""

    path: str
    digest: str | None = None
    status_codes: tuple[tuple[int, int], ...] = ((200, 299),)
    virtualhost: str | None = None
    regex: str | None = None
    regex_no_match: bool = False

    def status_ok(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.status_codes)


@dataclass(frozen=True, slots=True)
class HttpOptions:
    urls: tuple[UrlCheck, ...] = ()
    http_protocol: str = "1.0"
    virtualhost: str | None = None  # the Host header (a url's own comes first)
    enable_sni: bool = False


def options(cfg: CheckerConfig) -> HttpOptions:
    return cfg.options if isinstance(cfg.options, HttpOptions) else HttpOptions()


class HttpCheck(HealthChecker):
    default_delay_before_retry = 3.0
    retry_aliases = ("nb_get_retry",)

    def __init__(self, keyword: str, port: int) -> None:
        self.keyword = keyword
        self.default_port = port

    def option(self, st: Statement, opts: dict[str, object], endpoint: Endpoint,
               report: Report) -> bool:
        k = st.keyword
        if k == "url":
            urls = opts.setdefault("urls", [])
            assert isinstance(urls, list)
            urls.append(_url(st, report))
        elif k == "http_protocol":
            proto = arg(st)
            if proto not in ("1.0", "1.0C", "1.1"):
                report.error(st, f"unknown http_protocol '{proto}'")
            opts["http_protocol"] = proto
        elif k == "enable_sni" and self.keyword == "SSL_GET":
            opts["enable_sni"] = True
        else:
            return False
        return True

    def finish(self, st: Statement, opts: dict[str, object], inh: Inherit) -> object:
        urls = opts.pop("urls", [])
        assert isinstance(urls, list)
        if not urls:
            raise Invalid(st, f"{self.keyword} needs at least one url")
        return HttpOptions(urls=tuple(urls), virtualhost=inh.virtualhost, **opts)  # type: ignore[arg-type]

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        return await http_check(cfg)

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str:
        return f"Remote Web server {rs} succeed on service."

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str:
        return f"HTTP_CHECK on service {rs} failed{retries_text(retries)}."


def _url(st: Statement, report: Report) -> UrlCheck:
    path = "/"
    digest = None
    codes: list[tuple[int, int]] = []
    vhost = None
    regex = None
    no_match = False
    for s in st.block or ():
        k = s.keyword
        try:
            if k == "path":
                path = arg(s)
            elif k == "digest":
                digest = arg(s).lower()
                if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
                    report.error(s, f"digest '{s.args[0]}' is not an MD5 hex digest")
            elif k == "status_code":
                for a in s.args:
                    lo_s, _, hi_s = a.partition("-")
                    try:
                        lo = int(lo_s)
                        hi = int(hi_s) if hi_s else lo
                    except ValueError:
                        report.error(s, f"status_code '{a}' is not a code or range")
                        continue
                    if not 100 <= lo <= hi <= 599:
                        report.error(s, f"status_code '{a}' outside 100-599")
                        continue
                    codes.append((lo, hi))
            elif k == "virtualhost":
                vhost = arg(s)
            elif k == "regex":
                regex = words(s)
            elif k == "regex_no_match":
                no_match = True
            else:
                report.warn(s, f"unknown keyword '{k}' in url, ignored")
        except Invalid as exc:
            report.invalid(exc)
    return UrlCheck(path, digest, tuple(codes) or ((200, 299),), vhost, regex, no_match)


def _host_header(cfg: CheckerConfig, url: UrlCheck) -> str:
    host = url.virtualhost or options(cfg).virtualhost
    if host:
        return host
    ip = str(cfg.connect_ip)
    ip = f"[{ip}]" if ":" in ip else ip
    default = 443 if cfg.kind == "SSL_GET" else 80
    return ip if cfg.connect_port == default else f"{ip}:{cfg.connect_port}"


async def fetch_url(cfg: CheckerConfig, url: UrlCheck) -> tuple[int, bytes]:
    """GET one URL as keepalived does (HTTP/1.0 by default) and return status and body."""
    opts = options(cfg)
    use_ssl = cfg.kind == "SSL_GET"
    host = _host_header(cfg, url)
    reader, writer = await open_stream(cfg, use_ssl, host.split(":")[0] if opts.enable_sni else None)
    try:
        version = "1.1" if opts.http_protocol == "1.1" else "1.0"
        lines = [f"GET {url.path} HTTP/{version}", "User-Agent: pylvs-check", f"Host: {host}"]
        if opts.http_protocol in ("1.1", "1.0C"):
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, _, header_text = head.decode("latin-1").partition("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"bad status line {status_line[:60]!r}")
        status = int(parts[1])
        headers = {}
        for line in header_text.split("\r\n"):
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if n > MAX_BODY:
                raise ValueError("response body too large")
            body = await reader.readexactly(n)
        else:
            body = await reader.read(MAX_BODY)
        return status, body
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            with contextlib.suppress(asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n")
            return bytes(out)
        if len(out) + size > MAX_BODY:
            raise ValueError("response body too large")
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def http_check(cfg: CheckerConfig) -> CheckResult:
    """Every URL must answer within connect_timeout with an accepted status, digest and regex."""
    urls = options(cfg).urls
    for url in urls:
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                status, body = await fetch_url(cfg, url)
        except TimeoutError:
            return CheckResult(False, f"{cfg.kind} {url.path}: timed out")
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError) as exc:
            return CheckResult(False, f"{cfg.kind} {url.path}: {exc.__class__.__name__}: {exc}")
        if not url.status_ok(status):
            return CheckResult(False, f"{cfg.kind} {url.path}: status {status}")
        if url.digest is not None:
            digest = hashlib.md5(body).hexdigest()
            if digest != url.digest:
                return CheckResult(False, f"{cfg.kind} {url.path}: digest {digest} != {url.digest}")
        if url.regex is not None:
            found = re.search(url.regex.encode(), body) is not None
            if found == url.regex_no_match:
                return CheckResult(False, f"{cfg.kind} {url.path}: regex {'matched' if found else 'not matched'}")
    return CheckResult(True, f"{cfg.kind}: {len(urls)} url(s) ok")


KINDS = (HttpCheck("HTTP_GET", 80), HttpCheck("SSL_GET", 443))
