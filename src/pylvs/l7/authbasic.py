"""nginx's ``auth_basic`` (ngx_http_auth_basic_module) and the Basic credentials ``$remote_user``
reads: who may see a location, checked against an htpasswd file.

Why apart, and why by hand: the steps are nginx's own and users notice each of them. The
``Authorization`` header is read as nginx reads it (``basic_credentials``: "Basic" in any case,
spaces, base64 up to the first "=", a user before the first ":"), the file as nginx reads it
(``password_of``: "user:password[:comment]" lines, "#" comments, read on every request so an
edit applies at once; here re-read only when its stat changes) and the password compared as
``ngx_crypt`` compares it (``crypt``): ``{PLAIN}``, ``{SHA}``, ``{SSHA}`` and Apache's
``$apr1$`` MD5, which nginx implements itself and no C library offers (so neither can
pylvs: it is written out below), and every other form (DES, ``$1$``, ``$5$``, ``$6$``,
``$y$``...) by the C library's ``crypt()``, called through ctypes as nginx calls it (Python's
own ``crypt`` module is deprecated). Every form is compared up to the password's first NUL
byte, as nginx's C strings are.

Outcomes (``check``): 0 to go on; 401 with ``WWW-Authenticate: Basic realm="..."`` for no or
unreadable credentials, an unknown user ("was not found in") or a wrong password ("password
mismatch"); 403 when the file does not exist; 500 when it cannot be read or ``crypt()`` fails.
``auth_basic off`` (also a realm whose variables make "off") and a location without
``auth_basic_user_file`` check nothing. ``satisfy any`` (``routing``) lets either this or
``allow``/``deny`` admit a client.

Not for: where the check runs (nginx's access phase: ``routing.dispatch``; the fast paths
leave such locations to it), reading the directives (``authbasicconf``).
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import os
import re
from collections.abc import Callable

# ngx_decode_base64's alphabet: the standard one; decoding stops at the first "="
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")
_ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def basic_credentials(value: bytes | None) -> tuple[bytes, bytes] | None:
    """ngx_http_auth_basic_user: (user, password) from an Authorization header, None if there
    is none nginx can read (then ``$remote_user`` is empty and auth_basic asks again)."""
    if value is None or len(value) < 6 or value[:6].lower() != b"basic ":
        return None
    encoded = value[6:].lstrip(b" ")
    end = encoded.find(b"=")
    if end >= 0:
        encoded = encoded[:end]
    if not encoded or _BASE64.fullmatch(encoded) is None or len(encoded) % 4 == 1:
        return None
    try:
        auth = base64.b64decode(encoded + b"=" * (-len(encoded) % 4))
    except binascii.Error:
        return None
    user, sep, password = auth.partition(b":")
    if not user or not sep:
        return None
    return user, password


def password_of(data: bytes, user: bytes) -> bytes | None:
    """The password field of ``user``'s line in an htpasswd file's ``data`` (up to a CR, LF or
    ":"), None if no line names the user; lines starting with "#" or CR are skipped."""
    want = user + b":"
    for line in data.split(b"\n"):
        if line.startswith(want) and line[:1] not in (b"#", b"\r"):
            rest = line[len(want):]
            return re.split(rb"[\r:]", rest, maxsplit=1)[0]
    return None


def _apr1(key: bytes, setting: bytes) -> bytes:
    """ngx_crypt_apr1: Apache's MD5 password hash of ``key`` with the salt in ``setting``."""
    salt = setting[6:]
    salt = salt[:8].split(b"$", 1)[0]
    ctx = hashlib.md5(key + b"$apr1$" + salt)
    alt = hashlib.md5(key + salt + key).digest()
    n = len(key)
    while n > 0:
        ctx.update(alt[:min(n, 16)])
        n -= 16
    i = len(key)
    while i:
        ctx.update(b"\0" if i & 1 else key[:1])
        i >>= 1
    final = ctx.digest()
    for i in range(1000):
        step = hashlib.md5(key if i & 1 else final)
        if i % 3:
            step.update(salt)
        if i % 7:
            step.update(key)
        step.update(final if i & 1 else key)
        final = step.digest()
    out = bytearray()
    for a, b, c, n in ((0, 6, 12, 4), (1, 7, 13, 4), (2, 8, 14, 4), (3, 9, 15, 4),
                       (4, 10, 5, 4)):
        v = final[a] << 16 | final[b] << 8 | final[c]
        for _ in range(n):
            out.append(_ITOA64[v & 0x3F])
            v >>= 6
    v = final[11]
    for _ in range(2):
        out.append(_ITOA64[v & 0x3F])
        v >>= 6
    return b"$apr1$" + salt + b"$" + bytes(out)


def _ssha(key: bytes, setting: bytes) -> bytes:
    """ngx_crypt_ssha: SHA-1 of the key and the salt stored after the 20-byte digest."""
    encoded = setting[6:]
    end = encoded.find(b"=")
    body = encoded if end < 0 else encoded[:end]
    try:
        decoded = base64.b64decode(body + b"=" * (-len(body) % 4)) \
            if _BASE64.fullmatch(body) and len(body) % 4 != 1 else b""
    except binascii.Error:
        decoded = b""
    salt = decoded[20:]
    return b"{SSHA}" + base64.b64encode(hashlib.sha1(key + salt).digest() + salt)


_libc_crypt: Callable[[bytes, bytes], bytes | None] | None = None


def _c_crypt(key: bytes, setting: bytes) -> bytes | None:
    """The C library's crypt(), as ngx_libc_crypt calls it (None: it failed)."""
    global _libc_crypt
    if _libc_crypt is None:
        lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1", use_errno=True)
        fn = lib.crypt
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        _libc_crypt = fn
    return _libc_crypt(key, setting)


def crypt(password: bytes, stored: bytes) -> bytes | None:
    """ngx_crypt: ``password`` hashed the way ``stored`` was (None: crypt() failed); the
    password matches when the result equals ``stored``."""
    key = password.split(b"\0", 1)[0]
    if stored.startswith(b"$apr1$"):
        return _apr1(key, stored)
    if stored.startswith(b"{PLAIN}"):
        return b"{PLAIN}" + key
    if stored.startswith(b"{SSHA}"):
        return _ssha(key, stored)
    if stored.startswith(b"{SHA}"):
        return b"{SHA}" + base64.b64encode(hashlib.sha1(key).digest())
    return _c_crypt(key, stored.split(b"\0", 1)[0])


class UserFiles:
    """htpasswd files by path, read again whenever their inode, size or mtime changes."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[tuple[int, int, int], bytes]] = {}

    def read(self, path: str) -> bytes:
        """The file's bytes; OSError as open() and read() raise it."""
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        got = self._files.get(path)
        if got is not None and got[0] == key:
            return got[1]
        with open(path, "rb") as f:
            data = f.read()
        if len(self._files) > 64:
            self._files.clear()
        self._files[path] = (key, data)
        return data


USER_FILES = UserFiles()


def challenge(realm: str) -> bytes:
    """The header line of a 401: nginx puts the realm between quotes as it is."""
    return b'WWW-Authenticate: Basic realm="' + realm.encode("latin-1") + b'"\r\n'


def check(realm: str, user_file: str, authorization: bytes | None,
          log: Callable[[str, str], None]) -> int:
    """nginx's auth_basic handler for one request: 0 (admitted), 401, 403 or 500; ``log``
    gets (level, message) as nginx's error log would."""
    creds = basic_credentials(authorization)
    if creds is None:
        log("info", "no user/password was provided for basic authentication")
        return 401
    user, password = creds
    try:
        data = USER_FILES.read(user_file)
    except FileNotFoundError as e:
        log("error", f'open() "{user_file}" failed (2: {e.strerror})')
        return 403
    except OSError as e:
        log("crit", f'open() "{user_file}" failed ({e.errno}: {e.strerror})')
        return 500
    stored = password_of(data, user)
    name = user.decode("latin-1")
    if stored is None:
        log("error", f'user "{name}" was not found in "{user_file}"')
        return 401
    got = crypt(password, stored)
    if got is None:
        log("crit", "crypt() failed")
        return 500
    if got != stored:
        log("error", f'user "{name}": password mismatch')
        return 401
    return 0
