"""The package's import structure (issue 37): no import loops between wmgym's modules, and no
module reaching into another module's private names.

Both are read from the source with `ast`, so every import counts: top-level, inside functions
(lazy imports) and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wmgym

PACKAGE = Path(wmgym.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse_modules() -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p): (p, ast.parse(p.read_text(), filename=str(p))) for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, tree: ast.Module, modules) -> dict[str, list[tuple[str, int]]]:
    """wmgym modules `name` imports -> [(the names it takes from them, line)]; `from wmgym.a import b`
    where b is a submodule counts as importing wmgym.a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, list[tuple[str, int]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.setdefault(alias.name, []).append(("", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    found.setdefault(submodule, []).append(("", node.lineno))
                elif source in modules:
                    found.setdefault(source, []).append((alias.name, node.lineno))
    found.pop(name, None)
    return found


def import_graph() -> dict[str, dict[str, list[tuple[str, int]]]]:
    modules = parse_modules()
    return {name: imported_modules(name, path, tree, modules) for name, (path, tree) in modules.items()}


def import_cycles(graph: dict[str, dict]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_import_cycles_finds_a_loop():
    """The checker itself: a -> b -> c -> a is one loop, d outside it."""
    graph = {"a": {"b": []}, "b": {"c": []}, "c": {"a": [], "d": []}, "d": {}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_wmgym_has_no_import_loops():
    graph = import_graph()
    assert "wmgym.model.world_model" in graph and graph["wmgym.model.world_model"], "the graph reads the package"
    cycles = import_cycles(graph)
    detail = "\n".join(" <-> ".join(c) + ": " + "; ".join(f"{a} -> {b} (line {graph[a][b][0][1]})"
                                                        for a in c for b in graph[a] if b in c) for c in cycles)
    assert not cycles, f"{len(cycles)} import loops:\n{detail}"


def private_names_defined(modules) -> dict[str, set[str]]:
    """Private name ("_x", not dunder) -> the modules that define it (function, class, method,
    or an attribute assigned on self)."""
    defined: dict[str, set[str]] = {}
    for name, (_, tree) in modules.items():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.attr for t in node.targets
                         if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"]
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    defined.setdefault(n, set()).add(name)
    return defined


def private_uses() -> list[str]:
    """Every place a wmgym module takes a private name from another module: `from wmgym.x import _y`,
    `x._y` on an imported wmgym module, or `obj._y` where `_y` is defined only in other modules
    (a private method of another module's class)."""
    modules = parse_modules()
    defined = private_names_defined(modules)
    found = []
    for name, (path, tree) in modules.items():
        module_aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                module_aliases |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("wmgym")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wmgym"):
                found += [f"{name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
                module_aliases |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in modules}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            on_module = isinstance(owner, ast.Name) and owner.id in module_aliases
            if on_module or node.attr in defined and name not in defined[node.attr]:
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_uses_another_modules_private_names():
    uses = private_uses()
    assert not uses, "private names used from outside their module:\n" + "\n".join(uses)


def test_the_model_imports_nothing_from_the_simulator_the_actions_or_the_layers_above():
    """wmgym.model reads its action spec and condition features from its config (issue 37): it
    imports only its own modules and the writer of model directories (wmgym.outputs)."""
    graph = import_graph()
    allowed = lambda target: target.startswith("wmgym.model") or target == "wmgym.outputs"
    outside = [f"{name} -> {target} (line {lines[0][1]})" for name, targets in graph.items() if name.startswith("wmgym.model")
               for target, lines in targets.items() if not allowed(target)]
    assert not outside, "wmgym.model imports from outside it:\n" + "\n".join(outside)
