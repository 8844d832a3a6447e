"""All IPVS schedulers, by the names ipvsadm's ``-s`` takes: the registry.

Each algorithm lives in its own module (``rr.py``, ``wrr.py``, ...) and exports ``SCHEDULER``,
the class. ``SCHEDULER_NAMES`` below is the one list of them: adding a scheduler is its module
plus its name here (the table, keepalived.conf's ``lb_algo`` and the tests all read this list).
``create_scheduler`` raises ``KeyError`` for a name the kernel would not know, which the table
turns into ENOENT ("Scheduler or persistence engine not found").
"""

from __future__ import annotations

import importlib

from pylvs.core.model import VirtualService
from pylvs.core.schedulers.base import Scheduler

__all__ = ["SCHEDULER_NAMES", "Scheduler", "create_scheduler", "scheduler_class"]

# Each name is the module ``pylvs.core.schedulers.<name>``, in ipvsadm's order of its -h text.
SCHEDULER_NAMES = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
)


def scheduler_class(name: str) -> type[Scheduler]:
    if name not in SCHEDULER_NAMES:
        raise KeyError(name)
    module = importlib.import_module(f"pylvs.core.schedulers.{name}")
    cls: type[Scheduler] = module.SCHEDULER
    return cls


def create_scheduler(name: str, service: VirtualService) -> Scheduler:
    return scheduler_class(name)(service)
