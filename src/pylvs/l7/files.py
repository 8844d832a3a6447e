"""Small static files held in memory and revalidated by one ``stat()`` per request.

nginx's ``open_file_cache`` idea, made safe to leave on: a cached file is served only while its
inode, size, mode and change times are those it was read with, so an edited, replaced, removed
or chmod-ed file is seen on the very next request (nginx's cache may serve stale data for
``open_file_cache_valid``). A file modified within the last second is served but not kept
(its timestamps cannot yet tell a second write from the first, as git's "racy" files). A hit
costs one system call instead of open, fstat, read and close.

Not for: large files (the server streams those from disk in pieces), directories and index
files, or deciding the response (ranges, conditional requests, errors: the server does that).
"""

from __future__ import annotations

import email.utils
import os
import stat
import time

MAX_FILE = 64 * 1024  # larger files are streamed, not cached
MAX_TOTAL = 32 * 1024 * 1024  # bytes of file data held at most
MAX_ENTRIES = 2048

_DATES: dict[int, bytes] = {}


def http_date(t: int) -> bytes:
    """Last-Modified values, formatted once per distinct mtime (files rarely change)."""
    d = _DATES.get(t)
    if d is None:
        if len(_DATES) > 4096:
            _DATES.clear()
        d = _DATES[t] = email.utils.formatdate(t, usegmt=True).encode()
    return d


def etag(mtime: int, size: int) -> bytes:
    """nginx's ETag: hex mtime and size, quoted."""
    return b'"%x-%x"' % (mtime, size)


class CachedFile:
    """One small regular file: its bytes and the validator header lines it is answered with."""

    __slots__ = ("body", "head", "head_date", "identity", "lines", "lines_for", "size",
                 "validators")

    def __init__(self, identity: tuple[int, ...], body: bytes, mtime: int) -> None:
        self.identity = identity
        self.body = body
        self.size = len(body)
        self.validators = (b"Last-Modified: " + http_date(mtime) + b"\r\nETag: "
                           + etag(mtime, len(body)) + b"\r\n")
        # the header lines of its last answer and what they were made for (the server keeps
        # them: a file is asked for by the same URI in the same location again and again)
        self.lines = b""
        self.lines_for: tuple[object, str] | None = None
        # and the whole response head made from them, with the Date line it holds
        self.head = b""
        self.head_date: bytes | None = None


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class FileCache:
    """Path -> CachedFile, bounded in entries and bytes (emptied when full: the hot set of a
    static site refills it within a few requests)."""

    def __init__(self, max_file: int = MAX_FILE, max_total: int = MAX_TOTAL,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.max_file = max_file
        self.max_total = max_total
        self.max_entries = max_entries
        self._files: dict[str, CachedFile] = {}
        self._total = 0

    def get(self, path: str) -> CachedFile | None:
        """The file at ``path`` if it is a small regular file readable now, else None (the
        caller then takes its ordinary path, which also produces the right error)."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        mode = st.st_mode
        if not stat.S_ISREG(mode) or st.st_size > self.max_file:
            return None
        cached = self._files.get(path)
        # _identity(st), inline: this runs for every cached file served
        ident = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode)
        if cached is not None and cached.identity == ident:
            return cached
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if _identity(os.fstat(fd)) != ident:
                return None  # replaced between stat and open
            body = os.read(fd, st.st_size + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        if len(body) != st.st_size:
            return None  # changing while read
        fresh = CachedFile(ident, body, int(st.st_mtime))
        if cached is not None:
            self._forget(path, cached)
        if time.time() - st.st_mtime >= 1.0:
            if len(self._files) >= self.max_entries or self._total + fresh.size > self.max_total:
                self._files.clear()
                self._total = 0
            self._files[path] = fresh
            self._total += fresh.size
        return fresh

    def _forget(self, path: str, cached: CachedFile) -> None:
        del self._files[path]
        self._total -= cached.size

    def __len__(self) -> int:
        return len(self._files)
