"""The code-layout rules the project keeps (docs/architecture.md): no source file over 400 lines, no
import circles among the project's modules, and few project imports inside functions outside the
command line and the benchmarks, each with a one-line reason. Static: reads the sources, imports
nothing."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("realtime", "models", "clients")
MAX_LINES = 400
MAX_IMPORTS_IN_FUNCTIONS = 20
ENTRY_POINTS = ("realtime/cli/", "realtime/bench/")  # command line and benchmarks: import what a command needs


def sources() -> dict[str, Path]:
    """Module name -> file, for every Python file of the project's packages and scripts/."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    for f in sorted((ROOT / "scripts").glob("*.py")):
        out["scripts." + f.stem] = f
    return out


def imported(node: ast.Import | ast.ImportFrom, module: str, modules: dict) -> list[str]:
    """The project modules an import statement loads (``from pkg import mod`` counts ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative
            base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return [n for n in names if n in modules]


def top_level_imports(tree: ast.Module):
    """Imports run when the module is imported: module level, also inside try/if, never under
    ``if TYPE_CHECKING``."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(node.body)
            stack.extend(getattr(node, "orelse", []))
            stack.extend(getattr(node, "finalbody", []))
            for h in getattr(node, "handlers", []):
                stack.extend(h.body)


def function_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports inside any function (each once, also in nested functions)."""
    found = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found[node.lineno] = node
    return [found[k] for k in sorted(found)]


def test_no_source_file_is_over_400_lines():
    long = {str(f.relative_to(ROOT)): n for f in sources().values()
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_no_import_circles_among_the_projects_modules():
    modules = sources()
    graph = {m: set() for m in modules}
    for m, f in modules.items():
        for node in top_level_imports(ast.parse(f.read_text())):
            # a module naming its own package (being imported already, around it) is no circle
            graph[m].update(d for d in imported(node, m, modules) if d != m and not m.startswith(d + "."))
    circles, state = [], {}  # state: "open" while on the current path, then "done"

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":  # back to a module on the path: the circle from it
                circles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_few_project_imports_inside_functions_each_with_a_reason():
    modules = sources()
    found, unexplained = [], []
    for m, f in modules.items():
        rel = str(f.relative_to(ROOT))
        if rel.startswith(ENTRY_POINTS) or rel.startswith("scripts/"):
            continue
        lines = f.read_text().splitlines()
        for node in function_imports(ast.parse("\n".join(lines))):
            if not imported(node, m, modules):
                continue
            found.append(f"{rel}:{node.lineno}")
            here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            if "#" not in here and not above.startswith("#"):
                unexplained.append(f"{rel}:{node.lineno}")
    assert len(found) <= MAX_IMPORTS_IN_FUNCTIONS, f"{len(found)} project imports inside functions: {found}"
    assert not unexplained, f"project imports inside functions without a one-line reason: {unexplained}"


def test_every_file_the_architecture_picture_names_exists():
    spec = importlib.util.spec_from_file_location("packet_path", ROOT / "scripts" / "packet_path.py")
    packet_path = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(packet_path)  # no side effects at import: main() does the work
    named = packet_path.documented_path(str(ROOT))
    assert len(named) == 12, named  # the hand-off path docs/architecture.md draws (docs/BENCHMARKS.md)
    missing = [f for f in named if not (ROOT / f).is_file()]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
