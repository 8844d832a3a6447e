"""nginx's location order, URI normalisation and smooth weighted round robin, without I/O."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylvs.l7.balancer import RoundRobin
from pylvs.l7.config import UpstreamServer, load
from pylvs.l7.location import BadURI, LocationMatcher, normalize


def _matcher(tmp_path: Path, locations: str) -> LocationMatcher:
    p = tmp_path / "n.conf"
    p.write_text("events {}\nhttp { server { listen 127.0.0.1:1; LOCS } }\n".replace("LOCS", locations))
    srv = load(str(p)).servers[0]
    return LocationMatcher(srv.locations, srv.fallback)


def _which(m: LocationMatcher, uri: str) -> str:
    loc = m.match(uri)
    return f"{loc.modifier}{loc.pattern}"


def test_location_order_is_nginx_order(tmp_path: Path) -> None:
    m = _matcher(tmp_path, """
        location = / { }
        location / { }
        location /documents/ { }
        location ^~ /images/ { }
        location ~* \\.(gif|jpg|jpeg)$ { }
        location ~ \\.jsp$ { }
        location ~ /documents/.*\\.jsp$ { }
    """)
    assert _which(m, "/") == "=/"
    assert _which(m, "/index.html") == "/"
    assert _which(m, "/documents/document.html") == "/documents/"
    assert _which(m, "/images/1.gif") == "^~/images/"  # ^~ stops regex search
    assert _which(m, "/documents/1.jpg") == "~*\\.(gif|jpg|jpeg)$"  # regex beats prefix
    assert _which(m, "/documents/1.JPG") == "~*\\.(gif|jpg|jpeg)$"  # ~* ignores case
    assert _which(m, "/a.JSP") == "/"  # ~ does not
    assert _which(m, "/documents/x.jsp") == "~\\.jsp$"  # first regex in order wins


def test_no_matching_location_uses_the_server(tmp_path: Path) -> None:
    m = _matcher(tmp_path, "location /a/ { }")
    assert m.match("/b").pattern == ""


def test_normalize_as_nginx_uri() -> None:
    assert normalize("/a//b/./c/../d") == "/a/b/d"
    assert normalize("/x%2Ejsp") == "/x.jsp"
    assert normalize("/a/b/..") == "/a/"
    assert normalize("/") == "/"
    for bad in ("/..", "/a/../../b", "a", "/%00", "/%ff"):
        with pytest.raises(BadURI):
            normalize(bad)


@given(st.text(alphabet="/.%a2F0e", max_size=30))
def test_normalize_never_climbs_above_root(path: str) -> None:
    try:
        out = normalize("/" + path)
    except BadURI:
        return
    assert out.startswith("/") and "/../" not in out + "/" and "//" not in out


def _rr(*servers: UpstreamServer) -> RoundRobin:
    return RoundRobin(servers)


def _names(rr: RoundRobin, n: int, now: float = 0.0) -> str:
    out = ""
    for _ in range(n):
        p = rr.get(set(), now)
        out += "-" if p is None else p.server.host
    return out


def test_smooth_weighted_round_robin_sequences() -> None:
    assert _names(_rr(UpstreamServer("a", 1, weight=2), UpstreamServer("b", 1, weight=1)), 6) == "abaaba"
    # nginx's own example: weights 5, 1, 1 give a a b a c a a, not a a a a a b c
    rr = _rr(UpstreamServer("a", 1, weight=5), UpstreamServer("b", 1), UpstreamServer("c", 1))
    assert _names(rr, 7) == "aabacaa"


def test_failed_peer_is_skipped_for_fail_timeout() -> None:
    rr = _rr(UpstreamServer("a", 1, max_fails=1, fail_timeout=10), UpstreamServer("b", 1))
    a = rr.get(set(), 0.0)
    assert a is not None and a.server.host == "a"
    rr.failed(a, 0.0)
    assert _names(rr, 4, now=5.0) == "bbbb"
    assert "a" in _names(rr, 4, now=10.5)  # after fail_timeout it is tried again


def test_max_fails_counts_failures_within_fail_timeout() -> None:
    rr = _rr(UpstreamServer("a", 1, max_fails=3, fail_timeout=10), UpstreamServer("b", 1, max_fails=3))
    a = rr.peers[0]
    rr.failed(a, 1.0)
    rr.failed(a, 1.0)
    assert "a" in _names(rr, 4, now=2.0)
    rr.failed(a, 2.0)
    assert _names(rr, 4, now=3.0) == "bbbb"


def test_backup_serves_only_when_primaries_are_down() -> None:
    rr = _rr(UpstreamServer("a", 1), UpstreamServer("z", 1, backup=True))
    assert _names(rr, 3) == "aaa"
    rr.failed(rr.peers[0], 0.0)
    assert _names(rr, 2, now=1.0) == "zz"


def test_all_failed_gives_none_then_recovers() -> None:
    rr = _rr(UpstreamServer("a", 1), UpstreamServer("b", 1))
    for p in rr.peers:
        rr.failed(p, 0.0)
    assert rr.get(set(), 1.0) is None  # 502: no live upstreams
    assert rr.get(set(), 1.0) is not None  # failures forgotten for quick recovery


def test_tried_peers_are_not_picked_again() -> None:
    rr = _rr(UpstreamServer("a", 1), UpstreamServer("b", 1), UpstreamServer("c", 1))
    tried: set[int] = set()
    seen = []
    while (p := rr.get(tried, 0.0)) is not None:
        tried.add(p.index)
        seen.append(p.server.host)
    assert sorted(seen) == ["a", "b", "c"]


@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6))
def test_weights_are_honoured_exactly_over_one_cycle(weights: list[int]) -> None:
    rr = _rr(*(UpstreamServer(str(i), 1, weight=w) for i, w in enumerate(weights)))
    picks = [rr.get(set(), 0.0) for _ in range(sum(weights))]
    counts = [sum(1 for p in picks if p is not None and p.index == i) for i in range(len(weights))]
    assert counts == weights
