"""Reading the rewrite module's directives (``rewrite``, ``return``, ``set``, ``break``, ``if``)
of one level into its script: the steps ``rewrite.run_script`` carries out, in file order.

Why apart from ``config``: these directives are not settings that inherit but a small program
per level, and ``if`` has nginx's own little grammar (parentheses glued to the first and last
arguments, ``$var``, ``=``/``!=``, ``~ ~* !~ !~*``, ``-f -d -e -x`` and their ``!`` forms) with its
own error words, which this module reproduces (``ngx_http_rewrite_if_condition``).

Not for: the block structure (``config`` builds the Location an ``if`` in a location answers
with, through the callback it passes in) or running the script (``rewrite``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pylvs.l7.directives import LIF, SIF, pcre, return_of, rewrite_of, template
from pylvs.l7.model import Break, Condition, If, Location, Op, SetVar
from pylvs.l7.syntax import ConfigError, Directive
from pylvs.l7.variables import CHANGEABLE, KNOWN

SCRIPT_NAMES = frozenset({"rewrite", "return", "set", "break", "if"})


class ScriptReader:
    """Builds scripts; remembers the variable names ``set`` and named captures declare."""

    def __init__(self, expand: Callable[[list[Directive], str], list[Directive]]) -> None:
        self.expand = expand
        self.declared: set[str] = set()

    def declare(self, regex: re.Pattern[str]) -> re.Pattern[str]:
        """A regex's named captures are variables from then on (``(?<name>...)`` -> $name)."""
        self.declared.update(n.lower() for n in regex.groupindex)
        return regex

    def script(self, block: list[Directive],
               if_location: Callable[[Directive, list[Directive]], Location] | None
               ) -> tuple[Op, ...]:
        """One level's script. ``if_location`` builds an if block's Location (None at the
        server level, where an if has no configuration of its own)."""
        ops: list[Op] = []
        for d in block:
            if d.name == "rewrite":
                rw = rewrite_of(d)
                self.declare(rw.regex)
                ops.append(rw)
            elif d.name == "return":
                ops.append(return_of(d))
            elif d.name == "set":
                ops.append(self.set_(d))
            elif d.name == "break":
                ops.append(Break())
            elif d.name == "if":
                ops.append(self.if_(d, if_location))
        return tuple(ops)

    def set_(self, d: Directive) -> SetVar:
        name = d.args[0]
        if len(name) < 2 or name[0] != "$":
            raise ConfigError(f'invalid variable name "{name}"', d.file, d.line)
        name = name[1:].lower()
        if name in KNOWN and name not in CHANGEABLE:
            raise ConfigError(f'the duplicate "{name}" variable', d.file, d.line)
        self.declared.add(name)
        return SetVar(name, template(d.args[1], d))

    def if_(self, d: Directive,
            if_location: Callable[[Directive, list[Directive]], Location] | None) -> If:
        cond = self.condition(d)
        assert d.block is not None
        block = self.expand(d.block, SIF if if_location is None else LIF)
        body = self.script(block, None)
        loc = if_location(d, block) if if_location is not None else None
        return If(cond, body, loc)

    def condition(self, d: Directive) -> Condition:
        """nginx's reading of ``if``'s arguments, error for error."""
        v = list(d.args)

        def invalid(arg: str) -> ConfigError:
            return ConfigError(f'invalid condition "{arg}"', d.file, d.line)

        last = len(v) - 1
        if not v[0].startswith("("):
            raise invalid(v[0])
        cur = 1 if v[0] == "(" else 0
        if cur == 0:
            v[0] = v[0][1:]
        if not v[last].endswith(")"):
            raise invalid(v[last])
        if v[last] == ")":
            last -= 1
        else:
            v[last] = v[last][:-1]
        if cur >= len(v) or cur > last:
            raise invalid(")")
        p = v[cur]
        if len(p) > 1 and p[0] == "$":
            if cur != last and cur + 2 != last:
                raise invalid(p)
            left = template(p, d)
            if cur == last:
                return Condition("", False, left)
            op, right = v[cur + 1], v[last]
            if op in ("=", "!="):
                return Condition("=", op == "!=", left, template(right, d))
            if op in ("~", "~*", "!~", "!~*"):
                rx = pcre(right, d, re.IGNORECASE if op.endswith("*") else 0)
                return Condition("~", op.startswith("!"), left, None, self.declare(rx))
            raise ConfigError(f'unexpected "{op}" in condition', d.file, d.line)
        if (len(p) == 2 and p[0] == "-") or (len(p) == 3 and p[:2] == "!-"):
            if cur + 1 != last:
                raise invalid(p)
            kind = p[-1]
            if kind in "fdex":
                return Condition("-" + kind, p[0] == "!", template(v[last], d))
        raise invalid(p)
