"""Which data planes exist and how to build one by name (``pylvsd --dataplane NAME``).

Entries are ``"module:Class"`` strings imported on demand, so choosing the proxy never imports
the packet plane's ring code or the kernel plane's netlink code. A class is constructed as
``Class(director, **options)`` and must implement ``pylvs.dataplane.base.DataPlane``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from pylvs.core.director import Director
from pylvs.dataplane.base import DataPlane

DATAPLANES: dict[str, str] = {
    "proxy": "pylvs.dataplane.proxy:ProxyDataPlane",
    "packet": "pylvs.dataplane.packet.dataplane:PacketDataPlane",
    "kernel": "pylvs.dataplane.kernel:KernelDataPlane",
    "xdp": "pylvs.dataplane.xdp.plane:XdpDataPlane",
}
# "auto": the kernel's own IPVS where the kernel has it (as keepalived would use), else the proxy.
AUTO = "auto"
# Options a data plane gets when it runs under the daemon, which drives the core's clock itself
# (Director.tick); a plane used on its own (tests, benchmarks) keeps its defaults.
UNDER_DAEMON: dict[str, dict[str, Any]] = {
    "proxy": {"drive_tick": False},
}
# "none": the table is served and kept (pylvsadm works) but nothing forwards traffic.
NONE = "none"


def available() -> list[str]:
    return [AUTO, NONE, *DATAPLANES]


def kernel_ipvs_present() -> bool:
    """IPVS loaded in this kernel, or shipped as a module it can load."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    release = os.uname().release
    return any(
        os.path.exists(f"/lib/modules/{release}/kernel/net/netfilter/ipvs/ip_vs.ko{ext}")
        for ext in ("", ".xz", ".zst", ".gz")
    )


def resolve(name: str) -> str:
    """The data plane ``name`` stands for on this host ("auto" becomes kernel or proxy)."""
    if name != AUTO:
        return name
    return "kernel" if kernel_ipvs_present() else "proxy"


def create(name: str, director: Director, **options: Any) -> DataPlane | None:
    """Build the named data plane; ``None`` for "none". ``KeyError`` for an unknown name."""
    name = resolve(name)
    if name == NONE:
        return None
    module_name, _, cls_name = DATAPLANES[name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    plane: DataPlane = cls(director, **options)
    return plane
