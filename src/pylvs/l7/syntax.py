"""nginx configuration syntax: tokens, blocks and ``include``-free directive trees.

Why apart from the directives' meaning: how nginx splits a file (quotes, escapes, ``${var}``,
``{`` ``}`` ``;``) and where it reports a stray brace or an unexpected end of file is one small
grammar, the same for every directive; the ``[emerg]`` words and line numbers of ``-t`` come
from here for syntax errors.

Not for: what a directive means or where it is allowed (``directives``, ``config``).
"""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(Exception):
    """A configuration error, worded like nginx's ``[emerg]`` messages."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        where = f" in {file}:{line}" if file is not None and line is not None else ""
        super().__init__(f"{message}{where}")


@dataclass
class Directive:
    """One directive as written: its words, where it is, and its block if it has one."""

    name: str
    args: list[str]
    file: str
    line: int
    block: list[Directive] | None = None


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def _tokenize(text: str, file: str) -> list[tuple[str, int, bool]]:
    """Split into (token, line, quoted); ``{`` ``}`` ``;`` are their own unquoted tokens."""
    tokens: list[tuple[str, int, bool]] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            tokens.append((c, line, False))
            i += 1
        elif c in "\"'":
            quote, start_line = c, line
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ConfigError('unexpected end of file, expecting ";" or "}"', file, line)
                ch = text[i]
                if ch == "\\" and i + 1 < n and text[i + 1] in _ESCAPES:
                    buf.append(_ESCAPES[text[i + 1]])
                    i += 2
                    continue
                if ch == quote:
                    i += 1
                    break
                if ch == "\n":
                    line += 1
                buf.append(ch)
                i += 1
            if i < n and text[i] not in " \t\r\n;{}":
                raise ConfigError(f'unexpected "{text[i]}"', file, line)
            tokens.append(("".join(buf), start_line, True))
        else:
            start = i
            while i < n and text[i] not in " \t\r\n;{}\"'":
                if text[i] == "$" and i + 1 < n and text[i + 1] == "{":
                    close = text.find("}", i)
                    if close < 0:
                        raise ConfigError("unexpected end of file", file, line)
                    i = close + 1
                    continue
                i += 1
            tokens.append((text[start:i], line, False))
    return tokens


def _parse(tokens: list[tuple[str, int, bool]], file: str, eof_line: int) -> list[Directive]:
    """The directive tree; nginx reports end-of-file errors at ``eof_line``. Blocks nest
    without limit (nginx takes thousands of nested locations), so the open blocks are a list
    here rather than Python's call stack."""
    top: list[Directive] = []
    out = top
    open_blocks: list[list[Directive]] = []  # the enclosing blocks' directive lists
    words: list[str] = []
    for tok, line, quoted in tokens:
        if not quoted and tok == ";":
            if not words:
                raise ConfigError('unexpected ";"', file, line)
            out.append(Directive(words[0], words[1:], file, line))
            words = []
        elif not quoted and tok == "{":
            if not words:
                raise ConfigError('unexpected "{"', file, line)
            d = Directive(words[0], words[1:], file, line, [])
            words = []
            out.append(d)
            open_blocks.append(out)
            assert d.block is not None
            out = d.block
        elif not quoted and tok == "}":
            if words or not open_blocks:
                raise ConfigError('unexpected "}"', file, line)
            out = open_blocks.pop()
        else:
            words.append(tok)
    if words:
        raise ConfigError('unexpected end of file, expecting ";" or "}"', file, eof_line)
    if open_blocks:
        raise ConfigError('unexpected end of file, expecting "}"', file, eof_line)
    return top


def read_tree(path: str) -> list[Directive]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f'open() "{path}" failed ({e.errno}: {e.strerror})') from None
    except UnicodeDecodeError:
        raise ConfigError(f'"{path}" is not UTF-8 text') from None
    return _parse(_tokenize(text, path), path, text.count("\n") + 1)


def printable(text: str) -> str:
    """A name from the file as it may appear in a one-line message: control characters (a
    quoted newline, say) escaped, so an error never spans two lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
