"""keepalived.conf's grammar: lines of words, ``{ ... }`` blocks, ``include`` with globs, comments
(``#``/``!``), quoted strings, ``\\`` continuations, ``$NAME=value`` definitions and ``@id``
conditional lines.

Produces a tree of :class:`Statement` (keyword, words, optional block, file, line) without
knowing any keyword's meaning, so the VRRP part and the virtual_server part interpret the same
tree. Not for: keyword semantics (see :mod:`pylvs.config.keepalived`).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str  # "error" | "warning"
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


class ConfigError(Exception):
    """A configuration that must not be started; ``diagnostics`` holds every error found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        super().__init__(str(errors[0]) if errors else "invalid configuration")


@dataclass(frozen=True, slots=True)
class Statement:
    keyword: str
    args: tuple[str, ...]
    file: str
    line: int
    block: tuple[Statement, ...] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def flag(self) -> bool:
        """keepalived's optional boolean after a keyword: none (true), or true/on/yes/1."""
        return not self.args or self.args[0].lower() in ("true", "on", "yes", "1")

    @property
    def words(self) -> tuple[str, ...]:
        return (self.keyword, *self.args)


@dataclass(slots=True)
class _Line:
    words: list[str]
    file: str
    line: int


@dataclass(slots=True)
class Reader:
    """Reads files into logical lines, expanding includes, definitions and conditionals."""

    config_id: str | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    defs: dict[str, str] = field(default_factory=dict)
    _depth: int = 0

    def error(self, file: str, line: int, msg: str) -> None:
        self.diagnostics.append(Diagnostic("error", file, line, msg))

    def warn(self, file: str, line: int, msg: str) -> None:
        self.diagnostics.append(Diagnostic("warning", file, line, msg))

    def read(self, path: str) -> list[_Line]:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            self.error(path, 0, f"cannot read configuration: {exc.strerror}")
            return []
        self.files.append(path)
        text = raw.decode("utf-8", errors="replace")
        out: list[_Line] = []
        pending = ""
        pending_line = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.rstrip("\r")
            if line.rstrip().endswith("\\"):
                if not pending:
                    pending_line = lineno
                pending += line.rstrip()[:-1] + " "
                continue
            if pending:
                line, lineno_eff = pending + line, pending_line
                pending = ""
            else:
                lineno_eff = lineno
            out.extend(self._logical(line, path, lineno_eff))
        if pending:
            out.extend(self._logical(pending, path, pending_line))
        return out

    def _logical(self, line: str, path: str, lineno: int) -> list[_Line]:
        stripped = line.strip()
        if stripped.startswith("@"):
            parts = stripped.split(None, 1)
            tag, rest = parts[0][1:], (parts[1] if len(parts) > 1 else "")
            negate = tag.startswith("^")
            tag = tag.lstrip("^")
            if (self.config_id == tag) == negate:
                return []
            line = rest
        m = re.match(r"^\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$", line)
        if m:
            self.defs[m.group(1)] = m.group(2).strip()
            return []
        if "$" in line and self.defs:
            line = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                          lambda mm: self.defs.get(mm.group(1) or mm.group(2), mm.group(0)), line)
        try:
            words = tokenize(line)
        except ValueError as exc:
            self.error(path, lineno, str(exc))
            return []
        if not words:
            return []
        if words[0] == "include":
            return self._include(words, path, lineno)
        return [_Line(words, path, lineno)]

    def _include(self, words: list[str], path: str, lineno: int) -> list[_Line]:
        if len(words) != 2:
            self.error(path, lineno, "include takes exactly one file name or glob")
            return []
        if self._depth > 20:
            self.error(path, lineno, "include nested more than 20 deep (loop?)")
            return []
        pattern = words[1]
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(path) or ".", pattern)
        matches = sorted(glob.glob(pattern))
        if not matches:
            self.warn(path, lineno, f"include {words[1]}: no file matches")
        if not self._within_include_limit(path, lineno, len(matches)):
            return []
        out: list[_Line] = []
        self._depth += 1
        try:
            for m in matches:
                out.extend(self.read(m))
        finally:
            self._depth -= 1
        return out


    def _within_include_limit(self, path: str, lineno: int, adding: int) -> bool:
        """Includes are bounded in files as well as depth (MAX_INCLUDED_FILES): a glob fan-out
        that would read thousands of files is refused with file:line, not read for minutes
        (a reload must not run for that long)."""
        if len(self.files) + adding <= MAX_INCLUDED_FILES:
            return True
        self.error(path, lineno, f"include would read more than {MAX_INCLUDED_FILES} files")
        return False


MAX_INCLUDED_FILES = 4096  # files one configuration may read, includes included


def tokenize(line: str) -> list[str]:
    """Split one line into words; braces are words of their own, comments end the line."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
            continue
        if c in "#!":
            break
        if c in "{}":
            words.append(c)
            i += 1
            continue
        if c == '"':
            j = line.find('"', i + 1)
            if j < 0:
                raise ValueError("unterminated quoted string")
            words.append(line[i + 1:j])
            i = j + 1
            continue
        j = i
        while j < n and not line[j].isspace() and line[j] not in '{}"':
            j += 1
        words.append(line[i:j])
        i = j
    return words


def parse_tree(lines: list[_Line], reader: Reader) -> tuple[Statement, ...]:
    """Assemble logical lines into nested statements; brace errors are reported with file:line."""
    # each frame: (opening statement words/file/line, children)
    stack: list[tuple[_Line | None, list[Statement]]] = [(None, [])]

    def close() -> None:
        opener, children = stack.pop()
        assert opener is not None
        st = Statement(opener.words[0], tuple(opener.words[1:]), opener.file, opener.line, tuple(children))
        stack[-1][1].append(st)

    for ln in lines:
        acc: list[str] = []
        for w in ln.words:
            if w == "{":
                if acc:
                    stack.append((_Line(acc, ln.file, ln.line), []))
                else:
                    # "keyword" on one line and "{" on the next
                    siblings = stack[-1][1]
                    if siblings and siblings[-1].block is None:
                        prev = siblings.pop()
                        stack.append((_Line(list(prev.words), prev.file, prev.line), []))
                    else:
                        reader.error(ln.file, ln.line, "'{' without a keyword")
                        stack.append((_Line(["?"], ln.file, ln.line), []))
                acc = []
            elif w == "}":
                if acc:
                    stack[-1][1].append(Statement(acc[0], tuple(acc[1:]), ln.file, ln.line))
                    acc = []
                if len(stack) == 1:
                    reader.error(ln.file, ln.line, "Extra '}' found")
                else:
                    close()
            else:
                acc.append(w)
        if acc:
            stack[-1][1].append(Statement(acc[0], tuple(acc[1:]), ln.file, ln.line))
    while len(stack) > 1:
        opener = stack[-1][0]
        assert opener is not None
        reader.error(opener.file, opener.line, f"block '{' '.join(opener.words)}' is missing its closing '}}'")
        close()
    return tuple(stack[0][1])
