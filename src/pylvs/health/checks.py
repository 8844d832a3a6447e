"""The probes of keepalived's checkers: TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK,
SMTP_CHECK, UDP_CHECK, PING_CHECK and FILE_CHECK.

What this is for: one attempt each, bounded by its timeout, answering "did the real server pass"
with a one-line reason (and a weight for MISC_CHECK ``misc_dynamic``). They never block the event
loop: sockets are asyncio's, scripts run as subprocesses that are killed at their timeout, and a
server that answers slowly or with garbage fails this attempt without holding up any other check.

What this is not for: retries, up/down decisions and the table (``pylvs.health.state`` and
``manager``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import signal
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from pylvs.config.lvs import CheckerConfig, UrlCheck
from pylvs.trackers.trackfile import read_value, weighted

# A real server that sends more than this for one URL is cut off: the digest covers what was read.
MAX_BODY = 16 << 20


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str
    weight: int | None = None


async def _open(cfg: CheckerConfig, use_ssl: bool = False, server_hostname: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    local = (str(cfg.bindto), cfg.bind_port) if cfg.bindto is not None else None
    ctx = None
    if use_ssl:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection(
        str(cfg.connect_ip), cfg.connect_port, local_addr=local, ssl=ctx,
        server_hostname=server_hostname if use_ssl else None,
    )


async def tcp_check(cfg: CheckerConfig) -> CheckResult:
    try:
        _, writer = await asyncio.wait_for(_open(cfg), cfg.connect_timeout)
    except TimeoutError:
        return CheckResult(False, f"TCP connect to {cfg.connect_ip}:{cfg.connect_port} timed out")
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return CheckResult(False, f"TCP connect to {cfg.connect_ip}:{cfg.connect_port} failed: {reason}")
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return CheckResult(True, "TCP connect succeeded")


def _host_header(cfg: CheckerConfig, url: UrlCheck) -> str:
    host = url.virtualhost or cfg.virtualhost
    if host:
        return host
    ip = str(cfg.connect_ip)
    ip = f"[{ip}]" if ":" in ip else ip
    default = 443 if cfg.kind == "SSL_GET" else 80
    return ip if cfg.connect_port == default else f"{ip}:{cfg.connect_port}"


async def fetch_url(cfg: CheckerConfig, url: UrlCheck) -> tuple[int, bytes]:
    """GET one URL as keepalived does (HTTP/1.0 by default) and return status and body."""
    use_ssl = cfg.kind == "SSL_GET"
    host = _host_header(cfg, url)
    reader, writer = await _open(cfg, use_ssl, host.split(":")[0] if cfg.enable_sni else None)
    try:
        version = "1.1" if cfg.http_protocol == "1.1" else "1.0"
        lines = [f"GET {url.path} HTTP/{version}", "User-Agent: pylvs-check", f"Host: {host}"]
        if cfg.http_protocol in ("1.1", "1.0C"):
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
    for url in cfg.urls:
        try:
            status, body = await asyncio.wait_for(fetch_url(cfg, url), cfg.connect_timeout)
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
    return CheckResult(True, f"{cfg.kind}: {len(cfg.urls)} url(s) ok")


async def misc_check(cfg: CheckerConfig) -> CheckResult:
    """Run misc_path through the shell; killed (with its process group) at misc_timeout."""
    timeout = cfg.misc_timeout if cfg.misc_timeout is not None else cfg.delay_loop
    proc = await asyncio.create_subprocess_shell(
        cfg.misc_path, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    try:
        rc = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return CheckResult(False, f"MISC_CHECK {cfg.misc_path!r}: killed after {timeout:g} s")
    if rc == 0:
        return CheckResult(True, "MISC_CHECK exit 0")
    if rc == 1 or rc < 0:
        return CheckResult(False, f"MISC_CHECK exit {rc}")
    if cfg.misc_dynamic:
        return CheckResult(True, f"MISC_CHECK exit {rc}: weight {rc - 2}", weight=rc - 2)
    return CheckResult(False, f"MISC_CHECK exit {rc}")


_DNS_QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}


def dns_query(qid: int, name: str, qtype: str) -> bytes:
    labels = b"".join(
        bytes([len(p)]) + p.encode("idna") for p in name.strip(".").split(".") if p
    )
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", _DNS_QTYPES[qtype], 1)


async def dns_check(cfg: CheckerConfig) -> CheckResult:
    """A UDP query; the answer must carry our id, be a response, and have RCODE NOERROR."""
    loop = asyncio.get_running_loop()
    qid = random.randrange(65536)
    fut: asyncio.Future[bytes] = loop.create_future()

    class _Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if len(data) >= 4 and struct.unpack("!H", data[:2])[0] == qid and not fut.done():
                fut.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not fut.done():
                fut.set_exception(exc)

    local = (str(cfg.bindto), cfg.bind_port) if cfg.bindto is not None else None
    transport, _ = await loop.create_datagram_endpoint(
        _Proto, remote_addr=(str(cfg.connect_ip), cfg.connect_port), local_addr=local,
    )
    try:
        transport.sendto(dns_query(qid, cfg.dns_name, cfg.dns_type))
        data = await asyncio.wait_for(fut, cfg.connect_timeout)
    except TimeoutError:
        return CheckResult(False, "DNS_CHECK: no answer")
    except OSError as exc:
        return CheckResult(False, f"DNS_CHECK: {exc.strerror or exc}")
    finally:
        transport.close()
    flags = struct.unpack("!H", data[2:4])[0]
    if not flags & 0x8000:
        return CheckResult(False, "DNS_CHECK: answer is not a response")
    rcode = flags & 0xF
    if rcode:
        return CheckResult(False, f"DNS_CHECK: rcode {rcode}")
    return CheckResult(True, "DNS_CHECK: NOERROR")


async def smtp_check(cfg: CheckerConfig) -> CheckResult:
    """Banner 220, HELO answered 250, then QUIT: a mail server that talks SMTP."""

    async def talk() -> CheckResult:
        reader, writer = await _open(cfg)
        try:
            banner = await reader.readline()
            if not banner.startswith(b"220"):
                return CheckResult(False, f"SMTP_CHECK: banner {banner[:40]!r}")
            while banner[3:4] == b"-":
                banner = await reader.readline()
            helo = cfg.helo_name or os.uname().nodename
            writer.write(f"HELO {helo}\r\n".encode())
            await writer.drain()
            line = await reader.readline()
            while line[3:4] == b"-":
                line = await reader.readline()
            if not line.startswith(b"250"):
                return CheckResult(False, f"SMTP_CHECK: HELO answered {line[:40]!r}")
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
            return CheckResult(True, "SMTP_CHECK: HELO accepted")
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(talk(), cfg.connect_timeout)
    except TimeoutError:
        return CheckResult(False, "SMTP_CHECK: timed out")
    except OSError as exc:
        return CheckResult(False, f"SMTP_CHECK: {exc.strerror or exc}")


def _datagram_socket(cfg: CheckerConfig, kind: int, proto: int = 0) -> socket.socket:
    family = socket.AF_INET6 if cfg.connect_ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if cfg.bindto is not None:
            sock.bind((str(cfg.bindto), cfg.bind_port))
    except OSError:
        sock.close()
        raise
    return sock


def reply_matches(cfg: CheckerConfig, data: bytes) -> str | None:
    """Why a UDP_CHECK answer is not the one required (None when it is): its length must lie in
    [min_reply_length, max_reply_length] and it must agree with the require_reply pattern over
    the bytes both have, X nibbles matching anything."""
    if not cfg.min_reply_length <= len(data) <= cfg.max_reply_length:
        return (f"reply of {len(data)} bytes, not {cfg.min_reply_length}-"
                f"{cfg.max_reply_length}")
    for got, want, mask in zip(data, cfg.reply_value, cfg.reply_mask, strict=False):
        if got & mask != want & mask:
            return "reply does not match require_reply"
    return None


async def udp_check(cfg: CheckerConfig) -> CheckResult:
    """One datagram to the server. Without require_reply the check passes unless an ICMP error
    (port or host unreachable) comes back within connect_timeout, as keepalived's does; with it,
    an answer of the right length and content must arrive in that time."""
    loop = asyncio.get_running_loop()
    where = f"{cfg.connect_ip}:{cfg.connect_port}"
    payload = cfg.udp_payload if cfg.udp_payload is not None else os.urandom(16)
    sock = _datagram_socket(cfg, socket.SOCK_DGRAM)
    try:
        # datagram connects complete at once (and uvloop's sock_connect wants stream sockets)
        sock.connect((str(cfg.connect_ip), cfg.connect_port))
        await loop.sock_sendall(sock, payload)
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), cfg.connect_timeout)
        except TimeoutError:
            if cfg.require_reply:
                return CheckResult(False, f"UDP_CHECK {where}: no reply")
            return CheckResult(True, f"UDP_CHECK {where}: no ICMP error")
        except OSError as exc:
            return CheckResult(False, f"UDP_CHECK {where}: {exc.strerror or exc}")
        if cfg.require_reply:
            why = reply_matches(cfg, data)
            if why is not None:
                return CheckResult(False, f"UDP_CHECK {where}: {why}")
        return CheckResult(True, f"UDP_CHECK {where}: replied")
    finally:
        sock.close()


def _icmp_socket(cfg: CheckerConfig, raw: bool | None) -> tuple[socket.socket, bool]:
    """An unprivileged ping socket where ping_group_range allows one, else a raw ICMP socket
    (root); the flag says raw (IPv4 raw sockets hand over the IP header too)."""
    proto = socket.IPPROTO_ICMPV6 if cfg.connect_ip.version == 6 else socket.IPPROTO_ICMP
    if raw:
        return _datagram_socket(cfg, socket.SOCK_RAW, proto), True
    try:
        return _datagram_socket(cfg, socket.SOCK_DGRAM, proto), False
    except PermissionError:
        return _datagram_socket(cfg, socket.SOCK_RAW, proto), True


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


async def ping_check(cfg: CheckerConfig, raw: bool | None = None) -> CheckResult:
    """An ICMP (or ICMPv6) echo request; an echo reply with our identifier and sequence within
    connect_timeout passes. Other ICMP traffic a raw socket sees is skipped. ``raw`` forces
    the raw socket (None: a ping socket when allowed)."""
    loop = asyncio.get_running_loop()
    v6 = cfg.connect_ip.version == 6
    request, reply = (128, 129) if v6 else (8, 0)
    ident, seq = random.randrange(1, 65536), random.randrange(65536)
    body = b"pylvs PING_CHECK" + os.urandom(8)
    sock, raw = _icmp_socket(cfg, raw)
    try:
        packet = struct.pack("!BBHHH", request, 0, 0, ident, seq) + body
        if not v6:  # the kernel fills in ICMPv6 checksums itself
            packet = packet[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
        sock.connect((str(cfg.connect_ip), 0))
        await loop.sock_sendall(sock, packet)
        if not raw:
            ident = sock.getsockname()[1]  # ping sockets choose the identifier themselves
        deadline = time.monotonic() + cfg.connect_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return CheckResult(False, f"PING_CHECK {cfg.connect_ip}: no echo reply")
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
            except TimeoutError:
                continue
            if raw and not v6:
                data = data[(data[0] & 0x0F) * 4:] if data else data
            if len(data) < 8:
                continue
            typ, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", data)
            if typ == reply and rid == ident and rseq == seq and data[8:] == body:
                return CheckResult(True, f"PING_CHECK {cfg.connect_ip}: echo reply")
    except OSError as exc:
        return CheckResult(False, f"PING_CHECK {cfg.connect_ip}: {exc.strerror or exc}")
    finally:
        sock.close()


_file_values: dict[str, int] = {}  # the last good value of each FILE_CHECK file


async def file_check(cfg: CheckerConfig) -> CheckResult:
    """FILE_CHECK: the number in the track_file, as keepalived reads it (missing = 0, a value
    out of 32 bits keeps the last one). Weight 0: any non-zero value fails the check (with
    reverse, 0 does); otherwise value x weight is the real server's weight change (reported in
    ``weight``, used with ``dynamic``), and a result at or below IPVS_WEIGHT_FAULT fails it."""
    value = read_value(cfg.file_path)
    if value is None:
        value = _file_values.get(cfg.file_path, 0)
    _file_values[cfg.file_path] = value
    offset = weighted(value, cfg.file_weight, cfg.file_reverse)
    if cfg.file_weight == 0:
        return CheckResult(offset is not None, f"FILE_CHECK {cfg.file_path}: {value}", 0)
    if offset is None or offset <= -(1 << 31):
        return CheckResult(False, f"FILE_CHECK {cfg.file_path}: {value} (fault)")
    return CheckResult(True, f"FILE_CHECK {cfg.file_path}: {value}, weight {offset:+d}", offset)


async def run_check(cfg: CheckerConfig) -> CheckResult:
    """One attempt of any checker kind; never raises for what a real server does."""
    probe = {
        "TCP_CHECK": tcp_check, "HTTP_GET": http_check, "SSL_GET": http_check,
        "MISC_CHECK": misc_check, "DNS_CHECK": dns_check, "SMTP_CHECK": smtp_check,
        "UDP_CHECK": udp_check, "PING_CHECK": ping_check, "FILE_CHECK": file_check,
    }[cfg.kind]
    try:
        return await probe(cfg)
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return CheckResult(False, f"{cfg.kind}: {exc.__class__.__name__}: {exc}")
