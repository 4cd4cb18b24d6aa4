"""daemon/ stays layered: every import at the top of its module, and no import cycle between
its modules (the order is written in daemon/__init__.py). One exception, on purpose: the CLI's
entry points of `run` and `record` import the emulator themselves, so that the subcommands that
do not need it (`vscsifs exec` above all, which tests run once per command) start without it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import vscsifs.daemon

DAEMON = Path(vscsifs.daemon.__file__).parent
PACKAGE = "vscsifs.daemon"


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(DAEMON.glob("*.py"))}


def daemon_imports(node: ast.AST) -> set[str]:
    """The daemon modules one import statement names."""
    if isinstance(node, ast.ImportFrom) and node.module is not None:
        if node.module == PACKAGE:
            return {a.name for a in node.names}
        if node.module.startswith(PACKAGE + "."):
            return {node.module.rsplit(".", 1)[1]}
    if isinstance(node, ast.Import):
        return {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith(PACKAGE + ".")}
    return set()


# the subcommand entry points that load the emulator on demand (see the module docstring)
LAZY_ENTRY_POINTS = {("_cli", "run_main"), ("_cli", "record_main")}


def test_no_import_inside_a_function() -> None:
    found = []
    for name, tree in modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and (name, fn.name) not in LAZY_ENTRY_POINTS:
                found += [f"{name}.py:{n.lineno}" for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert found == []


def test_exec_starts_without_the_emulator() -> None:
    """`vscsifs exec` imports neither trio nor the machine (a fresh interpreter, as the
    console script starts): what keeps its start-up a fraction of the daemon's."""
    code = ("import sys; import vscsifs.daemon._cli; "
            "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith(('vscsifs.daemon._machine', "
            "'vscsifs.daemon._service', 'vscsifs.scsi.kernel', 'vscsifs.virtio', 'vscsifs.fs._devfs'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_import_cycle() -> None:
    mods = modules()
    graph = {name: set().union(*(daemon_imports(n) for n in ast.walk(tree))) & mods.keys() - {name}
             for name, tree in mods.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "import cycle: " + " -> ".join(path[path.index(name):] + (name,))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, path + (name,))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())
    assert "_devices" in graph["_machine"] and "_machine" not in graph["_devices"]   # the walk saw the edges
