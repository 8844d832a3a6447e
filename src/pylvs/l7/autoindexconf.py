"""The autoindex module's directives: ``autoindex``, ``autoindex_exact_size``,
``autoindex_localtime`` (flags) and ``autoindex_format html|xml|json`` at the http, server and
location levels, inherited until a level sets them (``jsonp`` is refused: its callback
checks are not built).

Why apart from ``autoindex``: directive rows must not live in a module ``model`` imports."""

from __future__ import annotations

from typing import Any

from pylvs.l7.autoindex import AutoIndex
from pylvs.l7.directives import HSL, Level, flag_value, setting
from pylvs.l7.syntax import ConfigError, Directive


@setting("autoindex", HSL, 1, 1, once=True)
@setting("autoindex_exact_size", HSL, 1, 1, once=True)
@setting("autoindex_localtime", HSL, 1, 1, once=True)
def _flag(lv: Level, d: Directive) -> None:
    lv.s[d.name] = flag_value(d.args[0], d)


@setting("autoindex_format", HSL, 1, 1, once=True)
def _format(lv: Level, d: Directive) -> None:
    value = d.args[0]
    if value == "jsonp":
        raise ConfigError('"autoindex_format jsonp" is not supported', d.file, d.line)
    if value not in ("html", "xml", "json"):  # nginx's enum slot: no directive name
        raise ConfigError(f'invalid value "{value}"', d.file, d.line)
    lv.s[d.name] = value


def autoindex_of(s: dict[str, Any]) -> AutoIndex | None:
    """A level's autoindex settings, None when it is off."""
    if not s.get("autoindex", False):
        return None
    return AutoIndex(s.get("autoindex_format", "html"), s.get("autoindex_exact_size", True),
                     s.get("autoindex_localtime", False))
