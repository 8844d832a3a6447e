"""The value readers: one convention (a value or Invalid with the diagnostic), two wordings."""

from __future__ import annotations

import pytest

from pylvs.config.grammar import Statement
from pylvs.config.values import (
    LVS_WORDING,
    VRRP_WORDING,
    Invalid,
    Report,
    boolean,
    hex_string,
    integer,
    number,
    port,
)


def st(*words: str) -> Statement:
    return Statement(words[0], tuple(words[1:]), "v.conf", 7)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: integer(st("priority", "abc"), 1, 255, wording=VRRP_WORDING), "'priority': invalid number 'abc'"),
    (lambda: integer(st("priority", "300"), 1, 255, wording=VRRP_WORDING), "'priority': number '300' outside range [1, 255]"),
    (lambda: number(st("advert_int", "0"), 0.01, 255, wording=VRRP_WORDING), "'advert_int': number '0' outside range [0.01, 255]"),
    (lambda: integer(st("weight", "x"), 0, 10, wording=LVS_WORDING), "'weight': 'x' is not an integer"),
    (lambda: number(st("delay_loop", "0"), 0.000001, 4294.967295), "'delay_loop': 0 outside range [1e-06, 4294.97]"),
    (lambda: integer(st("weight"), 0, 10), "'weight' needs a value"),
    (lambda: port(st("x"), "70000"), "port 70000 outside range [0, 65535]"),
    (lambda: boolean(st("alpha", "maybe")), "'alpha': 'maybe' is not a boolean"),
    (lambda: hex_string(st("payload", "zz"), "zz", wildcards=False), "'zz' is not a hex string"),
])
def test_a_bad_value_raises_its_diagnostic(call: object, message: str) -> None:
    with pytest.raises(Invalid) as err:
        call()  # type: ignore[operator]
    report = Report()
    report.invalid(err.value)
    assert [str(d) for d in report.diagnostics] == [f"v.conf:7: error: {message}"]


def test_good_values() -> None:
    assert integer(st("w", "5"), 0, 10) == 5 and number(st("d", "1.5"), 0, 2) == 1.5
    assert boolean(st("alpha")) and not boolean(st("alpha", "off"))
    assert hex_string(st("p"), "Ab12f 3 X", wildcards=True) == (b"\xab\x12\x0f\x03\x00", b"\xff\xff\xff\xff\xf0")


def test_already_reported_adds_nothing() -> None:
    report = Report()
    report.invalid(Invalid.reported())
    assert report.diagnostics == []
