"""The load-balancing methods of ``upstream {}`` (least_conn, ip_hash, hash [consistent],
random [two]): the balancer's picks on their own, and the same nginx.conf under real nginx 1.22
and under pylvs http sending each request to the same server.

The clients of the interop tests connect from addresses of their own in 127.0.0.0/8 (bound
before connecting), so ip_hash and ``hash $remote_addr`` see many clients; each backend answers
its name; requests go one after another, so both proxies see the same history of failures.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pylvs.l7.balancer import (
    ConsistentHash,
    Hash,
    IpHash,
    LeastConn,
    Random,
    RoundRobin,
    balancer_for,
)
from pylvs.l7.config import load
from pylvs.l7.model import UpstreamServer
from tests.l7.conftest import Stack, free_port, interop_head
from tests.l7.test_nginx_interop import _real_nginx, nginx_bin, t_both

__all__ = ["nginx_bin"]  # the fixture, used by name


def _srv(port: int, **kw: Any) -> UpstreamServer:
    return UpstreamServer("127.0.0.1", port, name=f"127.0.0.1:{port}", **kw)


# -- the balancer alone ---------------------------------------------------------------------------


def test_least_conn_prefers_fewest_in_progress_relative_to_weight() -> None:
    lc = LeastConn([_srv(1), _srv(2, weight=2), _srv(3)])
    a, b, c = lc.peers
    # none busy: a tie of all three, smooth weighted round robin from the first: b (weight 2)
    first = lc.get(set(), 0.0)
    assert first is b and b.conns == 1
    # b has 1 of weight 2 (0.5), a and c none: a and c tie, round robin between them
    picks = [lc.get(set(), 0.0) for _ in range(2)]
    assert sorted(p.address for p in picks if p) == ["127.0.0.1:1", "127.0.0.1:3"]
    # now a=1, b=1/2, c=1: b is the least loaded relative to its weight
    assert lc.get(set(), 0.0) is b
    lc.free(b)
    lc.free(b)
    assert b.conns == 0
    assert lc.get({b.index}, 0.0) in (a, c)  # tried peers are skipped


def test_least_conn_failures_and_backup() -> None:
    lc = LeastConn([_srv(1), _srv(2), _srv(3, backup=True)])
    a, b, c = lc.peers
    lc.failed(a, 0.0)
    lc.failed(b, 0.0)
    assert lc.get(set(), 1.0) is c  # both primaries failed within fail_timeout: the backup
    assert lc.get({c.index}, 1.0) is None  # nothing left: fails forgotten for the next request
    assert a.fails == 0 and b.fails == 0


def test_ip_hash_uses_the_slash_24_and_walks_weights() -> None:
    servers = [_srv(1, weight=2), _srv(2), _srv(3, weight=3), _srv(4)]
    ih = IpHash(servers)

    def pick(addr: bytes, tried: frozenset[int] = frozenset()) -> int:
        p = ih.get(tried, 0.0, addr)
        assert p is not None
        ih.free(p)
        return p.index

    # nginx's rule worked by hand for 10.20.30.x: 89 -> (89*113+10) % 6271 = 3796 ...
    h = 89
    for byte in (10, 20, 30):
        h = (h * 113 + byte) % 6271
    w = h % 7
    expect = 0 if w < 2 else 1 if w < 3 else 2 if w < 6 else 3
    assert pick(bytes([10, 20, 30])) == expect
    # a tried pick goes on with the hash of the hash: another peer, always the same one
    again = pick(bytes([10, 20, 30]), frozenset({expect}))
    assert again != expect and again == pick(bytes([10, 20, 30]), frozenset({expect}))
    spread = Counter(pick(bytes([10, n, 7])) for n in range(256))
    assert len(spread) == 4


def test_ip_hash_skips_down_and_falls_back_to_round_robin() -> None:
    ih = IpHash([_srv(1, down=True), _srv(2, down=True), _srv(3)])
    p = ih.get(set(), 0.0, b"\x01\x02\x03")
    assert p is not None and p.address == "127.0.0.1:3"
    ih2 = IpHash([_srv(1, down=True), _srv(2, down=True)])
    assert ih2.get(set(), 0.0, b"\x01\x02\x03") is None


def test_hash_rehash_rule_and_empty_key() -> None:
    import zlib

    hs = Hash([_srv(1), _srv(2), _srv(3)])
    key = b"/some/uri"
    h = (zlib.crc32(key) >> 16) & 0x7FFF
    p = hs.get(set(), 0.0, key)
    assert p is not None and p.index == h % 3
    # the second round hashes "1" + key and adds it to the first
    h2 = h + ((zlib.crc32(b"1" + key) >> 16) & 0x7FFF)
    second = [h2 % 3]
    rehash = 2
    while second[-1] == p.index:
        h2 += (zlib.crc32(str(rehash).encode() + key) >> 16) & 0x7FFF
        rehash += 1
        second.append(h2 % 3)
    q = hs.get({p.index}, 0.0, key)
    assert q is not None and q.index == second[-1]
    # an empty key: round robin (1, 2, 3, 1...)
    assert [hs.get(set(), 0.0, b"").index for _ in range(4)] == [0, 1, 2, 0]  # type: ignore[union-attr]


def test_consistent_hash_moves_only_the_keys_of_a_removed_server() -> None:
    three = ConsistentHash([_srv(1), _srv(2), _srv(3)])
    two = ConsistentHash([_srv(1), _srv(3)])
    assert len(three.hashes) <= 480 and len(two.hashes) <= 320
    moved = 0
    for i in range(500):
        key = f"/k/{i}".encode()
        a = three.get(set(), 0.0, key)
        b = two.get(set(), 0.0, key)
        assert a is not None and b is not None
        if a.address != "127.0.0.1:2":
            assert a.address == b.address
        else:
            moved += 1
    assert 80 < moved < 260  # about a third of the keys were on the removed server
    # weight 2 owns about twice the ring
    w = ConsistentHash([_srv(1, weight=2), _srv(2)])
    c = Counter(w.get(set(), 0.0, f"/w/{i}".encode()).address for i in range(3000))  # type: ignore[union-attr]
    assert 1.5 < c["127.0.0.1:1"] / c["127.0.0.1:2"] < 2.7


def test_consistent_hash_points_hash_host_nul_port_as_written() -> None:
    """nginx splits a server line's address at the last colon followed only by digits (none
    for ``unix:``) and hashes HOST NUL PORT, then each point's 4 little-endian bytes after it."""
    import zlib

    from pylvs.l7.balancer import _chash_base

    assert _chash_base("127.0.0.1:8080") == b"127.0.0.1\x008080"
    assert _chash_base("[::1]:80") == b"[::1]\x0080"
    assert _chash_base("backend.example") == b"backend.example\x00"
    assert _chash_base("unix:/run/app.sock") == b"/run/app.sock\x00"
    assert _chash_base("host:") == b"host\x00"
    ring = ConsistentHash([_srv(8080)])
    first = zlib.crc32(b"127.0.0.1\x008080" + bytes(4))
    second = zlib.crc32(b"127.0.0.1\x008080" + first.to_bytes(4, "little"))
    assert first in ring.hashes and second in ring.hashes and len(ring.hashes) == 160


def test_random_is_weighted_and_two_takes_the_less_loaded() -> None:
    import random

    r = Random([_srv(1, weight=3), _srv(2)], rng=random.Random(7))
    c = Counter(r.get(set(), 0.0).address for _ in range(4000))  # type: ignore[union-attr]
    assert 2.6 < c["127.0.0.1:1"] / c["127.0.0.1:2"] < 3.4
    r2 = Random([_srv(1), _srv(2), _srv(3)], two=True, rng=random.Random(7))
    a, b, c3 = r2.peers
    a.conns, b.conns = 5, 5  # c idle: any pair holding c takes c; a pair of a and b ties
    got = Counter()
    for _ in range(300):
        p = r2.get(set(), 0.0)
        assert p is not None
        got[p.address] += 1
        r2.free(p)
    assert got["127.0.0.1:3"] > 150 and got["127.0.0.1:1"] > 0 and got["127.0.0.1:2"] > 0
    # a tried or down peer is never drawn
    assert all(r2.get({0, 1}, 0.0) is c3 for _ in range(20))


def test_balancer_for_reads_the_method(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n"
                    " upstream a { least_conn; server 127.0.0.1:1; server 127.0.0.1:2 backup; }\n"
                    " upstream b { server 127.0.0.1:1; ip_hash; }\n"
                    " upstream c { hash $remote_addr$uri; server 127.0.0.1:1; }\n"
                    " upstream d { hash $uri consistent; server 127.0.0.1:1; }\n"
                    " upstream e { random two least_conn; server 127.0.0.1:1; }\n"
                    " upstream f { keepalive 4; least_conn; server 127.0.0.1:1; }\n"
                    " upstream g { least_conn; keepalive 4; server 127.0.0.1:1; }\n"
                    " server { listen 127.0.0.1:8080; }\n}\n")
    ups = load(str(conf)).upstreams
    kinds = {k: type(balancer_for(v)) for k, v in ups.items()}
    assert kinds == {"a": LeastConn, "b": IpHash, "c": Hash, "d": ConsistentHash,
                     "e": Random, "f": LeastConn, "g": LeastConn}
    assert ups["c"].hash_key == (("remote_addr",), ("uri",))
    assert ups["e"].two
    # a method after keepalive replaces nginx's keepalive wrapper: no connection cache
    assert ups["f"].keepalive == 0 and ups["g"].keepalive == 4
    assert type(balancer_for(ups["b"])) is not RoundRobin


# -- `-t`: the same words as nginx for misuse --------------------------------------------------

_UP = ("events {{}}\nhttp {{\n upstream u {{\n{body}\n }}\n"
       " server {{ listen 127.0.0.1:8080; location / {{ proxy_pass http://u; }} }}\n}}\n")
MISUSE = {
    "ip_hash_backup": "  ip_hash;\n  server 127.0.0.1:1;\n  server 127.0.0.1:2 backup;",
    "hash_backup": "  hash $uri;\n  server 127.0.0.1:1 backup;\n  server 127.0.0.1:2;",
    "random_backup": "  random two;\n  server 127.0.0.1:1;\n  server 127.0.0.1:2 backup;",
    "hash_no_key": "  hash;\n  server 127.0.0.1:1;",
    "hash_three": "  hash $uri consistent x;\n  server 127.0.0.1:1;",
    "hash_bad_flag": "  hash $uri constant;\n  server 127.0.0.1:1;",
    "hash_unknown_var": "  hash $nope;\n  server 127.0.0.1:1;",
    "ip_hash_arg": "  ip_hash on;\n  server 127.0.0.1:1;",
    "least_conn_arg": "  least_conn 1;\n  server 127.0.0.1:1;",
    "random_three": "  random three;\n  server 127.0.0.1:1;",
    "random_least_time": "  random two least_time;\n  server 127.0.0.1:1;",
    "random_four_args": "  random two least_conn x;\n  server 127.0.0.1:1;",
    "random_least_conn_alone": "  random least_conn;\n  server 127.0.0.1:1;",
    "max_conns_word": "  least_conn;\n  server 127.0.0.1:1 max_conns=x;",
    "max_conns_negative": "  server 127.0.0.1:1 max_conns=-1;",
    "max_conns_empty": "  hash $uri;\n  server 127.0.0.1:1 max_conns=;",
    "ip_hash_outside": "  server 127.0.0.1:1;\n }\n server {\n  ip_hash;",
}
ACCEPTED = {
    "backup_before_ip_hash": "  server 127.0.0.1:1;\n  server 127.0.0.1:2 backup;\n  ip_hash;",
    "least_conn_backup": "  least_conn;\n  server 127.0.0.1:1;\n  server 127.0.0.1:2 backup;",
    "hash_empty_key": '  hash "";\n  server 127.0.0.1:1;',
    "redefined": "  least_conn;\n  ip_hash;\n  hash $uri consistent;\n  server 127.0.0.1:1;",
    "random_two_least_conn": "  random two least_conn;\n  server 127.0.0.1:1 weight=3;",
    "max_conns_zero": "  ip_hash;\n  server 127.0.0.1:1 max_conns=0;",
    "keepalive_then_method": "  keepalive 4;\n  random;\n  server 127.0.0.1:1;",
    "method_then_keepalive": "  random;\n  keepalive 4;\n  server 127.0.0.1:1;",
}


def _t(nginx_bin: str, tmp: Path, text: str) -> tuple[subprocess.CompletedProcess[str],
                                                     subprocess.CompletedProcess[str]]:
    theirs, ours = t_both(tmp, nginx_bin, text)
    return theirs, ours


def _emerg(stderr: str) -> str:
    import re

    line = next(x for x in stderr.splitlines() if "[emerg]" in x)
    return re.sub(r"^.*\[emerg\] (\d+#\d+: )?", "", line)


@pytest.mark.parametrize("name", sorted(MISUSE))
def test_t_refuses_misused_methods_as_nginx(tmp_path: Path, nginx_bin: str, name: str) -> None:
    theirs, ours = _t(nginx_bin, tmp_path, _UP.format(body=MISUSE[name]))
    assert theirs.returncode == 1 and ours.returncode == 1, (theirs.stderr, ours.stderr)
    assert "Traceback" not in ours.stderr
    assert _emerg(ours.stderr) == _emerg(theirs.stderr)


def _warns(stderr: str) -> list[str]:
    import re

    return [re.sub(r"^.*\[warn\] (\d+#\d+: )?", "", x) for x in stderr.splitlines()
            if "[warn]" in x]


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_t_accepts_methods_as_nginx(tmp_path: Path, nginx_bin: str, name: str) -> None:
    """Accepted, with nginx's warnings: a method after another one or after ``keepalive``
    replaces it ("load balancing method redefined")."""
    theirs, ours = _t(nginx_bin, tmp_path, _UP.format(body=ACCEPTED[name]))
    assert theirs.returncode == 0 and ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert _warns(ours.stderr) == _warns(theirs.stderr)
    if name == "redefined":
        assert len(_warns(ours.stderr)) == 2


# -- interop: the same server for the same client or key ------------------------------------------

HASH_CONF = interop_head("{tmp}/nginx-hash.pid", "{tmp}/error-hash.log") + """\
    upstream iph {{ ip_hash; server 127.0.0.1:{a} weight=2; server 127.0.0.1:{b};
                   server 127.0.0.1:{c} weight=3; server 127.0.0.1:{d}; }}
    upstream iphfail {{ ip_hash; server 127.0.0.1:{a}; server 127.0.0.1:{b} down;
                       server 127.0.0.1:{bad}; server 127.0.0.1:{c}; }}
    upstream hsh {{ hash $remote_addr; server 127.0.0.1:{a}; server 127.0.0.1:{b} weight=2;
                   server 127.0.0.1:{c}; server 127.0.0.1:{d}; }}
    upstream hshfail {{ hash $request_uri; server 127.0.0.1:{a}; server 127.0.0.1:{bad};
                       server 127.0.0.1:{b} down; server 127.0.0.1:{c}; }}
    upstream chash {{ hash $request_uri consistent; server 127.0.0.1:{a} weight=2;
                     server 127.0.0.1:{b}; server 127.0.0.1:{c}; server 127.0.0.1:{d}; }}
    upstream chfail {{ hash $remote_addr consistent; server 127.0.0.1:{a};
                      server 127.0.0.1:{bad}; server 127.0.0.1:{b} down; server 127.0.0.1:{c}; }}
    server {{
        listen 127.0.0.1:{port};
        location /iph/ {{ proxy_pass http://iph; }}
        location /iphfail/ {{ proxy_pass http://iphfail; }}
        location /hsh/ {{ proxy_pass http://hsh; }}
        location /hshfail/ {{ proxy_pass http://hshfail; }}
        location /chash/ {{ proxy_pass http://chash; }}
        location /chfail/ {{ proxy_pass http://chfail; }}
    }}
}}
"""

# clients: many /24s (ip_hash hashes only those three bytes) and a few in one /24
SOURCES = [f"127.{n}.{(n * 7) % 256}.{1 + n % 200}" for n in range(0, 250, 9)] + \
    [f"127.0.0.{k}" for k in (1, 2, 3, 77, 200)]


def _get_from(port: int, source: str, path: str, extra: str = "") -> str:
    """GET ``path`` over a connection from ``source`` (``extra``: header lines, each ending
    in CRLF): status and the body's last word (the backend's name)."""
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    words = body.decode().split()
    return head.split(b"\r\n")[0].decode().split(" ", 2)[1] + " " + (words[-1] if words else "")


def _hash_requests() -> list[tuple[str, str]]:
    reqs: list[tuple[str, str]] = []
    for src in SOURCES:
        for loc in ("iph", "iphfail", "hsh", "chfail"):
            reqs.append((src, f"/{loc}/x"))
    for i in range(40):
        reqs.append(("127.0.0.1", f"/hshfail/item{i}?v={i * 13}"))
        reqs.append(("127.0.0.1", f"/chash/u/{i}/{i * i}"))
    return reqs


def _apps(stack: Stack) -> dict[str, int]:
    return {n: stack.app(n) for n in "abcd"}


def test_hashed_methods_pick_the_servers_nginx_picks(stack: Stack, nginx_bin: str) -> None:
    apps = _apps(stack)
    bad = free_port()  # nothing listens: connect() is refused, the peer fails
    reqs = _hash_requests()
    ours_port = stack.proxy(HASH_CONF, bad=bad, **apps)
    ours = [_get_from(ours_port, s, p) for s, p in reqs]
    with _real_nginx(stack, nginx_bin, "hash", HASH_CONF, bad=bad, **apps) as port:
        theirs = [_get_from(port, s, p) for s, p in reqs]
    wrong = [(r, a, b) for r, a, b in zip(reqs, ours, theirs, strict=True) if a != b]
    assert not wrong, "\n".join(f"{r}: pylvs {a!r}, nginx {b!r}" for r, a, b in wrong)
    # the comparison means something: every method spread its clients or keys
    for loc in ("iph", "hsh", "chash", "hshfail", "chfail", "iphfail"):
        names = {a for (_, p), a in zip(reqs, ours, strict=True) if p.startswith(f"/{loc}/")}
        assert len(names) >= 2, (loc, names)
    # ip_hash: one /24, one server
    one24 = {a for (s, p), a in zip(reqs, ours, strict=True)
             if p == "/iph/x" and s.startswith("127.0.0.")}
    assert len(one24) == 1


# -- least_conn: requests go to the servers with the fewest requests in progress ----------------

LC_CONF = interop_head("{tmp}/nginx-lc.pid", "{tmp}/error-lc.log") + """\
    upstream lc {{ least_conn; server 127.0.0.1:{a}; server 127.0.0.1:{b};
                  server 127.0.0.1:{c}; }}
    upstream lcw {{ least_conn; server 127.0.0.1:{a} weight=3; server 127.0.0.1:{b}; }}
    server {{
        listen 127.0.0.1:{port};
        location /lc/ {{ proxy_pass http://lc; }}
        location /lcw/ {{ proxy_pass http://lcw; }}
    }}
}}
"""


def _slow_app(stack: Stack, name: str) -> int:
    """A backend answering its name; a request for a path holding "/slow" waits 1.5 s."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"/slow" in head.split(b"\r\n", 1)[0]:
                await asyncio.sleep(1.5)
            body = name.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()
        finally:
            writer.close()

    return stack.upstream(handle)


def _least_conn_run(port: int) -> list[str]:
    """Slow requests held open while quick ones follow: the names that answered each."""
    out: list[str] = []
    slow: list[str] = []

    def one_slow(path: str) -> None:
        slow.append(_get_from(port, "127.0.0.1", path))

    held = []
    for path in ("/lc/slow1", "/lcw/slow1", "/lcw/slow2"):
        t = threading.Thread(target=one_slow, args=(path,))
        t.start()
        held.append(t)
        time.sleep(0.2)  # in this order: the balancer sees the earlier ones in progress
    for i in range(4):
        out.append(_get_from(port, "127.0.0.1", f"/lc/quick{i}"))
    for i in range(4):
        out.append(_get_from(port, "127.0.0.1", f"/lcw/quick{i}"))
    for t in held:
        t.join(10)
    # after the slow ones: all idle again, round robin among the tied
    for i in range(3):
        out.append(_get_from(port, "127.0.0.1", f"/lc/after{i}"))
    return out + sorted(slow)


def test_least_conn_sends_to_the_idle_servers_as_nginx(stack: Stack, nginx_bin: str) -> None:
    apps = {n: _slow_app(stack, n) for n in "abc"}
    ours = _least_conn_run(stack.proxy(LC_CONF, **apps))
    with _real_nginx(stack, nginx_bin, "lc", LC_CONF, **apps) as port:
        theirs = _least_conn_run(port)
    assert ours == theirs
    # lc: the slow request holds "a" (first of three tied): the quick ones alternate b, c
    assert ours[:4] == ["200 b", "200 c", "200 b", "200 c"]
    # lcw: the first slow one to a (weight 3), the second to idle b; then a's 1/3 < b's 1
    assert ours[4:8] == ["200 a"] * 4


# -- random: legal picks in proportion to weight ---------------------------------------------------

RANDOM_CONF = """
events {{ }}
http {{
    access_log off;
    upstream rnd {{ random; server 127.0.0.1:{a} weight=3; server 127.0.0.1:{b};
                   server 127.0.0.1:{c} down; }}
    upstream rnd2 {{ random two least_conn; server 127.0.0.1:{a}; server 127.0.0.1:{b};
                    server 127.0.0.1:{bad}; }}
    server {{
        listen 127.0.0.1:{port};
        location /rnd/ {{ proxy_pass http://rnd; }}
        location /rnd2/ {{ proxy_pass http://rnd2; }}
    }}
}}
"""


def test_random_spreads_by_weight_and_avoids_down_and_failed(stack: Stack) -> None:
    apps = _apps(stack)
    port = stack.proxy(RANDOM_CONF, bad=free_port(), **apps)
    got = Counter(_get_from(port, "127.0.0.1", "/rnd/x") for _ in range(400))
    assert set(got) == {"200 a", "200 b"}  # never c (down)
    assert 2.0 < got["200 a"] / got["200 b"] < 4.5
    two = Counter(_get_from(port, "127.0.0.1", "/rnd2/x") for _ in range(60))
    assert set(two) == {"200 a", "200 b"}  # the refused one is retried elsewhere, then avoided


# -- keepalive and a method: nginx's keepalive wraps the method read before it -------------------

KA_CONF = interop_head("{tmp}/nginx-ka.pid", "{tmp}/error-ka.log") + """\
    upstream before {{ keepalive 2; least_conn; server 127.0.0.1:{one}; }}
    upstream after {{ least_conn; keepalive 2; server 127.0.0.1:{two}; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /before/ {{ proxy_pass http://before; }}
        location /after/ {{ proxy_pass http://after; }}
    }}
}}
"""


def test_keepalive_before_the_method_has_no_effect_as_in_nginx(stack: Stack,
                                                               nginx_bin: str) -> None:
    """nginx's ``keepalive`` wraps the balancing method set before it; a method after it takes
    its place, so the upstream gets a new connection per request, in both."""
    counts = {"one": 0, "two": 0}

    def counting(name: str) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            counts[name] += 1
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        return stack.upstream(handle)

    ups = {n: counting(n) for n in counts}

    def run(port: int) -> dict[str, int]:
        counts.update(one=0, two=0)
        for i in range(5):
            assert _get_from(port, "127.0.0.1", f"/before/{i}") == "200 ok"
            assert _get_from(port, "127.0.0.1", f"/after/{i}") == "200 ok"
        return dict(counts)

    ours = run(stack.proxy(KA_CONF, **ups))
    with _real_nginx(stack, nginx_bin, "ka", KA_CONF, **ups) as port:
        theirs = run(port)
    assert ours == theirs == {"one": 5, "two": 1}


# -- max_conns: a server with that many requests in progress is passed over ---------------------

MC_CONF = interop_head("{tmp}/nginx-mc.pid", "{tmp}/error-mc.log") + """\
    upstream mc {{ server 127.0.0.1:{a} max_conns=1; server 127.0.0.1:{b}; }}
    upstream mc1 {{ server 127.0.0.1:{c} max_conns=1; }}
    upstream mcih {{ ip_hash; server 127.0.0.1:{a} max_conns=1; server 127.0.0.1:{b} max_conns=1;
                    server 127.0.0.1:{c} max_conns=1; }}
    server {{
        listen 127.0.0.1:{port};
        location /mc/ {{ proxy_pass http://mc; }}
        location /mc1/ {{ proxy_pass http://mc1; }}
        location /mcih/ {{ proxy_pass http://mcih; }}
    }}
}}
"""


def _max_conns_run(port: int) -> list[str]:
    out: list[str] = []
    slow: list[str] = []
    held = []
    for path, src in (("/mc/slow", "127.0.0.1"), ("/mc1/slow", "127.0.0.1"),
                      ("/mcih/slow", "127.0.9.1")):
        t = threading.Thread(target=lambda p=path, s=src: slow.append(_get_from(port, s, p)))
        t.start()
        held.append(t)
        time.sleep(0.2)
    out += [_get_from(port, "127.0.0.1", f"/mc/q{i}") for i in range(3)]
    out.append(_get_from(port, "127.0.0.1", "/mc1/q").split()[0])  # 502 while c is full
    # the same /24 as the slow one: its ip_hash server is full, the hash goes on
    out += [_get_from(port, "127.0.9.2", f"/mcih/q{i}") for i in range(2)]
    for t in held:
        t.join(10)
    out.append(_get_from(port, "127.0.0.1", "/mc1/q"))  # free again
    return out + sorted(slow)


def test_max_conns_passes_over_a_full_server_as_nginx(stack: Stack, nginx_bin: str) -> None:
    apps = {n: _slow_app(stack, n) for n in "abc"}
    ours = _max_conns_run(stack.proxy(MC_CONF, **apps))
    with _real_nginx(stack, nginx_bin, "mc", MC_CONF, **apps) as port:
        theirs = _max_conns_run(port)
    assert ours == theirs
    assert ours[:4] == ["200 b", "200 b", "200 b", "502"]  # round robin alone: b, a, b
    assert ours[6] == "200 c"


def test_max_conns_in_the_balancer() -> None:
    rr = RoundRobin([_srv(1, max_conns=1), _srv(2, max_conns=2)])
    a, b = rr.peers
    assert [rr.get(set(), 0.0) for _ in range(4)] == [a, b, b, None]
    rr.free(b)
    assert rr.get(set(), 0.0) is b
    lc = LeastConn([_srv(1, max_conns=1), _srv(2, weight=5)])
    x, y = lc.peers
    assert lc.get(set(), 0.0) is y  # tie broken by weight: y
    assert lc.get(set(), 0.0) is x  # none in progress beats y's 1 of weight 5
    assert all(lc.get(set(), 0.0) is y for _ in range(5))  # x full


# -- backup servers: least_conn's, and those a hashing method only reaches through round robin ---

BACKUP_CONF = interop_head("{tmp}/nginx-bk.pid", "{tmp}/error-bk.log") + """\
    upstream lcb {{ least_conn; server 127.0.0.1:{bad}; server 127.0.0.1:{bad2};
                   server 127.0.0.1:{a} backup; server 127.0.0.1:{b} backup; }}
    upstream ihb {{ server 127.0.0.1:{bad}; server 127.0.0.1:{bad2};
                   server 127.0.0.1:{c} backup; ip_hash; }}
    upstream hb {{ server 127.0.0.1:{bad2}; server 127.0.0.1:{bad};
                  server 127.0.0.1:{d} backup; hash $request_uri consistent; }}
    server {{
        listen 127.0.0.1:{port};
        location /lcb/ {{ proxy_pass http://lcb; }}
        location /ihb/ {{ proxy_pass http://ihb; }}
        location /hb/ {{ proxy_pass http://hb; }}
    }}
}}
"""


def test_backup_servers_answer_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """All primaries refused: least_conn goes to its backups (least connections among them);
    ip_hash and hash, which accept a backup line only before them, reach it through round
    robin once their own walk gives up."""
    apps = _apps(stack)
    bad, bad2 = free_port(), free_port()
    reqs = [(src, f"/{loc}/{i}") for i, src in enumerate(SOURCES[:6])
            for loc in ("lcb", "ihb", "hb")]

    def run(port: int) -> list[str]:
        return [_get_from(port, s, p) for s, p in reqs]

    ours = run(stack.proxy(BACKUP_CONF, bad=bad, bad2=bad2, **apps))
    with _real_nginx(stack, nginx_bin, "bk", BACKUP_CONF, bad=bad, bad2=bad2, **apps) as port:
        theirs = run(port)
    assert ours == theirs
    assert {a for (_, p), a in zip(reqs, ours, strict=True) if p.startswith("/lcb/")} == \
        {"200 a", "200 b"}
    assert {a for (_, p), a in zip(reqs, ours, strict=True) if p.startswith("/ihb/")} == {"200 c"}


# -- realip: the address it sets is the one ip_hash and $remote_addr hash -------------------------

REALIP_CONF = interop_head("{tmp}/nginx-ri.pid", "{tmp}/error-ri.log") + """\
    upstream iph {{ ip_hash; server 127.0.0.1:{a}; server 127.0.0.1:{b} weight=2;
                   server 127.0.0.1:{c}; server 127.0.0.1:{d}; }}
    upstream hsh {{ hash $remote_addr; server 127.0.0.1:{a}; server 127.0.0.1:{b};
                   server 127.0.0.1:{c}; server 127.0.0.1:{d}; }}
    server {{
        listen 127.0.0.1:{port};
        set_real_ip_from 127.0.0.0/8;
        real_ip_header X-Real-IP;
        location /iph/ {{ proxy_pass http://iph; }}
        location /hsh/ {{ proxy_pass http://hsh; }}
    }}
}}
"""


def test_ip_hash_hashes_the_realip_address_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """Behind a trusted proxy the address realip takes from X-Real-IP is the one ip_hash
    hashes (its /24, or all 16 bytes of an IPv6 one) and $remote_addr is."""
    apps = _apps(stack)
    reals = [f"10.{n}.{n * 3 % 256}.9" for n in range(0, 256, 11)] + \
        [f"2001:db8:{n:x}::{n + 1:x}" for n in range(0, 4000, 397)]
    reqs = [(r, loc) for r in reals for loc in ("iph", "hsh")]

    def run(port: int) -> list[str]:
        return [_get_from(port, "127.0.0.1", f"/{loc}/x", f"X-Real-IP: {r}\r\n")
                for r, loc in reqs]

    ours = run(stack.proxy(REALIP_CONF, **apps))
    with _real_nginx(stack, nginx_bin, "ri", REALIP_CONF, **apps) as port:
        theirs = run(port)
    assert ours == theirs
    for loc in ("iph", "hsh"):  # the header decided: not one server for all
        assert len({a for (_, at), a in zip(reqs, ours, strict=True) if at == loc}) >= 3


RANDOM_TWO_CONF = interop_head("{tmp}/nginx-r2.pid", "{tmp}/error-r2.log") + """\
    upstream r2 {{ random two least_conn; server 127.0.0.1:{a}; server 127.0.0.1:{b}; }}
    server {{
        listen 127.0.0.1:{port};
        location /r2/ {{ proxy_pass http://r2; }}
    }}
}}
"""


def test_random_two_avoids_the_busy_server_as_nginx(stack: Stack, nginx_bin: str) -> None:
    """``random two`` with two servers draws both every time: while one holds a slow request
    every other request goes to the other one, in nginx as here (plain random would mix)."""
    apps = {n: _slow_app(stack, n) for n in "ab"}

    def run(port: int) -> tuple[str, list[str]]:
        slow: list[str] = []
        t = threading.Thread(target=lambda: slow.append(_get_from(port, "127.0.0.1", "/r2/slow")))
        t.start()
        time.sleep(0.3)
        quick = [_get_from(port, "127.0.0.1", f"/r2/q{i}") for i in range(8)]
        t.join(10)
        return slow[0], quick

    for slow, quick in (run(stack.proxy(RANDOM_TWO_CONF, **apps)), _nginx_run(
            stack, nginx_bin, RANDOM_TWO_CONF, "r2", apps, run)):
        assert len(set(quick)) == 1 and slow not in quick, (slow, quick)


def _nginx_run(stack: Stack, nginx_bin: str, conf: str, name: str, fmt: dict[str, int],
               run: Any) -> Any:
    """``run(port)`` against real nginx on ``conf``."""
    with _real_nginx(stack, nginx_bin, name, conf, **fmt) as port:
        return run(port)
