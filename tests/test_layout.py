"""The package's layout: imports of r2sft's own modules run one way (no circles), and an
import inside a function says why it cannot be at the top of its module.

Read from the source with ``ast`` (nothing is imported), so the test sees every module,
whatever optional dependencies this machine has.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "r2sft"
LAZY_MARK = "# lazy:"

# Imports the source makes dynamically (invisible to ast): r2sft.tasks imports its task
# modules with importlib, all but the helpers it names.
_TASK_HELPERS = {"base", "args", "files", "extraction"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the r2sft module imported
    line: int
    text: str  # the import statement's source lines
    top_level: bool  # False: inside a function or class body


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> list[str]:  # fmt: skip
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    # ``from package import module`` imports the module; ``from module import name`` the module.
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            for alias in node.names]  # fmt: skip


def collect_imports(sources: dict[str, tuple[str, bool]]) -> list[Import]:
    """Every import of a module in ``sources`` (name -> (source, is_package)) by another."""
    known = set(sources)
    found = []
    for module, (source, is_package) in sources.items():
        tree = ast.parse(source)
        lines = source.splitlines()
        nested = {
            id(inner)
            for scope in ast.walk(tree)
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            for inner in ast.walk(scope)
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            for target in _targets(node, module, is_package, known):
                if target in known and target != module:
                    found.append(Import(module, target, node.lineno, text, id(node) not in nested))
    return found


def lazy_reason(text: str) -> str:
    """The reason after ``# lazy:`` in an import's source lines ('' when there is none)."""
    _, mark, reason = text.partition(LAZY_MARK)
    return reason.strip() if mark else ""


def find_cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path, PACKAGE): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def import_graph(imports: list[Import], modules: set[str]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in modules}
    for item in imports:
        edges[item.module].add(item.target)
    tasks = {m for m in modules if m.startswith("r2sft.tasks.") and m.count(".") == 2}
    edges["r2sft.tasks"] |= {m for m in tasks if m.rsplit(".", 1)[1] not in _TASK_HELPERS}
    return edges


# ----------------------------------------------------------------------------- the checks


def test_no_import_circles_in_r2sft() -> None:
    sources = package_sources()
    # Imports inside functions count too: one that closes a circle only hides it.
    cycles = find_cycles(import_graph(collect_imports(sources), set(sources)))
    assert not cycles, f"import circles in r2sft: {[sorted(cycle) for cycle in cycles]}"


def test_imports_inside_functions_say_why() -> None:
    unexplained = [
        f"{item.module}:{item.line}: {item.text.strip()}"
        for item in collect_imports(package_sources())
        if not item.top_level and not lazy_reason(item.text)
    ]
    assert not unexplained, (
        "imports of r2sft modules inside functions belong at the top of the module, unless a "
        f"heavy optional dependency justifies them (say so with '{LAZY_MARK} why'): "
        + "; ".join(unexplained)
    )


# ----------------------------------------------------------------------------- the checker


def test_the_checker_finds_circles_and_unexplained_lazy_imports() -> None:
    sources = {
        "pkg": ("from pkg import a\n", True),
        "pkg.a": ("from pkg.b import thing\n", False),
        "pkg.b": ("def f():\n    from . import a  # lazy: torch\n    from pkg import c\n", False),
        "pkg.c": ("import os\nimport pkg.a\n", False),
    }
    imports = collect_imports(sources)
    assert {(i.module, i.target, i.top_level) for i in imports} == {
        ("pkg", "pkg.a", True), ("pkg.a", "pkg.b", True), ("pkg.b", "pkg.a", False),
        ("pkg.b", "pkg.c", False), ("pkg.c", "pkg.a", True),
    }  # fmt: skip
    edges = {module: set() for module in sources}
    for item in imports:
        edges[item.module].add(item.target)
    assert find_cycles(edges) == [{"pkg.a", "pkg.b", "pkg.c"}]
    edges["pkg.b"] = set()
    assert find_cycles(edges) == []
    reasons = {i.target: lazy_reason(i.text) for i in imports if not i.top_level}
    assert reasons == {"pkg.a": "torch", "pkg.c": ""}


def test_the_sandbox_harness_stays_standard_library_only() -> None:
    """It runs inside the sandbox, where r2sft and the packages are not importable."""
    source, _ = package_sources()["r2sft.sandbox.harness"]
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_decoding_functions_stay_small() -> None:
    """The decoding package is read by whoever adds a rule or a forward strategy: no function
    in it over 80 lines (the sampler keeps only canvas bookkeeping; #24)."""
    long = []
    for path in sorted((PACKAGE / "decoding").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines})")
    assert not long, f"functions over 80 lines: {long}"
