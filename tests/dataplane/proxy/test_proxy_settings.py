"""The proxy's timeouts and limits: the words as written (``ProxySettings``, the restore-file
directive, the environment), and what they do to live relays in-process (real sockets on
127.0.0.0/8): the client timeout, the tunnel timeout that replaces it once both sides have
spoken, and a per-service change reaching relays already open.
"""

from __future__ import annotations

import asyncio

import pytest

from pylvs.core.director import Director
from pylvs.core.model import ServiceKey
from pylvs.dataplane.proxy import ProxyDataPlane
from pylvs.dataplane.proxy.settings import (
    ProxySettings,
    SettingsError,
    Timeouts,
    format_directive,
    parse_directive,
)
from tests.dataplane.proxy.test_proxy import (
    TIMEOUT,
    VIP,
    add_service,
    line_servers,
    proxy_test,
    until,
)


def test_words_change_the_defaults_and_read_back() -> None:
    s = ProxySettings.parse("server=5 client=10s tunnel=3600 maxconn=500 queue=0.5 retries=2")
    assert s.timeouts == Timeouts(connect=3.0, server=5.0, client=10.0, tunnel=3600.0)
    assert (s.maxconn, s.queue, s.retries) == (500, 0.5, 2)
    assert ProxySettings.parse(s.timeouts.words()).timeouts == s.timeouts
    assert ProxySettings.parse("").timeouts == Timeouts()


@pytest.mark.parametrize(("text", "message"), [
    ("servr=5", "expected one of connect, server, client, tunnel"),
    ("server", "as NAME=SECONDS"),
    ("server=abc", "'abc' is not a number"),
    ("server=nan", "is not a number"),
    ("client=-1", "timeout client: -1.0 is not 0-"),
    ("connect=0", "timeout connect: must be more than 0 seconds"),
    ("maxconn=0", "maxconn: 0 is not at least 1"),
    ("maxconn=1.5", "maxconn: 1.5 is not a whole number"),
    ("queue=100", "queue: 100.0 is not 0-60 seconds"),
    ("tunnel=1e12", "timeout tunnel"),
])
def test_bad_words_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        ProxySettings.parse(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_restore_file_directive_round_trips() -> None:
    key = ServiceKey.inet(6, "10.0.0.1", 80)
    t = Timeouts(server=5, client=30)
    line = format_directive(key, t)
    assert line == "# pylvs-proxy: -t 10.0.0.1:80 connect=3 server=5 client=30 tunnel=0"
    assert parse_directive(line) == (key, t)
    key6 = ServiceKey.inet(17, "2001:db8::1", 53)
    assert parse_directive(format_directive(key6, t)) == (key6, t)
    assert parse_directive("# a comment") is None
    assert parse_directive("-A -t 10.0.0.1:80 -s rr") is None
    for bad in ("# pylvs-proxy: -t 10.0.0.1 server=5", "# pylvs-proxy: -x 10.0.0.1:80",
                "# pylvs-proxy: -t 10.0.0.1:70000 server=5", "# pylvs-proxy: -t 10.0.0.1:80 x=1"):
        with pytest.raises(SettingsError):
            parse_directive(bad)


def test_the_environment_gives_defaults_and_per_service_timeouts() -> None:
    s = ProxySettings.from_env({
        "PYLVS_PROXY_TIMEOUTS": "server=7 maxconn=99",
        "PYLVS_PROXY_SERVICE_TIMEOUTS": "-t 10.0.0.1:80 client=4; -u [2001:db8::1]:53 server=2",
    })
    assert s.maxconn == 99 and s.timeouts.server == 7
    assert s.for_service(ServiceKey.inet(6, "10.0.0.1", 80)) == Timeouts(server=7, client=4)
    assert s.for_service(ServiceKey.inet(17, "2001:db8::1", 53)).server == 2
    assert s.for_service(ServiceKey.inet(6, "10.0.0.2", 80)) == s.timeouts
    with pytest.raises(SettingsError):
        ProxySettings.from_env({"PYLVS_PROXY_SERVICE_TIMEOUTS": "10.0.0.1:80 client=4"})


def test_the_plane_refuses_bad_settings_before_starting() -> None:
    with pytest.raises(ValueError, match="connect"):
        ProxyDataPlane(Director(), connect_timeout=0)


@proxy_test(settings=ProxySettings.parse("client=0.6 tunnel=2.5"))
async def test_the_tunnel_timeout_replaces_the_client_timeout_once_both_sides_spoke(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        # An idle client: closed after the client timeout.
        r0, w0 = await asyncio.open_connection(VIP, key.port)
        # A conversation: the tunnel timeout applies.
        r1, w1 = await asyncio.open_connection(VIP, key.port)
        w1.write(b"x\n")
        assert await asyncio.wait_for(r1.readline(), TIMEOUT) == b"A:x\n"
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(r0.read(), TIMEOUT) == b""
        assert asyncio.get_running_loop().time() - t0 < 2.5
        await asyncio.sleep(1.0)  # well past the client timeout
        assert plane.describe()["counters"]["tcp_relays"] == 1
        assert await asyncio.wait_for(r1.read(), TIMEOUT) == b""  # the tunnel timeout ends it
        c = plane.describe()["counters"]
        assert (c["timed_out_client"], c["timed_out_tunnel"], c["tcp_relays"]) == (1, 1, 0)
        states = sorted(e.state for e in director.connection_entries())
        assert states == ["TIME_WAIT", "TIME_WAIT"]
        w0.close()
        w1.close()


@proxy_test(settings=ProxySettings.parse("client=30"))
async def test_a_service_timeout_change_reaches_open_relays_and_the_listing(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        r, w = await asyncio.open_connection(VIP, key.port)
        await until(lambda: plane.describe()["counters"]["tcp_relays"] == 1, "relay")
        await asyncio.sleep(0.5)  # a housekeeping pass or two
        (entry,) = director.connection_entries()
        assert entry.state == "ESTABLISHED" and 28 <= entry.expires <= 32
        plane.set_service_timeouts(key, Timeouts(client=1.0))
        assert plane.service_timeouts(key).client == 1.0
        assert plane.describe()["timeouts"][str(key)].startswith("connect=3 server=30 client=1")
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b""
        assert plane.describe()["counters"]["timed_out_client"] == 1
        plane.set_service_timeouts(key, None)
        assert plane.service_timeouts(key).client == 30
        w.close()
