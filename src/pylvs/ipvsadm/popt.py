"""Command-line scanning the way libpopt scans ipvsadm's arguments.

What this is for: ipvsadm's users type ``-Lnc``, ``-w3``, ``--weight=3``, ``-p`` with or without a
value, put ``--set``'s numbers anywhere, and read popt's own error texts (``-t: missing
argument``, ``--bogus: unknown option``). argparse/getopt differ in each of these, so this is a
small re-implementation of the popt rules ipvsadm relies on: exact long names (popt has no
abbreviations), clustered short options, an argument glued to a short option or given after
``=``, the next word taken as a required argument even when it starts with ``-``, an optional
argument taken only when the next word does not start with ``-``, ``--`` ending options, and
non-option words collected as leftovers wherever they appear.

What this is not for: the meaning of options (``pylvs.ipvsadm.parse``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

POPT_ERROR_NOARG = -10
POPT_ERROR_BADOPT = -11

_ERROR_TEXT = {POPT_ERROR_NOARG: "missing argument", POPT_ERROR_BADOPT: "unknown option"}


@dataclass(frozen=True, slots=True)
class Option:
    long: str | None
    short: str | None
    val: str
    takes_arg: bool = False
    optional: bool = False


class PoptError(Exception):
    """``poptGetNextOpt`` returned an error code; ``bad`` is ``poptBadOption``'s word."""

    def __init__(self, code: int, bad: str) -> None:
        self.code = code
        self.bad = bad
        super().__init__(f"{bad}: {_ERROR_TEXT.get(code, 'unknown error')}")


class Popt:
    """One scan over ``argv`` (``argv[0]`` is the program name, as in C)."""

    def __init__(self, argv: Sequence[str], options: Sequence[Option]) -> None:
        self.argv = list(argv)
        self.options = options
        self._long: dict[str, Option] = {}
        self._short: dict[str, Option] = {}
        for opt in options:  # first entry wins, as popt's table scan does
            if opt.long is not None:
                self._long.setdefault(opt.long, opt)
            if opt.short is not None:
                self._short.setdefault(opt.short, opt)
        self.next = 1
        self._next_char: str | None = None
        self._rest_leftover = False
        self.leftovers: list[str] = []
        self._next_leftover = 0

    def _find_long(self, name: str) -> Option | None:
        return self._long.get(name)

    def _find_short(self, ch: str) -> Option | None:
        return self._short.get(ch)

    def bad_option(self) -> str:
        return self.argv[self.next - 1] if self.next >= 1 else ""

    def get_next_opt(self) -> tuple[str, str | None] | None:
        """The next option's ``val`` and argument; None at the end; raises PoptError."""
        argv = self.argv
        while True:
            opt: Option | None = None
            long_arg: str | None = None
            if self._next_char is None and self.next >= len(argv):
                return None
            if self._next_char is None:
                word = argv[self.next]
                self.next += 1
                if self._rest_leftover or not word.startswith("-") or word == "-":
                    self.leftovers.append(word)
                    continue
                if word == "--":
                    self._rest_leftover = True
                    continue
                body = word[1:]
                onedash = True
                if body.startswith("-"):
                    body = body[1:]
                    onedash = False
                eq = body.find("=")
                name = body if eq < 0 else body[:eq]
                if eq >= 0:
                    long_arg = body[eq + 1 :]
                # No ipvsadm option is a one-dash long option: "-list" is a cluster of shorts.
                if not onedash:
                    opt = self._find_long(name)
                    if opt is None:
                        raise PoptError(POPT_ERROR_BADOPT, self.bad_option())
                else:
                    self._next_char = word[1:]
                    long_arg = None
            if self._next_char is not None:
                chars = self._next_char
                self._next_char = None
                opt = self._find_short(chars[0])
                if opt is None:
                    raise PoptError(POPT_ERROR_BADOPT, self.bad_option())
                rest = chars[1:]
                if rest:
                    self._next_char = rest[1:] if rest[0] == "=" else rest
            assert opt is not None
            arg: str | None = None
            if opt.takes_arg:
                if long_arg is not None:
                    arg = long_arg
                elif self._next_char is not None:
                    arg = self._next_char
                    self._next_char = None
                elif self.next >= len(argv):
                    if not opt.optional:
                        raise PoptError(POPT_ERROR_NOARG, self.bad_option())
                elif opt.optional and argv[self.next].startswith("-"):
                    arg = None
                else:
                    arg = argv[self.next]
                    self.next += 1
            return opt.val, arg

    def get_arg(self) -> str | None:
        """``poptGetArg``: the next leftover word."""
        if self._next_leftover < len(self.leftovers):
            word = self.leftovers[self._next_leftover]
            self._next_leftover += 1
            return word
        return None
