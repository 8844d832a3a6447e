"""Which data planes exist and how to build one by name (``pylvsd --dataplane NAME``).

Entries are ``"module:Class"`` strings imported on demand, so choosing the proxy never imports
the packet plane's ring code or the kernel plane's netlink code. A class is constructed as
``Class(director, **options)`` and must implement ``pylvs.dataplane.base.DataPlane``.
"""

from __future__ import annotations

import importlib
from typing import Any

from pylvs.core.director import Director
from pylvs.dataplane.base import DataPlane

DATAPLANES: dict[str, str] = {
    "proxy": "pylvs.dataplane.proxy:ProxyDataPlane",
    "packet": "pylvs.dataplane.packet.dataplane:PacketDataPlane",
}
# Options a data plane gets when it runs under the daemon, which drives the core's clock itself
# (Director.tick); a plane used on its own (tests, benchmarks) keeps its defaults.
UNDER_DAEMON: dict[str, dict[str, Any]] = {
    "proxy": {"drive_tick": False},
}
# "none": the table is served and kept (pylvsadm works) but nothing forwards traffic.
NONE = "none"


def available() -> list[str]:
    return [NONE, *DATAPLANES]


def create(name: str, director: Director, **options: Any) -> DataPlane | None:
    """Build the named data plane; ``None`` for "none". ``KeyError`` for an unknown name."""
    if name == NONE:
        return None
    module_name, _, cls_name = DATAPLANES[name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    plane: DataPlane = cls(director, **options)
    return plane
