"""The layout's rules, checked on the source itself so they cannot drift (README "Architecture").

- Subsystems form layers; a module imports only its own layer or lower ones.
- No import cycles between modules, counting every import in a file: at the top, inside a
  function (lazy) and under ``TYPE_CHECKING`` (a type-only cycle is still a design cycle).
- No source file over 800 lines unless it says at the top why it is a hot path kept whole.
- No ``asyncio.wait_for`` in the source: Python 3.11's returns the result and drops a
  cancellation that arrives with it, so a loop around it cannot be stopped (a keepalived stop
  that never ended, a reload that left old checkers and scripts running); ``asyncio.timeout``
  lets the cancellation through.
- No test imports a private name (``_x``) or private module of another subsystem.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "pylvs"
TESTS = ROOT / "tests"

# Lowest first. A subsystem may import its own layer's subsystems and any lower layer's,
# provided the module graph stays acyclic.
LAYERS: list[set[str]] = [
    {"__init__", "core"},
    {"ipvsadm", "config", "trackers", "bpf", "libbpf", "control", "netlink", "service"},
    {"vrrp", "health", "dataplane", "l7", "hostsetup", "metrics"},
    {"director", "keepalived", "lab", "demo", "scaleout"},
    {"cli"},
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}

MAX_LINES = 800
HOT_PATH_MARK = "hot path kept whole:"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def subsystem(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every pylvs module ``path`` imports, wherever the import statement is, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pylvs":
                    yield resolve(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "pylvs":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # ``from pylvs.x import y`` names module pylvs.x.y when y is a module.
                yield (sub if sub in known else resolve(target, known)), node.lineno


def resolve(name: str, known: set[str]) -> str:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, dict[str, int]]:
    modules = source_modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imported_modules(path, known):
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def test_every_subsystem_has_a_layer() -> None:
    missing = sorted({subsystem(m) for m in source_modules()} - set(LAYER_OF))
    assert not missing, f"subsystems without a layer in LAYERS (add them, README too): {missing}"


def test_no_upward_imports() -> None:
    graph = import_graph()
    modules = source_modules()
    bad = []
    for src, edges in graph.items():
        for dst, line in edges.items():
            a, b = subsystem(src), subsystem(dst)
            if LAYER_OF.get(b, -1) > LAYER_OF.get(a, -1):
                rel = modules[src].relative_to(ROOT)
                bad.append(f"{rel}:{line}: {a} (layer {LAYER_OF.get(a)}) imports {dst} (layer {LAYER_OF.get(b)})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in colour:
                continue
            if colour[nxt] == GREY:
                return [*stack[stack.index(nxt):], nxt]
            if colour[nxt] == WHITE and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    graph = import_graph()
    # A package's __init__ re-exporting its own modules is not a cycle of design: the child
    # importing a sibling resolves through the package, so edges from a module to its own
    # ancestor packages are left out.
    for src, edges in graph.items():
        for dst in list(edges):
            if src.startswith(dst + "."):
                del edges[dst]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_no_oversized_source_files() -> None:
    big = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().count("\n")
        if lines > MAX_LINES and HOT_PATH_MARK not in path.read_text()[:4000]:
            big.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not big, (
        f"source files over {MAX_LINES} lines without a '{HOT_PATH_MARK}' justification:\n"
        + "\n".join(big)
    )


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_wait_for() -> None:
    users = [str(p.relative_to(ROOT)) for p in SRC.rglob("*.py")
             if any(isinstance(n, ast.Attribute) and n.attr == "wait_for"
                    for n in ast.walk(ast.parse(p.read_text())))]
    assert not users, f"asyncio.wait_for drops cancellations on Python 3.11; use asyncio.timeout: {users}"


def test_tests_use_only_public_names_of_other_subsystems() -> None:
    known = set(source_modules())
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS)
        own = rel.parts[0] if len(rel.parts) > 1 else None
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.split(".")[0] != "pylvs" or node.level:
                continue
            target_sub = subsystem(resolve(node.module, known) or node.module)
            if target_sub == own:
                continue
            private_module = any(is_private(p) for p in node.module.split(".")[1:])
            private_names = [a.name for a in node.names if is_private(a.name)
                             and f"{node.module}.{a.name}" not in known]
            if private_module or private_names:
                bad.append(f"tests/{rel}:{node.lineno}: {node.module} {private_names or ''}")
    assert not bad, "tests importing private names of another subsystem:\n" + "\n".join(bad)
