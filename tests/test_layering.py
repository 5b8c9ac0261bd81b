"""The package's layers: no import cycle, no import up the layer order, no huge file.

The order is the one written in ``brats_mtl``'s top docstring. Every import of every
module under ``src/brats_mtl`` is read with ``ast``, those inside functions too (they
run later, but they still tie the modules together); imports under ``if
TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import brats_mtl

SRC = Path(brats_mtl.__file__).resolve().parent
MAX_LINES = 800

#: Known violations (each with the reason it is allowed); none today.
KNOWN_EXCEPTIONS: set[tuple[str, ...]] = set()


def layer_order() -> list[str]:
    """The layer names of the docstring's indented block, lowest first."""
    doc = brats_mtl.__doc__ or ""
    block = doc.split("::", 1)[1]
    names = []
    for line in block.splitlines()[1:]:
        if not line.strip():
            if names:
                break
            continue
        if not line.startswith("    "):
            break
        names.append(line.split()[0])
    return names


def module_name(path: Path) -> str:
    """``brats_mtl.a.b`` of ``SRC/a/b.py`` (a package: of its ``__init__.py``)."""
    parts = ("brats_mtl", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def lazy_exports(package: str) -> dict[str, str]:
    """Name -> submodule of a package that imports its names on first use.

    Such a package has a module-level ``_EXPORTS = {"name": "submodule", ...}``, read by
    its ``__getattr__``.
    """
    path = MODULES[package]
    if path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return {
                k.value: f"{package}.{v.value}"
                for k, v in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            }
    return {}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST):
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def imports_of(module: str) -> set[str]:
    """The ``brats_mtl`` modules that ``module`` imports.

    A name imported from a package counts as its submodule when there is one.
    """
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            lazy = lazy_exports(source) if source in MODULES else {}
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else lazy.get(alias.name, source))
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> str | None:
    """The layer of a module: its first name below ``brats_mtl`` (None: the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_layer_order_names_every_top_level_module():
    """Every top-level module and package has its place in the order."""
    order = layer_order()
    assert len(order) == len(set(order)), order
    tops = {layer_of(m) for m in MODULES} - {None}
    assert tops <= set(order), f"place these in brats_mtl's layer order: {tops - set(order)}"


def test_no_import_runs_up_the_layers():
    """No module imports from a layer after its own."""
    rank = {name: i for i, name in enumerate(layer_order())}
    bad = []
    for module, deps in GRAPH.items():
        for dep in deps:
            here, there = layer_of(module), layer_of(dep)
            if there is None or here is None or rank[there] <= rank[here]:
                continue
            key = ("import", module, f"brats_mtl.{there}")
            if key not in KNOWN_EXCEPTIONS:
                bad.append(f"{module} ({here}) imports {dep} ({there})")
    assert not bad, "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    """The cycle finder on a toy graph."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    """No modules import each other, directly or through others."""
    graph = {
        m: {d for d in deps if ("import", m, f"brats_mtl.{layer_of(d)}") not in KNOWN_EXCEPTIONS}
        for m, deps in GRAPH.items()
    }
    assert _cycles(graph) == []


def test_no_file_is_over_the_line_limit():
    """Every source file has at most MAX_LINES lines."""
    long = {
        f"{path} has {n} lines"
        for module, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
        and ("lines", module) not in KNOWN_EXCEPTIONS
    }
    assert not long, f"at most {MAX_LINES} lines a file: " + "; ".join(sorted(long))


def test_known_exceptions_are_still_needed():
    """A violation that is gone must leave KNOWN_EXCEPTIONS too."""
    rank = {name: i for i, name in enumerate(layer_order())}
    for kind, module, *rest in KNOWN_EXCEPTIONS:
        if kind == "lines":
            assert len(MODULES[module].read_text().splitlines()) > MAX_LINES, module
        else:
            (target,) = rest
            ups = {
                d
                for d in GRAPH[module]
                if f"brats_mtl.{layer_of(d)}" == target
                and rank[layer_of(d)] > rank[layer_of(module)]
            }
            assert ups, (module, target)
