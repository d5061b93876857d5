"""The package's structure, read from the source with `ast`: no import cycle (function-level imports
included), no private name imported from another module, no branch on an estimator's name or list of
estimator names outside estimators/ (each estimator declares what training needs; the registry is
the one list).

An edge a -> b is any `import b` / `from b import x` anywhere in module a (at module level, inside a
function or under TYPE_CHECKING alike); `from p import m` where p.m is a module is an edge to p.m.
Parent packages' __init__ are not edges (every submodule would otherwise import its package).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(root: Path = SRC, package: str = "choicegrad") -> dict[str, Path]:
    """{dotted module name: file} of every module of `package` under root."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the package modules it imports anywhere in its source}."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:                                     # relative: from .x import y
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        edges.add(sub)
                    elif target in modules:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_cycle_finder_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "choicegrad"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from choicegrad.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from choicegrad import a\n")
    (pkg / "c.py").write_text("from choicegrad.a import x\n")
    graph = import_graph(module_files(tmp_path))
    assert graph["choicegrad.sub.b"] == {"choicegrad.a"} and graph["choicegrad.c"] == {"choicegrad.a"}
    assert cycles(graph) == [["choicegrad.a", "choicegrad.sub.b"]]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph(module_files())) == []


def private_imports(modules: dict[str, Path]) -> list[str]:
    """'module <- other._name' for every `from other import _name` across modules of the package."""
    found = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("choicegrad"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != name:
                        found.append(f"{name} <- {node.module}.{alias.name}")
    return found


def test_no_private_name_imported_across_modules():
    assert private_imports(module_files()) == []


def estimator_name_uses(modules: dict[str, Path]) -> list[str]:
    """'module:line' where code outside estimators/ compares with an estimator's name or lists two or
    more of them (a default name, such as GeneratorFit's "reinforce", is an assignment, not a branch)."""
    from choicegrad.estimators import available

    names = set(available())
    found = []
    for name, path in modules.items():
        if name.startswith("choicegrad.estimators"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(x, ast.Constant) and x.value in names for x in sides):
                    found.append(f"{name}:{node.lineno}")
            elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                listed = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
                if len(listed) >= 2:
                    found.append(f"{name}:{node.lineno} {listed}")
    return found


def test_no_estimator_name_branch_or_list_outside_the_estimators():
    assert estimator_name_uses(module_files()) == []


if __name__ == "__main__":   # every cycle of the package, for the record
    for component in cycles(import_graph(module_files())):
        print(" <-> ".join(component))
