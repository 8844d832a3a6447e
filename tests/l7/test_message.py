"""The proxy's header and framing rules, as plain function calls (no sockets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pylvs.l7.message import (
    client_response_headers,
    connection_tokens,
    response_framing,
    single_range,
    upstream_request_head,
)


def test_upstream_head_drops_hop_by_hop_and_replaced_headers() -> None:
    head = upstream_request_head(
        b"GET /a HTTP/1.1\r\n", [b"Host: app\r\n", b"X-Real-IP: 1.2.3.4\r\n"],
        [(b"Host", b"front"), (b"Connection", b"keep-alive, X-Secret"), (b"X-Secret", b"s"),
         (b"Keep-Alive", b"300"), (b"TE", b"trailers"), (b"Expect", b"100-continue"),
         (b"Content-Length", b"5"), (b"Accept", b"*/*"), (b"x-real-ip", b"spoofed")],
        frozenset({b"host", b"x-real-ip"}), b"keep-alive, X-Secret", 5, False)
    assert head == (b"GET /a HTTP/1.1\r\nHost: app\r\nX-Real-IP: 1.2.3.4\r\nAccept: */*\r\n"
                    b"Content-Length: 5\r\n\r\n")


def test_upstream_head_frames_a_chunked_body_itself() -> None:
    head = upstream_request_head(b"POST / HTTP/1.1\r\n", [], [(b"Transfer-Encoding", b"chunked")],
                                 frozenset(), None, None, True)
    assert head == b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_client_response_headers_keep_end_to_end_ones_only() -> None:
    lines, length, coded = client_response_headers(
        [(b"Server", b"tomcat"), (b"Date", b"x"), (b"Content-Type", b"text/plain"),
         (b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"), (b"Transfer-Encoding", b"chunked"),
         (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")])
    assert lines == [b"Content-Type: text/plain\r\n", b"Set-Cookie: a=1\r\n", b"Set-Cookie: b=2\r\n"]
    assert length is None and coded
    _, length, _ = client_response_headers([(b"Content-Length", b"12")])
    assert length == 12


def test_framing_by_client_version_and_status() -> None:
    assert response_framing(200, False, "1.1", 10, False) == (False, True)
    assert response_framing(200, False, "1.1", None, False) == (True, True)
    assert response_framing(200, False, "1.0", None, False) == (False, True)  # close-delimited
    assert response_framing(204, False, "1.1", None, False) == (False, False)
    assert response_framing(304, False, "1.1", None, False) == (False, False)
    assert response_framing(200, True, "1.1", None, True) == (True, False)  # HEAD keeps TE


def test_connection_tokens() -> None:
    assert connection_tokens(b"Keep-Alive, X-A ,x-b") == {b"keep-alive", b"x-a", b"x-b"}
    assert connection_tokens(None) == frozenset()


def test_single_range_forms() -> None:
    assert single_range(b"bytes=0-9", 100) == (0, 10)
    assert single_range(b"bytes=90-", 100) == (90, 100)
    assert single_range(b"bytes=-10", 100) == (90, 100)
    assert single_range(b"bytes=-500", 100) == (0, 100)
    assert single_range(b"bytes=95-200", 100) == (95, 100)
    assert single_range(b"bytes=100-", 100) is None
    assert single_range(b"bytes=5-4", 100) is None
    assert single_range(b"bytes=0-1,5-6", 100) == (0, 100)  # several ranges: whole file
    assert single_range(b"items=0-1", 100) == (0, 100)
    assert single_range(b"bytes=x-1", 100) == (0, 100)


@given(st.binary(max_size=40), st.integers(min_value=0, max_value=10**6))
def test_single_range_is_within_the_file(value: bytes, size: int) -> None:
    r = single_range(value, size)
    if r is not None:
        start, end = r
        assert 0 <= start <= end <= size
