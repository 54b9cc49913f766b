"""The package uses its dependencies (Celery, kombu, billiard, redis-py, psycopg, Django, DRF, ...) only through
their public, documented APIs (STYLE.md, habit 10): a private name is a bet that the next release keeps it.

The check reads the package's source: every attribute access, ``getattr``/``hasattr``/``setattr``/``vars``
with a literal name, and every import. A name with a leading underscore that the package does not define
itself is a dependency's private name, and fails the test unless ``DOCUMENTED`` names it with the reason it
is public after all.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "long_time_task"

# Underscore attributes that their project documents as public API.
DOCUMENTED = {
    "_meta": "Django: the Model _meta API (docs: ref/models/meta)",
    "_default_manager": "Django: Model._default_manager (docs: topics/db/managers, 'Default managers')",
    "_state": "Django: Model._state, with its adding and db attributes (docs: ref/models/instances, 'Model._state')",
}


def sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" not in path.parts:
            yield path, ast.parse(path.read_text(), filename=str(path))


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def own_names() -> set[str]:
    """Every underscore name the package defines: functions, classes, attributes it assigns, parameters."""
    names: set[str] = set()
    for _path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {name for name in names if private(name)}


def uses_of_private_names() -> list[str]:
    own = own_names()
    found = []
    for path, tree in sources():
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in {"getattr", "hasattr", "setattr", "delattr"} and len(node.args) > 1:
                    literal = node.args[1]
                    if isinstance(literal, ast.Constant) and isinstance(literal.value, str):
                        names = [literal.value]
                elif node.func.id == "vars" and not (
                    node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in {"self", "cls"}
                ):  # the package's own objects' dictionaries are its own
                    found.append(f"{where}:{node.lineno}: vars() reads an object's private dictionary")
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [part for part in (node.module or "").split(".")] + [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [part for alias in node.names for part in alias.name.split(".")]
            allowed = DOCUMENTED if isinstance(node, ast.Attribute) else {}
            for name in names:
                if private(name) and name not in own and name not in allowed:
                    found.append(f"{where}:{getattr(node, 'lineno', 0)}: {name}")
    return found


def test_no_private_name_of_a_dependency_is_used():
    assert uses_of_private_names() == []


def test_the_check_finds_what_it_looks_for(tmp_path, monkeypatch):
    # The check itself can fail: a module that reaches into kombu's channel is reported.
    fake = tmp_path / "long_time_task"
    fake.mkdir()
    (fake / "lane.py").write_text(
        "from celery import _state\n"
        "def push(channel):\n"
        "    key = channel._q_for_pri('q', 0)\n"
        "    return getattr(channel, '_pool'), vars(channel)\n"
    )
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    found = uses_of_private_names()
    assert sorted(line.split(": ", 1)[1] for line in found) == sorted(
        ["_state", "_q_for_pri", "_pool", "vars() reads an object's private dictionary"]
    )


def test_every_documented_exception_is_still_used():
    # An allow-list entry nobody needs any more is removed, so the list stays the list of real exceptions.
    used = {node.attr for _path, tree in sources() for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert set(DOCUMENTED) <= used
