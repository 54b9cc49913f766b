"""The package's layers, checked on its import graph (README, "Architecture").

Layers import downward only: the foundation (settings, the registry of task types, the handler's exception),
then the model layer (``models/``), then the core every door shares (``services``, ``dispatch``, the handler's
``context``, ``retention``, ``pagination``, ``ratelimit``, and the counters of ``metrics``), then the sides: the
worker (``worker/``), the JSON API (``api/``), the operator's doors (admin, dashboard, command line) and what an
operator watches (``observability/``: health endpoints, liveness files and probes; ``metrics.*``: the gauges
read at scrape time and the exposition). ``apps`` and ``checks`` wire them
together. The worker and the API never import each other; nothing but the dashboard imports the dashboard;
no module is part of an import cycle. Imports inside functions count (they are dependencies all the same);
imports under ``if TYPE_CHECKING:`` do not (they are annotations, never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "long_time_task"

LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"conf", "exceptions", "registry"}),
    ("model", {"models", "models.*"}),
    (
        "core",
        {"services", "dispatch", "context", "retention", "pagination", "ratelimit", "tracing", "metrics", "signals"},
    ),
    (
        "sides",
        {"worker", "worker.*", "api", "api.*", "admin", "cli", "management", "management.*", "dashboard", "dashboard.*"}
        | {"observability", "observability.*", "tasks_definitions", "timezones", "security", "metrics.*"}
        | {"django_tasks", "django_tasks.*", "schedules", "schedules.*"},
    ),
    ("wiring", {"", "apps", "checks"}),
]
# Within the sides, who may not import whom.
SEPARATE = [("worker", "api"), ("api", "worker"), ("worker", "dashboard"), ("worker", "admin"), ("worker", "cli")]
# The django.tasks backend is a door like the API: it submits through services and runs through the registry.
SEPARATE += [("django_tasks", "worker"), ("django_tasks", "api"), ("worker", "django_tasks"), ("api", "django_tasks")]


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = {module_name(path, package): path for path in package.rglob("*.py") if "migrations" not in path.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = [part for part in base if part]
        targets: set[str] = set()
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    module = ".".join(parent + ([node.module] if node.module else []))
                elif (node.module or "").startswith("long_time_task"):
                    module = (node.module or "").removeprefix("long_time_task").lstrip(".")
                else:
                    continue
                for alias in node.names:
                    candidate = f"{module}.{alias.name}".lstrip(".")
                    targets.add(candidate if candidate in modules else module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("long_time_task"):
                        targets.add(alias.name.removeprefix("long_time_task").lstrip("."))
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def layer_of(module: str) -> int | None:
    for index, (_name, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if module == pattern or (pattern.endswith(".*") and module.startswith(pattern[:-1])):
                return index
    return None


def side(module: str) -> str:
    return module.split(".", 1)[0]


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = [f"{module}: in no layer (add it to LAYERS)" for module in sorted(graph) if layer_of(module) is None]
    for module in sorted(graph):
        here = layer_of(module)
        for target in sorted(graph[module]):
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                found.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]}): upward")
            if (side(module), side(target)) in SEPARATE:
                found.append(f"{module} imports {target}: the {side(module)} side never imports the {side(target)}")
            if side(target) == "dashboard" and side(module) != "dashboard":
                found.append(f"{module} imports {target}: nothing imports the dashboard")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_layers_import_downward_only():
    assert violations(import_graph(PACKAGE)) == []


def test_no_module_is_part_of_an_import_cycle():
    assert cycles(import_graph(PACKAGE)) == []


def test_the_model_layer_imports_only_the_foundation():
    graph = import_graph(PACKAGE)
    model = {module for module in graph if layer_of(module) == 1}
    assert model, "the model layer moved: update LAYERS"
    assert {target for module in model for target in graph[module]} <= model | {"conf", "registry", "exceptions"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # The model layer reaching into the worker (what querysets -> deferred was).
        ({"models/querysets.py": "def f():\n    from ..worker import executor\n"}, "upward"),
        ({"worker/executor.py": "from ..api import views\n"}, "never imports the api"),
        ({"services.py": "from .dashboard import views\n"}, "nothing imports the dashboard"),
        ({"newthing.py": ""}, "in no layer"),
    ],
)
def test_the_checks_can_fail(tmp_path, source, expected):
    package = tmp_path / "long_time_task"
    for name in ("models/__init__.py", "worker/__init__.py", "api/__init__.py", "dashboard/__init__.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("")
    for name in ("worker/executor.py", "api/views.py", "dashboard/views.py", "services.py", "models/querysets.py"):
        (package / name).write_text("")
    for name, text in source.items():
        (package / name).write_text(text)
    assert any(expected in line for line in violations(import_graph(package)))


def test_a_cycle_is_found(tmp_path):
    package = tmp_path / "long_time_task"
    package.mkdir()
    (package / "services.py").write_text("from . import dispatch\n")
    (package / "dispatch.py").write_text("def f():\n    from .services import submit\n")
    assert cycles(import_graph(package)) == [["dispatch", "services"]]
