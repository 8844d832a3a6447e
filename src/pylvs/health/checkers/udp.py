"""UDP_CHECK: one datagram (``payload``, default 16 random bytes) to the server. Without
``require_reply`` it passes unless an ICMP error (port or host unreachable) comes back within
connect_timeout, as keepalived's does; with it, an answer of ``min_reply_length`` to
``max_reply_length`` bytes that starts with the required pattern (X nibbles match anything)
must arrive in that time.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.checkers import CheckerConfig, Endpoint, Inherit
from pylvs.config.values import Invalid, Report, hex_string, integer
from pylvs.health.checkers.base import CheckResult, HealthChecker, datagram_socket
from pylvs.health.wording import retries_text


@dataclass(frozen=True, slots=True)
class UdpOptions:
    payload: bytes | None = None  # None: random bytes
    require_reply: bool = False
    # the pattern an answer must start with, as (value, mask) bytes (mask 0 nibbles: X)
    reply_value: bytes = b""
    reply_mask: bytes = b""
    min_reply_length: int = 0
    max_reply_length: int = 255


def options(cfg: CheckerConfig) -> UdpOptions:
    return cfg.options if isinstance(cfg.options, UdpOptions) else UdpOptions()


class UdpCheck(HealthChecker):
    keyword = "UDP_CHECK"

    def option(self, st: Statement, opts: dict[str, object], endpoint: Endpoint,
               report: Report) -> bool:
        k = st.keyword
        if k == "payload":
            opts["payload"] = hex_string(st, " ".join(st.args), wildcards=False)[0]
        elif k == "require_reply":
            opts["require_reply"] = True
            if st.args:
                opts["reply_value"], opts["reply_mask"] = hex_string(st, " ".join(st.args), wildcards=True)
        elif k in ("min_reply_length", "max_reply_length"):
            opts[k] = integer(st, 0, 65535)
        else:
            return False
        return True

    def finish(self, st: Statement, opts: dict[str, object], inh: Inherit) -> object:
        o = UdpOptions(**opts)  # type: ignore[arg-type]
        if o.min_reply_length > o.max_reply_length:
            raise Invalid(st, "UDP_CHECK: min_reply_length is greater than max_reply_length")
        return o

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        return await udp_check(cfg)

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str:
        return f"UDP connection to {rs} success."

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str:
        return f"UDP_CHECK on service {rs} failed{retries_text(retries)}."


def reply_matches(opts: UdpOptions, data: bytes) -> str | None:
    """Why a UDP_CHECK answer is not the one required (None when it is): its length must lie in
    [min_reply_length, max_reply_length] and it must agree with the require_reply pattern over
    the bytes both have, X nibbles matching anything."""
    if not opts.min_reply_length <= len(data) <= opts.max_reply_length:
        return (f"reply of {len(data)} bytes, not {opts.min_reply_length}-"
                f"{opts.max_reply_length}")
    for got, want, mask in zip(data, opts.reply_value, opts.reply_mask, strict=False):
        if got & mask != want & mask:
            return "reply does not match require_reply"
    return None


async def udp_check(cfg: CheckerConfig) -> CheckResult:
    opts = options(cfg)
    loop = asyncio.get_running_loop()
    where = f"{cfg.connect_ip}:{cfg.connect_port}"
    payload = opts.payload if opts.payload is not None else os.urandom(16)
    sock = datagram_socket(cfg, socket.SOCK_DGRAM)
    try:
        # datagram connects complete at once (and uvloop's sock_connect wants stream sockets)
        sock.connect((str(cfg.connect_ip), cfg.connect_port))
        await loop.sock_sendall(sock, payload)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                data = await loop.sock_recv(sock, 65535)
        except TimeoutError:
            if opts.require_reply:
                return CheckResult(False, f"UDP_CHECK {where}: no reply")
            return CheckResult(True, f"UDP_CHECK {where}: no ICMP error")
        except OSError as exc:
            return CheckResult(False, f"UDP_CHECK {where}: {exc.strerror or exc}")
        if opts.require_reply:
            why = reply_matches(opts, data)
            if why is not None:
                return CheckResult(False, f"UDP_CHECK {where}: {why}")
        return CheckResult(True, f"UDP_CHECK {where}: replied")
    finally:
        sock.close()


KINDS = (UdpCheck(),)
