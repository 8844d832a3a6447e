"""The static file cache: a hit costs one stat, and any change to the file is seen at once."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pylvs.l7.files import FileCache
from tests.l7.conftest import Client, Stack, get


def _aged(path: Path, data: bytes, age: float = 100.0) -> None:
    """Write ``data`` with timestamps ``age`` seconds old (old enough to be cached)."""
    path.write_bytes(data)
    t = time.time() - age
    os.utime(path, (t, t))


def test_cached_file_is_served_until_it_changes(tmp_path: Path) -> None:
    f = tmp_path / "a.html"
    _aged(f, b"first version\n")
    cache = FileCache()
    one = cache.get(str(f))
    assert one is not None and one.body == b"first version\n" and len(cache) == 1
    assert cache.get(str(f)) is one  # a hit: nothing read again
    _aged(f, b"other version\n", age=50.0)  # same size, new content
    two = cache.get(str(f))
    assert two is not None and two.body == b"other version\n"
    assert b"ETag: " in two.validators and two.validators != one.validators
    f.unlink()
    assert cache.get(str(f)) is None


def test_replaced_file_with_the_same_times_is_still_seen(tmp_path: Path) -> None:
    f = tmp_path / "a.html"
    _aged(f, b"first\n")
    cache = FileCache()
    st = os.stat(f)
    assert cache.get(str(f)) is not None
    new = tmp_path / "new.html"
    new.write_bytes(b"newer\n")
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, f)  # another inode under the same name and times
    got = cache.get(str(f))
    assert got is not None and got.body == b"newer\n"


def test_file_written_just_now_is_served_but_not_kept(tmp_path: Path) -> None:
    f = tmp_path / "hot.html"
    f.write_bytes(b"being written\n")
    cache = FileCache()
    got = cache.get(str(f))
    assert got is not None and got.body == b"being written\n"
    assert len(cache) == 0


def test_large_files_directories_and_missing_paths_are_not_cached(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    _aged(big, b"x" * 2000)
    cache = FileCache(max_file=1000)
    assert cache.get(str(big)) is None
    assert cache.get(str(tmp_path)) is None
    assert cache.get(str(tmp_path / "missing")) is None
    assert cache.get(str(tmp_path / "big.bin" / "under-a-file")) is None
    assert len(cache) == 0


def test_cache_stays_within_its_byte_bound(tmp_path: Path) -> None:
    cache = FileCache(max_total=250)
    for i in range(10):
        f = tmp_path / f"f{i}"
        _aged(f, bytes([65 + i]) * 100)
        got = cache.get(str(f))
        assert got is not None and got.body == bytes([65 + i]) * 100
        assert len(cache) <= 2


def test_edited_static_file_is_served_fresh_on_the_next_request(seed: Stack) -> None:
    page = seed.tmp / "html" / "page.html"
    _aged(page, b"version one\n")
    c = Client(seed.port)
    first = c.one(get("/page.html"))
    assert first.status == 200 and first.body == b"version one\n"
    assert first.headers["content-type"] == "text/html"
    assert first.headers["accept-ranges"] == "bytes"
    assert c.one(get("/page.html")).body == b"version one\n"
    assert seed.server is not None and len(seed.server.files) == 1  # kept: later ones are hits
    assert c.one(get("/page.html")).body == b"version one\n"
    _aged(page, b"version two\n", age=10.0)
    second = c.one(get("/page.html"))
    assert second.body == b"version two\n"
    assert second.headers["etag"] != first.headers["etag"]
    # conditional and HEAD requests keep their meaning next to the cache
    etag = second.headers["etag"]
    assert c.one(get("/page.html", extra=f"If-None-Match: {etag}\r\n")).status == 304
    head = c.one(b"HEAD /page.html HTTP/1.1\r\nHost: localhost\r\n\r\n", head_only=True)
    assert head.status == 200 and head.headers["content-length"] == "12" and not head.body
    page.unlink()
    assert c.one(get("/page.html")).status == 404
    c.close()
