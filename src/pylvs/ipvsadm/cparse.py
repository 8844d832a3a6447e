"""Number and address parsing with the C library's rules, because ipvsadm's are the C library's.

What this is for: ``-w 3`` / ``-w 0x10`` / ``-t 1.2.3:80`` must be accepted or refused exactly as
ipvsadm accepts or refuses them (``strtol`` base 10, ``inet_aton``'s short and octal forms,
``inet_pton`` for IPv6), or a drop-in replacement would reject a working script or take a
typo for an address.

What this is not for: deciding what an option means; that is ``pylvs.ipvsadm.parse``.
"""

from __future__ import annotations

import ipaddress
import socket

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
_SPACES = " \t\n\v\f\r"


def strtol(s: str, base: int = 10) -> tuple[int, int, bool]:
    """``strtol(s, &end, base)`` for base 10: (value, index of end, ERANGE)."""
    assert base == 10
    i = 0
    n = len(s)
    while i < n and s[i] in _SPACES:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    start = i
    while i < n and "0" <= s[i] <= "9":
        i += 1
    if i == start:
        return 0, 0, False  # no digits: end = s
    value = int(s[start:i])
    if neg:
        value = -value
    if value > LONG_MAX:
        return LONG_MAX, i, True
    if value < LONG_MIN:
        return LONG_MIN, i, True
    return value, i, False


def string_to_number(s: str, lo: int, hi: int) -> int:
    """ipvsadm's ``string_to_number``: the whole string a base-10 number within [lo, hi], else -1."""
    value, end, erange = strtol(s)
    if end == len(s) and end != 0 and not erange and lo <= value <= hi:
        return value
    return -1


def atoi(s: str) -> int:
    """``atoi``: leading number or 0 (clamped to int like glibc's strtol-based atoi)."""
    value, _end, _erange = strtol(s)
    return max(-(2**31), min(INT_MAX, value)) if abs(value) > INT_MAX else value


def str_is_digit(s: str) -> bool:
    """ipvsadm's ``str_is_digit``: true for "" and for strings of ASCII digits only."""
    return all("0" <= c <= "9" for c in s)


def inet_aton(s: str) -> ipaddress.IPv4Address | None:
    """glibc ``inet_aton`` (``1.2.3`` is 1.2.0.3, ``010`` is octal, trailing blanks end it)."""
    if "\x00" in s:
        s = s.split("\x00", 1)[0]
    try:
        return ipaddress.IPv4Address(socket.inet_aton(s))
    except (OSError, ValueError, UnicodeError):
        return None


def inet_pton6(s: str) -> ipaddress.IPv6Address | None:
    if "\x00" in s:
        s = s.split("\x00", 1)[0]
    try:
        return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, s))
    except (OSError, ValueError, UnicodeError):
        return None


def inet_pton4(s: str) -> ipaddress.IPv4Address | None:
    if "\x00" in s:
        s = s.split("\x00", 1)[0]
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, s))
    except (OSError, ValueError, UnicodeError):
        return None


def c_int32(value: int) -> int:
    """The value as a C ``int`` after unsigned wrap-around (``u32 - u32`` stored in an int)."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value
