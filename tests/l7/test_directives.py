"""The directive table (``pylvs.l7.directives``): every row's contexts give nginx's "is not allowed
here" with file:line, and a row added with ``setting`` is checked and read with no other change
(the way a new directive is added)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylvs.l7 import directives
from pylvs.l7.config import ConfigError, load
from pylvs.l7.directives import DIRECTIVES, HTTP, LOCATION, MAIN, SERVER, Level, setting

# where a directive is put to test a context, and the line it is then on
_PLACES = {
    MAIN: ("{d}\nevents {{}}\nhttp {{ server {{ listen 127.0.0.1:8080; }} }}\n", 1),
    HTTP: ("events {{}}\nhttp {{\n{d}\nserver {{ listen 127.0.0.1:8080; }} }}\n", 3),
    SERVER: ("events {{}}\nhttp {{ server {{ listen 127.0.0.1:8080;\n{d}\n}} }}\n", 3),
    LOCATION: ("events {{}}\nhttp {{ server {{ listen 127.0.0.1:8080; location / {{\n{d}\n}} }} }}\n", 3),
}


def _write(tmp_path: Path, text: str) -> str:
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return str(conf)


@pytest.mark.parametrize("name", sorted(n for n in DIRECTIVES if "@" not in n))
def test_every_row_refuses_the_contexts_it_does_not_list(tmp_path: Path, name: str) -> None:
    spec = DIRECTIVES[name]
    outside = [c for c in (MAIN, HTTP, SERVER, LOCATION) if c not in spec.contexts]
    if not outside:
        pytest.skip("allowed everywhere")
    args = " x" * max(spec.lo, 1 if spec.hi != 0 else 0)
    text = f"{name}{args} {{}}" if spec.block else f"{name}{args};"
    for context in outside:
        template, line = _PLACES[context]
        path = _write(tmp_path, template.format(d=text))
        with pytest.raises(ConfigError) as e:
            load(path)
        assert str(e.value) == f'"{name}" directive is not allowed here in {path}:{line}', context


def test_a_new_row_is_checked_and_read_with_no_other_change(tmp_path: Path) -> None:
    def parse(lv: Level, d: directives.Directive) -> None:
        lv.s["index"] = (d.args[0] + ".html",)

    setting("test_index_stem", (HTTP, SERVER), 1, 1, once=True)(parse)
    try:
        base = "events {{}}\nhttp {{ server {{ listen 127.0.0.1:8080;\n{d}\n}} }}\n"
        cfg = load(_write(tmp_path, base.format(d="test_index_stem start;")))
        assert cfg.servers[0].fallback.index == ("start.html",)
        path = _write(tmp_path, base.format(d="test_index_stem a b;"))
        with pytest.raises(ConfigError, match=r'invalid number of arguments in "test_index_stem"'):
            load(path)
        path = _write(tmp_path, base.format(d="test_index_stem a; test_index_stem b;"))
        with pytest.raises(ConfigError, match=r'"test_index_stem" directive is duplicate in '):
            load(path)
        path = _write(tmp_path, "events {}\nhttp { server { listen 127.0.0.1:8080; "
                                "location / {\ntest_index_stem a;\n} } }\n")
        with pytest.raises(ConfigError, match=r"is not allowed here in .*:3$"):
            load(path)
    finally:
        del DIRECTIVES["test_index_stem"]
