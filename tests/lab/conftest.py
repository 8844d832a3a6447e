"""Fixtures for tests that need the namespace lab: skip cleanly without root or iproute2."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator

import pytest

from pylvs.lab import Lab


def lab_id() -> str:
    """A lab id unique to this test run (pid + random), so tests run in parallel."""
    return f"{os.getpid() % 1000}{random.randrange(36**3):x}"[:8]


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    need_root()
    lb = Lab(lab_id())
    try:
        lb.up()
        yield lb
    finally:
        lb.down()
