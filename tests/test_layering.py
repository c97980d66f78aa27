"""The package's layering, read from the sources: every import of regate's own modules goes down
the floors (common → compiler → enforcer | audit → devtools → cli; audit never imports the enforcer), nothing imports the tests or the
benchmarks, and no two modules import each other, directly or round a loop."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What each package may import of regate besides itself (DESIGN.md §7: the enforcer may use the
# compiler's loader and model; the compiler never imports the enforcer).
ALLOWED = {
    "regate.common": set(),
    "regate.compiler": {"regate.common"},
    "regate.enforcer": {"regate.common", "regate.compiler"},
    "regate.devtools": {"regate.common"},
    "regate.audit": {"regate.common", "regate.compiler"},
    "regate": {"regate.common", "regate.compiler", "regate.enforcer", "regate.devtools", "regate.audit"},
}


def _modules() -> dict[str, Path]:
    """Every product module by import name, from the package mapping in pyproject.toml."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in mapping.items():
        for path in (ROOT / folder).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
        for sub in (ROOT / folder).iterdir():
            if (sub / "__init__.py").is_file() and f"{package}.{sub.name}" not in mapping:
                for path in sub.glob("*.py"):
                    stem = f"{package}.{sub.name}"
                    found[stem if path.stem == "__init__" else f"{stem}.{path.stem}"] = path
    return found


def _imports(name: str, path: Path, modules=()) -> set[str]:
    """The modules `name` imports at any depth, except under `if TYPE_CHECKING:` (no run-time import).
    `from package import module` counts as importing the module, not the package."""
    tree = ast.parse(path.read_text())
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING") for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            named = {f"{base}.{alias.name}" for alias in node.names}
            found |= named if named & set(modules) else {base}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(name, path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def _floor(module: str) -> str:
    return max((p for p in ALLOWED if module == p or module.startswith(p + ".")), key=len)


def test_the_package_mapping_covers_every_product_module():
    names = set(_modules())
    assert {"regate.cli", "regate.common.errors", "regate.compiler.loader", "regate.enforcer.store",
            "regate.enforcer.migrations.v001_initial", "regate.devtools.demo"} <= names


def test_imports_go_down_the_floors():
    wrong = []
    for module, imported in _graph().items():
        floor = _floor(module)
        for target in imported:
            if _floor(target) not in ALLOWED[floor] | {floor}:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_nothing_in_the_product_imports_tests_or_benchmarks():
    wrong = [f"{name} imports {m}" for name, path in _modules().items() for m in _imports(name, path)
             if m.split(".")[0] in ("tests", "bench", "harness", "compiler", "enforcer", "common", "devtools", "audit")]
    assert not wrong, wrong


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ re-exporting its submodules is not a cycle with them.
    edges = {m: {t for t in ts if not (m.startswith(t + ".") and graph.get(t, set()) >= {m})} for m, ts in graph.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, [" -> ".join(c) for c in cycles]
