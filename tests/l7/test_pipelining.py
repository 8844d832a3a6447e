"""Where the next request starts in a read of pipelined requests (``connection._after_heads``):
found again after llhttp refuses a method nginx accepts, past every earlier request's head and
body (Content-Length or chunked, with extensions and trailers), for any mix of them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pylvs.l7.connection import _after_heads

_body = st.binary(max_size=40)


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    """One request as a client may pipeline it: no body, a Content-Length body (header name in
    any case, spaces around the value), or a chunked one (extensions, trailers)."""
    head = b"POST /p HTTP/1.1\r\nHost: h\r\n"
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    if kind == "none":
        return head + b"X: y\r\n\r\n"
    body = draw(_body)
    if kind == "length":
        name = draw(st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"]))
        sp = draw(st.sampled_from([b"", b" ", b"  \t"]))
        return head + name + b":" + sp + str(len(body)).encode() + sp + b"\r\n\r\n" + body
    chunks = draw(st.lists(_body.filter(bool), max_size=4))
    out = head + b"Transfer-Encoding: chunked\r\n\r\n"
    for c in chunks:
        ext = draw(st.sampled_from([b"", b";a=b"]))
        out += b"%x" % len(c) + ext + b"\r\n" + c + b"\r\n"
    trailer = draw(st.sampled_from([b"", b"T: v\r\n"]))
    return out + b"0\r\n" + trailer + b"\r\n"


@given(st.lists(_request(), min_size=1, max_size=5))
def test_the_next_request_is_found_past_any_heads_and_bodies(reqs: list[bytes]) -> None:
    nxt = b"PURGE_X /m HTTP/1.1\r\nHost: h\r\n\r\n"
    assert _after_heads(b"".join(reqs) + nxt, len(reqs), True) == nxt


def test_a_body_in_a_read_that_began_mid_request_is_not_guessed() -> None:
    data = b"Host: h\r\nContent-Length: 2\r\n\r\nhiFOO / HTTP/1.1\r\n\r\n"
    assert _after_heads(data, 1, False) is None
    # without bodies the first head end is the one the earlier read began
    assert _after_heads(b"Host: h\r\n\r\nFOO / HTTP/1.1\r\n\r\n", 1, False) == \
        b"FOO / HTTP/1.1\r\n\r\n"


def test_a_read_shorter_than_its_bodies_says_so() -> None:
    assert _after_heads(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab", 1, True) is None
    assert _after_heads(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1,
                        True) is None
