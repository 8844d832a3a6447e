"""The value readers of keepalived.conf: numbers, addresses, ports, booleans, commands and hex
strings out of a :class:`~pylvs.config.grammar.Statement`'s words.

One convention for every block of the file: a reader returns the value or raises
:class:`Invalid`, which carries the diagnostic (file:line and message) to report. The block being
interpreted catches it at the statement, hands it to its :class:`Report` and goes on with the
next statement, so one bad value never hides the others and an error never goes unreported.

The VRRP and the virtual_server halves of the file were read by two parsers that worded a bad
number or address differently; operators and tests match those messages, so the wording is a
parameter (:data:`VRRP_WORDING`, :data:`LVS_WORDING`) of the one reader, not a second reader.

Not for: what a keyword means (``pylvs.config.keepalived``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pylvs.config.grammar import Diagnostic, Statement
from pylvs.core.model import IPAddress


class Invalid(Exception):
    """A value that makes its statement unusable. ``diagnostic`` is the error to report; None
    means it was reported already (a nested statement said why) and the statement is dropped."""

    def __init__(self, st: Statement | None, message: str = "") -> None:
        super().__init__(message)
        self.diagnostic = (Diagnostic("error", st.file, st.line, message)
                           if st is not None else None)

    @classmethod
    def reported(cls) -> Invalid:
        return cls(None)


@dataclass(slots=True)
class Report:
    """Where a block's diagnostics go: the file's list, in the order they were found."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, st: Statement, msg: str) -> None:
        self.diagnostics.append(Diagnostic("error", st.file, st.line, msg))

    def warn(self, st: Statement, msg: str) -> None:
        self.diagnostics.append(Diagnostic("warning", st.file, st.line, msg))

    def invalid(self, exc: Invalid) -> None:
        if exc.diagnostic is not None:
            self.diagnostics.append(exc.diagnostic)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


@dataclass(frozen=True, slots=True)
class Wording:
    """How a bad number or address is said; fields are ``str.format`` templates over ``kw``
    (the keyword), ``text`` (the word), ``value`` (the parsed number), ``lo`` and ``hi``."""

    not_integer: str
    not_number: str
    integer_range: str
    number_range: str
    not_address: str


VRRP_WORDING = Wording(
    not_integer="'{kw}': invalid number '{text}'",
    not_number="'{kw}': invalid number '{text}'",
    integer_range="'{kw}': number '{value}' outside range [{lo}, {hi}]",
    number_range="'{kw}': number '{text}' outside range [{lo:.6g}, {hi:.10g}]",
    not_address="'{kw}': invalid IP address '{text}'",
)
LVS_WORDING = Wording(
    not_integer="'{kw}': '{text}' is not an integer",
    not_number="'{kw}': '{text}' is not a number",
    integer_range="'{kw}': {value} outside range [{lo}, {hi}]",
    number_range="'{kw}': {text} outside range [{lo:g}, {hi:g}]",
    not_address="'{text}' is not an IP address",
)


def arg(st: Statement, n: int = 0) -> str:
    """The ``n``-th word after the keyword."""
    if len(st.args) <= n:
        raise Invalid(st, f"'{st.keyword}' needs a value")
    return st.args[n]


def integer(st: Statement, lo: int, hi: int, n: int = 0, wording: Wording = LVS_WORDING) -> int:
    text = arg(st, n)
    try:
        v = int(text, 10)
    except ValueError:
        raise Invalid(st, wording.not_integer.format(kw=st.keyword, text=text)) from None
    if not lo <= v <= hi:
        raise Invalid(st, wording.integer_range.format(kw=st.keyword, text=text, value=v, lo=lo, hi=hi))
    return v


def number(st: Statement, lo: float, hi: float, n: int = 0, wording: Wording = LVS_WORDING) -> float:
    text = arg(st, n)
    try:
        v = float(text)
    except ValueError:
        raise Invalid(st, wording.not_number.format(kw=st.keyword, text=text)) from None
    if not lo <= v <= hi:
        raise Invalid(st, wording.number_range.format(kw=st.keyword, text=text, value=v, lo=lo, hi=hi))
    return v


def boolean(st: Statement) -> bool:
    """An optional on/off after the keyword (none: on); anything else is an error."""
    if not st.args:
        return True
    v = st.args[0].lower()
    if v in ("on", "true", "yes", "1"):
        return True
    if v in ("off", "false", "no", "0"):
        return False
    raise Invalid(st, f"'{st.keyword}': '{st.args[0]}' is not a boolean")


def address(st: Statement, text: str, wording: Wording = LVS_WORDING) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise Invalid(st, wording.not_address.format(kw=st.keyword, text=text)) from None


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def port(st: Statement, text: str) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        raise Invalid(st, f"'{text}' is not a port number") from None
    if not 0 <= v <= 65535:
        raise Invalid(st, f"port {v} outside range [0, 65535]")
    return v


def words(st: Statement) -> str:
    """Every word after the keyword as one string (a path with arguments, a regex)."""
    return " ".join(st.args) if st.args else arg(st)


def command(st: Statement) -> str:
    """A script with its arguments (notify, vrrp_script's script)."""
    if not st.args:
        raise Invalid(st, f"'{st.keyword}' needs a script")
    return " ".join(st.args)


def hex_string(st: Statement, text: str, wildcards: bool) -> tuple[bytes, bytes]:
    """keepalived's free-form HEX_STR: each word is read two digits a byte, a lone last digit
    being a byte of its own ("Ab12f 3" is AB 12 0F 03); with ``wildcards`` an X digit matches
    anything. Returns (value, mask)."""
    value = bytearray()
    mask = bytearray()
    for word in text.split():
        for i in range(0, len(word), 2):
            digits = word[i:i + 2].rjust(2, "0")
            v = m = 0
            for d in digits:
                v <<= 4
                m <<= 4
                if wildcards and d in "xX":
                    continue
                try:
                    v |= int(d, 16)
                except ValueError:
                    raise Invalid(st, f"'{word}' is not a hex string") from None
                m |= 0xF
            value.append(v)
            mask.append(m)
    if not value:
        raise Invalid(st, f"'{st.keyword}' needs a hex string")
    return bytes(value), bytes(mask)
