"""The loaded XDP program the fixture tests run frames through (one per test module; a host
that cannot load it skips them with the loader's one-line reason)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pylvs.dataplane.xdp.loader import XdpProgram, XdpUnavailable


@pytest.fixture(scope="module")
def prog() -> Iterator[XdpProgram]:
    try:
        p = XdpProgram()
    except XdpUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield p
    finally:
        p.close()
