"""The directives of nginx's ``auth_basic`` module and the core's ``satisfy``: ``auth_basic``
(a realm, variables allowed, or ``off``), ``auth_basic_user_file`` (a path, variables allowed,
relative to the configuration file's directory) and ``satisfy all|any``, each at the http,
server and location levels and inherited until a level sets it.

Why apart from ``authbasic``: directive rows must not live in a module ``model`` imports."""

from __future__ import annotations

from pylvs.l7.directives import HSL, Level, setting, template
from pylvs.l7.syntax import ConfigError, Directive


@setting("auth_basic", HSL, 1, 1, once=True)
def _auth_basic(lv: Level, d: Directive) -> None:
    lv.s["auth_basic"] = template(d.args[0], d)


@setting("auth_basic_user_file", HSL, 1, 1, once=True)
def _auth_basic_user_file(lv: Level, d: Directive) -> None:
    path = d.args[0]
    if not path.startswith("$"):  # nginx: relative to the configuration file's directory
        path = lv.reader.abspath(path)
    lv.s["auth_basic_user_file"] = template(path, d)


@setting("satisfy", HSL, 1, 1, once=True)
def _satisfy(lv: Level, d: Directive) -> None:
    if d.args[0] not in ("all", "any"):  # nginx's enum slot: no directive name in the message
        raise ConfigError(f'invalid value "{d.args[0]}"', d.file, d.line)
    lv.s["satisfy_any"] = d.args[0] == "any"
