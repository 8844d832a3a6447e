"""Timeouts and limits of the proxy data plane, with HAProxy's meanings.

What this is for: keeping one hung or slow real server, or idle clients, from holding relays
forever. keepalived.conf and ipvsadm have no words for these (the kernel's IPVS never holds a
connection open itself), so they are the proxy's own settings, in HAProxy's terms, given

- to ``ProxyDataPlane(settings=ProxySettings(...))``;
- from the environment when no settings are given: ``PYLVS_PROXY_TIMEOUTS="server=30 client=60"``
  for every service and limits, ``PYLVS_PROXY_SERVICE_TIMEOUTS="-t 10.0.0.1:80 server=5;
  -u 10.0.0.1:53 client=10"`` per service;
- per service at run time: ``ProxyDataPlane.set_service_timeouts``, and in the daemon's restore
  file as a comment that ipvsadm ignores, ``# pylvs-proxy: -t 10.0.0.1:80 server=5 client=30``
  (``parse_directive`` / ``format_directive``).

The words (each a number of seconds; 0 turns a timeout off):

- ``connect`` (3): the real server must accept within it; otherwise the next server is tried
  (redispatch, up to ``retries`` more) and the client only sees a delay.
- ``server`` (30): while the relay waits for the server (the client sent bytes or its FIN that
  the server has not answered), no byte moved for this long: the relay is closed on both sides.
  This is what frees relays held by a hung server.
- ``client`` (60): while the relay waits for the client (nothing sent yet, or the server
  answered last), no byte moved for this long: closed. This frees relays of idle clients.
- ``tunnel`` (0, off): once both sides have spoken, replaces ``client`` for the wait on the
  client (long-lived quiet sessions: WebSocket, SSH, database pools). As in HAProxy it is the
  inactivity allowed in both directions; unlike HAProxy, ``server`` still applies while the
  server owes an answer, so a hung server is found however long the tunnel timeout is.

Limits (for the whole data plane):

- ``maxconn`` (100000, and never more than the open-files limit allows): open TCP relays. At the
  limit a listener stops accepting: new clients wait in the kernel's accept queue (``queue``
  seconds at most, 1 by default) and are taken as soon as a relay ends; those still waiting after
  ``queue`` are refused with a reset and counted (``refused_limit``).
- a real server never holds more than its share of ``maxconn`` (its weight over its service's
  total): a connection the scheduler gives to a server at its share goes to another one
  (counted ``share_redispatched``), so a server that accepts and never answers cannot take the
  relays the others need.
- ``retries`` (1): further servers tried after a failed connect.

Timing is checked once a second, with the housekeeping that hands counts to the core; "moved"
means bytes read from either side (the kernel relay's bytes included). When both sides moved
within the same second the server is taken as having answered.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field, fields, replace

from pylvs.core.model import Protocol, ServiceKey

__all__ = [
    "DIRECTIVE",
    "ProxySettings",
    "SettingsError",
    "Timeouts",
    "format_directive",
    "parse_directive",
]

# The restore-file comment that carries a service's proxy timeouts.
DIRECTIVE = "# pylvs-proxy:"
_TIMEOUT_WORDS = ("connect", "server", "client", "tunnel")
_LIMIT_WORDS = ("maxconn", "queue", "retries")
# A timeout longer than this is a typo, not a wish (HAProxy caps at 2^31 ms, about 24.8 days).
_MAX_SECONDS = 24 * 86400.0


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """One service's timeouts in seconds (0: off, except ``connect``, which is always on)."""

    connect: float = 3.0
    server: float = 30.0
    client: float = 60.0
    tunnel: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or v != v or v < 0 or v > _MAX_SECONDS:
                raise SettingsError(f"timeout {f.name}: {v!r} is not 0-{_MAX_SECONDS:.0f} seconds")
        if self.connect <= 0:
            raise SettingsError("timeout connect: must be more than 0 seconds")

    def words(self) -> str:
        """``connect=3 server=30 client=60 tunnel=0``: what ``parse`` reads back."""
        return " ".join(f"{f.name}={_num(getattr(self, f.name))}" for f in fields(self))


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Everything the proxy data plane takes: default timeouts, per-service ones and limits."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    services: dict[ServiceKey, Timeouts] = field(default_factory=dict)
    maxconn: int = 100_000
    queue: float = 1.0
    retries: int = 1

    def __post_init__(self) -> None:
        if self.maxconn < 1:
            raise SettingsError(f"maxconn: {self.maxconn} is not at least 1")
        if not 0 <= self.queue <= 60:
            raise SettingsError(f"queue: {self.queue} is not 0-60 seconds")
        if not 0 <= self.retries <= 16:
            raise SettingsError(f"retries: {self.retries} is not 0-16")

    def for_service(self, key: ServiceKey) -> Timeouts:
        return self.services.get(key, self.timeouts)

    @classmethod
    def parse(cls, text: str, base: ProxySettings | None = None) -> ProxySettings:
        """``"server=30 client=60 maxconn=5000"``: words change ``base`` (or the defaults)."""
        base = base or cls()
        tvals: dict[str, float] = {}
        lvals: dict[str, float] = {}
        for word, value in _pairs(text, _TIMEOUT_WORDS + _LIMIT_WORDS):
            (tvals if word in _TIMEOUT_WORDS else lvals)[word] = value
        for word in ("maxconn", "retries"):
            if word in lvals and lvals[word] != int(lvals[word]):
                raise SettingsError(f"{word}: {_num(lvals[word])} is not a whole number")
        return replace(
            base,
            timeouts=replace(base.timeouts, **tvals),
            maxconn=int(lvals.get("maxconn", base.maxconn)),
            queue=lvals.get("queue", base.queue),
            retries=int(lvals.get("retries", base.retries)),
        )

    def with_service(self, key: ServiceKey, text: str) -> ProxySettings:
        """These settings with ``text``'s timeouts for one service (over the defaults)."""
        values = dict(_pairs(text, _TIMEOUT_WORDS))
        return replace(
            self, services={**self.services, key: replace(self.for_service(key), **values)}
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ProxySettings:
        """``PYLVS_PROXY_TIMEOUTS`` and ``PYLVS_PROXY_SERVICE_TIMEOUTS`` over the defaults."""
        env = os.environ if environ is None else environ
        settings = cls.parse(env.get("PYLVS_PROXY_TIMEOUTS", ""))
        for part in env.get("PYLVS_PROXY_SERVICE_TIMEOUTS", "").split(";"):
            if part.strip():
                key, rest = _service(part)
                settings = settings.with_service(key, rest)
        return settings


def parse_directive(line: str) -> tuple[ServiceKey, Timeouts] | None:
    """A restore-file line ``# pylvs-proxy: -t VIP:PORT server=5 ...``: the service and its
    timeouts (over the defaults); None for any other line; ``SettingsError`` when malformed."""
    text = line.strip()
    if not text.startswith(DIRECTIVE):
        return None
    key, rest = _service(text[len(DIRECTIVE):])
    return key, replace(Timeouts(), **dict(_pairs(rest, _TIMEOUT_WORDS)))


def format_directive(key: ServiceKey, timeouts: Timeouts) -> str:
    """The restore-file line for one service's timeouts (``parse_directive`` reads it back)."""
    flag = "-u" if key.protocol == Protocol.UDP else "-t"
    host = f"[{key.addr}]" if key.af == 10 else str(key.addr)
    return f"{DIRECTIVE} {flag} {host}:{key.port} {timeouts.words()}"


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)


def _pairs(text: str, allowed: tuple[str, ...]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for word in text.split():
        name, eq, value = word.partition("=")
        if name not in allowed or not eq:
            raise SettingsError(f"{word!r}: expected one of {', '.join(allowed)} as NAME=SECONDS")
        try:
            v = float(value.removesuffix("s"))
            if not math.isfinite(v):
                raise ValueError
        except ValueError:
            raise SettingsError(f"{word!r}: {value!r} is not a number") from None
        out.append((name, v))
    return out


def _service(text: str) -> tuple[ServiceKey, str]:
    """``-t VIP:PORT rest`` (``-u`` for UDP; IPv6 as ``[addr]:port``): the key and the rest."""
    try:
        parts = shlex.split(text)
    except ValueError as e:
        raise SettingsError(f"{text.strip()!r}: {e}") from None
    if len(parts) < 2 or parts[0] not in ("-t", "-u"):
        raise SettingsError(f"{text.strip()!r}: expected -t|-u VIP:PORT NAME=SECONDS ...")
    proto = Protocol.TCP if parts[0] == "-t" else Protocol.UDP
    host, _, port = parts[1].rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        p = int(port)
        if not 1 <= p <= 65535:
            raise ValueError
        key = ServiceKey.inet(proto, host, p)
    except ValueError:
        raise SettingsError(f"{parts[1]!r}: not an address:port (1-65535)") from None
    return key, " ".join(parts[2:])
