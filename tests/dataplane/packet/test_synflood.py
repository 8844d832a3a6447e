"""A spoofed-SYN flood through the packet plane, from the client namespace, while a legitimate
client keeps connecting: with IPVS's defences (on by default) at least 99 % of the legitimate
connections succeed during the flood and after it, and the table never passes its size. With
them off, the same flood locks the client out: the test can fail.

Bounded: 8 s of flood at a paced 8,000 SYNs/s (64,000 frames) against a table of 8,000 entries,
so the table is full within the first second; 4 s measured after. The flood generator and the
client are ``bench/bench_synflood.py``'s roles."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.packet.conftest import Cluster, cluster_fixture

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_synflood.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_synflood", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_synflood", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from cluster_fixture("dr")


def _flood(cluster: Cluster, defence: bool) -> dict[str, Any]:
    cluster.service("rr")
    result: dict[str, Any] = _bench().run_flood(
        cluster, rate=8000, seconds=8, count=64_000, after=4, max_connections=8000,
        defence=defence)
    return result


def test_legitimate_clients_are_served_through_a_syn_flood(cluster: Cluster) -> None:
    r = _flood(cluster, defence=True)
    attempts, ok = r["legit_during"]
    assert r["syns_sent"] >= 40_000, r  # the flood was big enough to fill the table 5 times
    assert attempts >= 50, r
    assert ok >= 0.99 * attempts, r
    late_attempts, late_ok = r["legit_late"]  # with the table full
    assert late_attempts >= 30 and late_ok >= 0.99 * late_attempts, r
    after_attempts, after_ok = r["legit_after"]
    assert after_attempts and after_ok >= 0.99 * after_attempts, r
    assert r["table_max"] <= 8000, r  # bounded by max_connections
    assert r["table_max"] >= 7000, r  # and the flood did fill it
    assert r["settings"]["evicted_entries"] > 30_000, r


@pytest.fixture
def fresh_cluster() -> Iterator[Cluster]:
    """A director of its own: the defended flood's half-open entries, expiring during the
    control's flood, would free slots and let clients in that the control says cannot."""
    yield from cluster_fixture("dr")


def test_without_the_defence_the_same_flood_locks_clients_out(fresh_cluster: Cluster) -> None:
    """The control: drop_entry and secure_tcp at 0, as before the defence."""
    r = _flood(fresh_cluster, defence=False)
    late_attempts, late_ok = r["legit_late"]  # once the table is full: nobody gets in
    assert late_ok <= 2 and late_ok < late_attempts, json.dumps(r)
    assert r["table_max"] <= 8000 and r["settings"]["refused_full"] > 0, r
