"""The directives that steer how a relative Location is made absolute (``redirect``):
``absolute_redirect``, ``server_name_in_redirect`` and ``port_in_redirect``, flags of the
http, server and location levels, each inherited until a level sets it (nginx's defaults:
on, off, on).

Why apart from ``redirect``: directive rows must not live in a module ``model`` imports."""

from __future__ import annotations

from pylvs.l7.directives import HSL, Level, flag_value, setting
from pylvs.l7.syntax import Directive


@setting("absolute_redirect", HSL, 1, 1, once=True)
def _absolute_redirect(lv: Level, d: Directive) -> None:
    lv.s["absolute_redirect"] = flag_value(d.args[0], d)


@setting("server_name_in_redirect", HSL, 1, 1, once=True)
def _server_name_in_redirect(lv: Level, d: Directive) -> None:
    lv.s["server_name_in_redirect"] = flag_value(d.args[0], d)


@setting("port_in_redirect", HSL, 1, 1, once=True)
def _port_in_redirect(lv: Level, d: Directive) -> None:
    lv.s["port_in_redirect"] = flag_value(d.args[0], d)
