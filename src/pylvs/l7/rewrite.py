"""nginx's ``rewrite``, without I/O: what a list of rewrite directives does to a URI.

What this is for: the server-level rewrites (run before a location is chosen) and a location's
own (run once it is chosen), with nginx's rules: each matching directive replaces the URI with
its replacement (``$1``..``$9`` are the regex's captures, ``$name``/``${name}`` variables); a
replacement with ``?`` sets the arguments (the old ones are appended unless it ends with
``?``); no flag goes on to the next directive, ``last`` stops and has the location chosen again,
``break`` stops and stays, ``redirect``/``permanent`` (or a replacement starting with
``http://``, ``https://`` or ``$scheme``) answer 302/301 with the new URI.

A level's script (``run_script``) also holds ``return``, ``set``, ``break`` and ``if``, run in
file order as nginx's rewrite phase runs them: an ``if`` whose condition holds runs its own
directives inline and, in a location, makes its block's configuration the one that answers
(the last such ``if`` wins), after which the directives below it still run; ``break`` and a
``break`` flag stop the script and keep the location; a regex match (``rewrite``, ``if``)
makes its captures the request's $1.. and named variables.

What this is not for: choosing locations or answering (``routing``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pylvs.l7.model import Break, Condition, If, Location, Op, Return, Rewrite, SetVar
from pylvs.l7.variables import expand as expand_template

_REF = re.compile(r"\$(?:(\d)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run of rewrites decided."""

    uri: str
    args: str
    action: str  # "" (unchanged), "changed" (choose the location again), "last", "break",
    # or "redirect" (answer ``status`` with ``location``)
    status: int = 0
    location: str = ""
    ret: Return | None = None  # action "return": what answers
    conf: Location | None = None  # an if block's configuration that answers, if any held


def expand(replacement: str, m: re.Match[str], variable: Callable[[str], str]) -> str:
    def one(ref: re.Match[str]) -> str:
        if ref.group(1) is not None:
            n = int(ref.group(1))
            return (m.group(n) or "") if n <= (m.re.groups or 0) else ""
        return variable(ref.group(2) or ref.group(3))

    return _REF.sub(one, replacement)


def run(rewrites: tuple[Rewrite, ...], uri: str, args: str,
        variable: Callable[[str], str]) -> Outcome:
    changed = False
    for rw in rewrites:
        m = rw.regex.search(uri)
        if m is None:
            continue
        new = expand(rw.replacement, m, variable)
        if new.startswith(("http://", "https://")) or rw.flag in ("redirect", "permanent"):
            if rw.replacement.endswith("?"):
                new = new[:-1]  # "?" at the end: the request's arguments are dropped
            elif args:
                new = f"{new}&{args}" if "?" in new else f"{new}?{args}"
            status = 301 if rw.flag == "permanent" else 302
            return Outcome(uri, args, "redirect", status, new)
        path, qmark, query = new.partition("?")
        if qmark:
            keep_old = not rw.replacement.endswith("?") and args
            args = f"{query}&{args}" if keep_old and query else (query or (args if keep_old else ""))
        uri = path
        changed = True
        if rw.flag in ("last", "break"):
            return Outcome(uri, args, rw.flag)
    return Outcome(uri, args, "changed" if changed else "")


class State(Protocol):
    """What a script reads and changes of a request."""

    uri: str
    args: str
    internal: bool  # set once a rewrite changes the URI (nginx's r->internal)

    def variable(self, name: str) -> str: ...

    def set_var(self, name: str, value: str) -> None: ...

    def set_captures(self, m: re.Match[str]) -> None: ...


# The file tests of ``if``: the path's kind as a callable answers it (I/O stays outside).
FileTest = Callable[[str, str], bool]


def holds(cond: Condition, st: State, test_file: FileTest) -> bool:
    """Whether an ``if`` condition holds (a regex match sets the request's captures)."""
    value = expand_template(cond.left, st.variable)
    op = cond.op
    if op == "":
        result = value != "" and value != "0"
    elif op == "=":
        assert cond.right is not None
        result = value == expand_template(cond.right, st.variable)
    elif op == "~":
        assert cond.regex is not None
        m = cond.regex.search(value)
        if m is not None and not cond.negate:
            st.set_captures(m)
        result = m is not None
    else:
        result = test_file(op, value)
    return result != cond.negate


def run_script(ops: tuple[Op, ...], st: State, test_file: FileTest) -> Outcome:
    """Run one level's script on ``st``; the Outcome says how the phase ends."""
    conf: Location | None = None
    changed = False
    todo: list[tuple[tuple[Op, ...], int]] = [(ops, 0)]
    while todo:
        seq, i = todo.pop()
        while i < len(seq):
            op = seq[i]
            i += 1
            if isinstance(op, Rewrite):
                m = op.regex.search(st.uri)
                if m is None:
                    continue
                st.set_captures(m)
                out = run((op,), st.uri, st.args, st.variable)
                if out.action == "redirect":
                    return Outcome(st.uri, st.args, "redirect", out.status, out.location,
                                   conf=conf)
                st.uri, st.args = out.uri, out.args
                st.internal = changed = True  # an ``internal`` location may now answer
                if out.action in ("last", "break"):
                    return Outcome(st.uri, st.args, out.action, conf=conf)
            elif isinstance(op, Return):
                return Outcome(st.uri, st.args, "return", ret=op, conf=conf)
            elif isinstance(op, SetVar):
                st.set_var(op.name, expand_template(op.value, st.variable))
            elif isinstance(op, Break):
                return Outcome(st.uri, st.args, "break", conf=conf)
            elif isinstance(op, If) and holds(op.cond, st, test_file):
                if op.location is not None:
                    conf = op.location
                todo.append((seq, i))  # the directives after the block run next
                seq, i = op.body, 0
    return Outcome(st.uri, st.args, "changed" if changed else "", conf=conf)
