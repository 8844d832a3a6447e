"""DNS_CHECK: a UDP query (``type``, default SOA, for ``name``, default the root); the answer
must carry the query's id, be a response and have RCODE NOERROR. Defaults: port 53, retry 3,
delay_before_retry the delay_loop.
"""

from __future__ import annotations

import asyncio
import random
import struct
from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.checkers import CheckerConfig, Endpoint, Inherit
from pylvs.config.values import Report, arg
from pylvs.health.checkers.base import CheckResult, HealthChecker
from pylvs.health.wording import retries_text

_QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}


@dataclass(frozen=True, slots=True)
class DnsOptions:
    type: str = "SOA"
    name: str = "."


def options(cfg: CheckerConfig) -> DnsOptions:
    return cfg.options if isinstance(cfg.options, DnsOptions) else DnsOptions()


class DnsCheck(HealthChecker):
    keyword = "DNS_CHECK"
    default_port = 53
    default_retry = 3
    default_delay_before_retry = None

    def option(self, st: Statement, opts: dict[str, object], endpoint: Endpoint,
               report: Report) -> bool:
        k = st.keyword
        if k == "type":
            t = arg(st).upper()
            if t not in _QTYPES:
                report.error(st, f"unknown DNS query type '{st.args[0]}'")
            opts["type"] = t
        elif k == "name":
            opts["name"] = arg(st)
        else:
            return False
        return True

    def finish(self, st: Statement, opts: dict[str, object], inh: Inherit) -> object:
        return DnsOptions(**opts)  # type: ignore[arg-type]

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        return await dns_check(cfg)

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str | None:
        return None

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str | None:
        return f"DNS_CHECK ({rs}) {result.reason}{retries_text(retries)}" if result.reason else None


def dns_query(qid: int, name: str, qtype: str) -> bytes:
    labels = b"".join(
        bytes([len(p)]) + p.encode("idna") for p in name.strip(".").split(".") if p
    )
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", _QTYPES[qtype], 1)


async def dns_check(cfg: CheckerConfig) -> CheckResult:
    """A UDP query; the answer must carry our id, be a response, and have RCODE NOERROR."""
    opts = options(cfg)
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
        transport.sendto(dns_query(qid, opts.name, opts.type))
        async with asyncio.timeout(cfg.connect_timeout):
            data = await fut
    except TimeoutError:
        return CheckResult(False, "DNS_CHECK: no answer", reason="read timeout from socket")
    except OSError as exc:
        return CheckResult(False, f"DNS_CHECK: {exc.strerror or exc}",
                           reason=f"failed to read socket; errno {exc.errno} ({exc.strerror})")
    finally:
        transport.close()
    flags = struct.unpack("!H", data[2:4])[0]
    if not flags & 0x8000:
        return CheckResult(False, "DNS_CHECK: answer is not a response", reason="receive query message?")
    rcode = flags & 0xF
    if rcode:
        return CheckResult(False, f"DNS_CHECK: rcode {rcode}",
                           reason=f"read error occurred. (rcode = {rcode})")
    return CheckResult(True, "DNS_CHECK: NOERROR")


KINDS = (DnsCheck(),)
