"""All IPVS schedulers, by the names ipvsadm's ``-s`` takes.

Each algorithm lives in its own module (``rr.py``, ``wrr.py``, ...) and exports ``SCHEDULER``,
the class. ``create_scheduler`` raises ``KeyError`` for a name the kernel would not know, which
the table turns into ENOENT ("Scheduler or persistence engine not found").
"""

from __future__ import annotations

import importlib

from pylvs.core.model import SCHEDULER_NAMES, VirtualService
from pylvs.core.schedulers.base import Scheduler

__all__ = ["SCHEDULER_NAMES", "Scheduler", "create_scheduler", "scheduler_class"]


def scheduler_class(name: str) -> type[Scheduler]:
    if name not in SCHEDULER_NAMES:
        raise KeyError(name)
    module = importlib.import_module(f"pylvs.core.schedulers.{name}")
    cls: type[Scheduler] = module.SCHEDULER
    return cls


def create_scheduler(name: str, service: VirtualService) -> Scheduler:
    return scheduler_class(name)(service)
