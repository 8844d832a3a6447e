"""Control requests are checked as ipvsadm's command line checks its options, before anything
changes: a refused request gets ipvsadm's words and leaves the table exactly as it was. The
fuzz test throws random JSON at the dispatcher of a live Director's table."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.control import protocol as P
from pylvs.core.director import Director
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    parse_address,
)
from pylvs.core.table import IPVSTable

KEY = ServiceKey.inet(Protocol.TCP, "10.0.0.1", 80)
SPEC = ServiceSpec(KEY, "rr", ServiceFlags.PERSISTENT, 300)
DEST = DestSpec(parse_address("10.0.1.1"), 80, ForwardingMethod.MASQ, 5, 100, 10)


def _director() -> Director:
    d = Director(IPVSTable(), max_connections=1000)
    d.table.add_service(SPEC)
    d.table.add_dest(KEY, DEST)
    return d


def _snapshot(t: IPVSTable) -> Any:
    return ([s.to_wire() for s in t.get_services()], t.get_timeouts(), t.get_sysctl())


def _call(d: Director, op: str, **args: Any) -> dict[str, Any]:
    return P.dispatch(d.table, {"op": op, "args": args})


def _spec(**change: Any) -> dict[str, Any]:
    w = SPEC.to_wire()
    w["key"] = {**w["key"], "port": 8080}
    for k, v in change.items():
        if k.startswith("key."):
            w["key"][k[4:]] = v
        else:
            w[k] = v
    return w


def _dest(**change: Any) -> dict[str, Any]:
    return {**DEST.to_wire(), "addr": "10.0.1.2", **change}


@pytest.mark.parametrize(("op", "args", "error"), [
    ("add_service", {"spec": _spec(**{"key.port": 70000})},
     "illegal virtual server address[:port] specified"),
    ("add_service", {"spec": _spec(**{"key.port": -1})},
     "illegal virtual server address[:port] specified"),
    ("add_service", {"spec": _spec(**{"key.port": "80"})},
     "illegal virtual server address[:port] specified"),
    ("add_service", {"spec": _spec(**{"key.addr": "10.0.0.300"})},
     "illegal virtual server address[:port] specified"),
    ("add_service", {"spec": _spec(**{"key.af": 10})},
     "address family 10 does not match the address 10.0.0.1"),
    ("add_service", {"spec": _spec(**{"key.protocol": 1})}, "invalid protocol"),
    ("add_service", {"spec": _spec(timeout=-1)}, "invalid timeout value `-1' specified"),
    ("add_service", {"spec": _spec(timeout=0)}, "invalid timeout value `0' specified"),
    ("add_service", {"spec": _spec(timeout=86400 * 31 + 1)},
     "invalid timeout value `2678401' specified"),
    ("add_service", {"spec": _spec(netmask=2**32)},
     "illegal virtual server persistent mask specified"),
    ("add_service", {"spec": _spec(flags=0x100)}, "illegal service flags"),
    ("add_service", {"spec": _spec(scheduler="x" * 16)}, "illegal scheduler name"),
    ("add_service", {"spec": _spec(**{"key.fwmark": 2**32})},
     "invalid fwmark value `4294967296' specified"),
    ("add_dest", {"key": KEY.to_wire(), "dest": _dest(weight=-1)}, "illegal weight specified"),
    ("add_dest", {"key": KEY.to_wire(), "dest": _dest(weight=2**31)},
     "illegal weight specified"),
    ("add_dest", {"key": KEY.to_wire(), "dest": _dest(port=65536)},
     "illegal real server address[:port] specified"),
    ("add_dest", {"key": KEY.to_wire(), "dest": _dest(u_threshold=-5)},
     "illegal u_threshold specified"),
    ("add_dest", {"key": KEY.to_wire(), "dest": _dest(l_threshold=True)},
     "illegal l_threshold specified"),
    ("add_dest", {"key": KEY.to_wire(), "dest": _dest(tun_type=7)},
     "illegal tunnel type specified"),
    ("edit_dest", {"key": KEY.to_wire(), "dest": {**DEST.to_wire(), "weight": 65536 * 65536}},
     "illegal weight specified"),
    ("set_timeouts", {"timeouts": [900, -1, 300]}, "invalid timeout value `-1' specified"),
    ("set_timeouts", {"timeouts": [900, 120]}, "--set option requires 3 timeout values"),
    ("del_dest", {"key": KEY.to_wire(), "addr": "10.0.1.1", "port": 99999},
     "illegal real server address[:port] specified"),
    ("start_daemon", {"daemon": {"state": "primary", "mcast_ifn": "eth0", "syncid": 1}},
     "illegal start-daemon parameter specified"),
    ("start_daemon", {"daemon": {"state": "master", "mcast_ifn": "eth0", "syncid": 256}},
     "illegal syncid specified"),
    ("set_sysctl", {"values": {"drop_entry": 9}}, "drop_entry: must be 0, 1, 2 or 3"),
])
def test_a_bad_request_gets_ipvsadms_words_and_changes_nothing(
        op: str, args: dict[str, Any], error: str) -> None:
    d = _director()
    before = _snapshot(d.table)
    reply = _call(d, op, **args)
    assert reply["ok"] is False and reply["errno"] == 22, reply
    assert error in reply["error"]
    assert _snapshot(d.table) == before


def test_the_reported_case_port_70000_is_refused_and_not_saved() -> None:
    """Issue 14: add_service with port 70000 answered "internal error" and stayed in the
    table, so the saved file broke the next restore."""
    d = _director()
    reply = _call(d, "add_service", spec=_spec(**{"key.port": 70000}))
    assert reply["ok"] is False and "internal error" not in reply["error"]
    assert [s.spec.key for s in d.table.get_services()] == [KEY]


def test_good_requests_still_work() -> None:
    d = _director()
    assert _call(d, "add_service", spec=_spec(timeout=86400 * 31))["ok"]
    assert _call(d, "add_dest", key=KEY.to_wire(), dest=_dest(weight=2**31 - 1))["ok"]
    assert _call(d, "set_timeouts", timeouts=[0, 0, 60])["ok"]
    assert d.table.get_timeouts().udp == 60
    assert _call(d, "set_sysctl", values={"drop_packet": 1})["ok"]
    assert _call(d, "get_sysctl")["result"]["drop_packet"] == 1
    assert len(d.table.get_services()) == 2


# ---- fuzz --------------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.sampled_from([0, 1, 65535, 65536, -1]),
    st.text(max_size=20), st.sampled_from(["10.0.0.1", "::1", "10.0.1.1", "rr", "master", "sip"]),
    st.floats(allow_nan=True),
)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)

_TEMPLATES: dict[str, dict[str, Any]] = {
    "add_service": {"spec": _spec()},
    "edit_service": {"spec": SPEC.to_wire()},
    "del_service": {"key": KEY.to_wire()},
    "get_service": {"key": KEY.to_wire()},
    "add_dest": {"key": KEY.to_wire(), "dest": _dest()},
    "edit_dest": {"key": KEY.to_wire(), "dest": DEST.to_wire()},
    "del_dest": {"key": KEY.to_wire(), "addr": "10.0.1.1", "port": 80},
    "zero": {"key": KEY.to_wire()},
    "set_timeouts": {"timeouts": [900, 120, 300]},
    "start_daemon": {"daemon": {"state": "master", "mcast_ifn": "eth0", "syncid": 1}},
    "stop_daemon": {"state": "master"},
    "set_sysctl": {"values": {"drop_entry": 1}},
}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def _requests(draw: st.DrawFn) -> Any:
    """A valid request with some of its values replaced by random JSON, or random JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_json)
    op = draw(st.sampled_from([*_TEMPLATES, *P.OPERATIONS, "nope"]))
    args = copy.deepcopy(_TEMPLATES.get(op, {}))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(args)
        path = draw(st.sampled_from(paths))
        value = draw(_json)
        if not path:
            args = value
            break
        target = args
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
    return {"op": op, "args": args}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(_requests(), min_size=1, max_size=5))
def test_random_requests_never_raise_and_a_refused_one_changes_nothing(requests: list[Any]) -> None:
    d = _director()
    for request in requests:
        before = _snapshot(d.table)
        reply = P.dispatch(d.table, request)
        assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
        P.encode(reply)  # the reply is JSON
        if not reply["ok"]:
            assert reply["errno"] != 5, reply  # never an "internal error"
            assert isinstance(reply["error"], str) and reply["error"]
            assert _snapshot(d.table) == before, request
