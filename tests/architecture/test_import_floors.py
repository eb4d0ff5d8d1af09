"""Imports only go down the floors of the house: a test that parses every module's imports.

The floors, lowest first, are the order README.md states in its flow section. A module may
import its own package and any package on a lower floor; an import of a higher floor (at the
top of a module or inside a function) fails, with no list of exceptions. The one thing not
counted is an import under `if __name__ == "__main__":`, which runs only when the module is the
program (`python -m trainer.task`), never when another module imports it.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FLOORS = [
    "core",
    "configs",
    "transforms",
    "tracking",
    "trainer",
    "artifacts",
    "registry",
    "evaluator",
    "monitoring",
    "serving",
    "tfx_pipeline",
    "cli",
]
FLOOR_OF = {package: number for number, package in enumerate(FLOORS)}


def is_main_guard(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import, outside `__main__` guards."""
    found = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if is_main_guard(node):
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        stack.extend(ast.iter_child_nodes(node))
    return found


def modules() -> list[Path]:
    return sorted(
        path
        for package in FLOORS
        if (REPO / package).is_dir()
        for path in (REPO / package).rglob("*.py")
    )


def test_every_package_of_the_tree_has_a_floor():
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}
    assert packages - {"tests", "bench"} <= set(FLOORS), packages - set(FLOORS)


def test_imports_only_go_down_the_floors():
    upward = []
    for path in modules():
        package = path.relative_to(REPO).parts[0]
        for line, imported in imported_packages(ast.parse(path.read_text(encoding="utf-8"))):
            if imported in FLOOR_OF and FLOOR_OF[imported] > FLOOR_OF[package]:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not upward, "imports up the floors:\n" + "\n".join(upward)


def test_the_readme_states_the_same_floors():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"^Floors, lowest first: (.+?)\.\s", readme, re.MULTILINE | re.DOTALL)
    assert stated, "README.md has no 'Floors, lowest first: ...' line"
    assert re.findall(r"`(\w+)`", stated[1]) == FLOORS
