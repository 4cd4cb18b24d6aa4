"""The package's dependencies point one way, and a reader can follow them by reading imports.

Walks the package's source (the folders pyproject.toml maps) with ast: no module is looked up by
name (importlib), at most a handful of imports stand inside functions and each says why on its
line, no two packages import each other, and the device side never imports the driver side.
"""

from __future__ import annotations

import ast
import os
import tomllib
from collections.abc import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_IMPORTS_IN_FUNCTIONS = 10
DEVICE_SIDE = ("vscsifs.scsi.device", "vscsifs.scsi.target", "vscsifs.virtio.device")
DRIVER_SIDE = ("vscsifs.scsi.kernel", "vscsifs.virtio.driver")


def _modules() -> dict[str, str]:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        package_dir = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    mods = {}
    for pkg, folder in package_dir.items():
        for name in os.listdir(os.path.join(REPO, folder)):
            if name.endswith(".py"):
                mods[pkg if name == "__init__.py" else f"{pkg}.{name[:-3]}"] = os.path.join(REPO, folder, name)
    return mods


MODULES = _modules()


def _package(mod: str) -> str:
    return mod if MODULES[mod].endswith("__init__.py") else mod.rsplit(".", 1)[0]


def _targets(mod: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = node.module or ""
    if node.level:
        parts = _package(mod).split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            if f"{base}.{a.name}" in MODULES or base in MODULES]


def _imports() -> Iterator[tuple[str, int, bool, str]]:
    """(module, line, inside a function, imported module) for every import of our own modules."""
    for mod, path in MODULES.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(sub) for sub in ast.walk(node) if sub is not node)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(mod, node):
                    if target != mod:
                        yield mod, node.lineno, id(node) in in_function, target


IMPORTS = list(_imports())


def test_no_module_is_looked_up_by_name() -> None:
    found = []
    for mod, path in MODULES.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("import_module", "__import__"):
                found.append(f"{mod}:{node.lineno}")
    assert not found


def test_few_imports_inside_functions_each_saying_why() -> None:
    inside = sorted({(mod, line) for mod, line, in_fn, _ in IMPORTS if in_fn})
    assert len(inside) <= MAX_IMPORTS_IN_FUNCTIONS, inside
    for mod, line in inside:
        with open(MODULES[mod]) as f:
            text = f.read().splitlines()[line - 1]
        assert "#" in text, f"{mod}:{line} imports inside a function without saying why"


def test_no_two_packages_import_each_other() -> None:
    edges = {(_package(a), _package(b)) for a, _, _, b in IMPORTS if _package(a) != _package(b)}
    mutual = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
    assert not mutual


def test_the_device_side_never_imports_the_driver_side() -> None:
    wrong = sorted({(a, b) for a, _, _, b in IMPORTS if a.startswith(DEVICE_SIDE) and b.startswith(DRIVER_SIDE)})
    assert not wrong
