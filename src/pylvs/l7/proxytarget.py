"""Which upstream a proxied request goes to, beyond a fixed ``proxy_pass``: the target of a
``proxy_pass`` with variables (an upstream block by name, else a literal address, never a name
to resolve), the pool made for such an address, and the key a hashing balancer hashes.

Why apart from ``proxying``: these are decided once per request before any upstream I/O, from
the configuration and the request alone; ``proxying`` drives the exchange itself.

Not for: choosing among a pool's servers (``balancer``) or talking to them (``upstream``).
"""

from __future__ import annotations

import functools
import ipaddress
import re

from pylvs.l7.config import ProxyPass, UpstreamConfig, UpstreamServer
from pylvs.l7.request import Request
from pylvs.l7.upstream import UpstreamPool
from pylvs.l7.variables import Template, expand
from pylvs.l7.worker import Connection

# Pools made for literal addresses a variable named, kept for reuse; past this many the oldest
# is closed (a variable must not grow the worker without bound).
MAX_ADDRESS_POOLS = 64


async def dynamic_target(client: Connection, req: Request, url_t: Template) -> ProxyPass | None:
    """The request's target as nginx's proxy module finds it: an upstream block named by the
    host (with no port, or the same one), else a literal address; a host name would need a
    ``resolver`` (nginx: 502, "no resolver defined"). None once the error is answered."""
    url = expand(url_t, req.variable)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "http":
        client.app.error("error", f'invalid URL prefix in "{url}"', client, req)
        await client.respond_error(req, 500)
        return None
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    hostport, uri = rest[:cut], rest[cut:] or None
    upstreams = client.app.config.upstreams
    named = upstreams.get(hostport)
    if named is not None and (not named.implicit or ":" in hostport):
        return ProxyPass(hostport, uri, hostport)
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", hostport)
    host = (m.group(1) or m.group(3)) if m else ""
    port = int(m.group(2) or m.group(4) or "80") if m else 0
    try:
        ipaddress.ip_address(host)
    except ValueError:
        client.app.error("error", f"no resolver defined to resolve {host}", client, req)
        await client.respond_error(req, 502)
        return None
    if not 0 < port < 65536:
        client.app.error("error", f'invalid port in upstream "{hostport}"', client, req)
        await client.respond_error(req, 502)
        return None
    key = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ProxyPass(key, uri, hostport)


def balance_key(pool: UpstreamPool, req: Request) -> bytes:
    """What a hashing method hashes for ``req``: ip_hash the client's address (the first
    three bytes of IPv4, all 16 of IPv6, three zero bytes for a unix socket), hash its key
    expanded (bytes as received: the request's strings are latin-1). The address is
    $remote_addr's: nginx's realip module changes the address ip_hash sees too."""
    cfg = pool.config
    if cfg.method == "ip_hash":
        return _ip_key(req.variable("remote_addr"))
    return expand(cfg.hash_key, req.variable).encode("latin-1", "replace")


@functools.lru_cache(maxsize=4096)
def _ip_key(addr: str) -> bytes:
    """ip_hash's bytes of an address (parsed once per address: clients come back)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return b"\0\0\0"
    return ip.packed[:3] if ip.version == 4 else ip.packed


def address_pool(client: Connection, key: str) -> UpstreamPool:
    """The pool of a literal address a variable named (made on first use)."""
    host, _, port = key.rpartition(":")
    cfg = UpstreamConfig(key, (UpstreamServer(host.strip("[]"), int(port)),), implicit=True)
    pool = UpstreamPool(cfg, client.loop)
    pools, configured = client.app.pools, client.app.config.upstreams
    made = [k for k in pools if k not in configured]
    if len(made) >= MAX_ADDRESS_POOLS:  # the oldest goes (its idle connections closed)
        pools.pop(made[0]).close()
    pools[key] = pool
    return pool
