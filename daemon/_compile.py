"""Builds the compiled modules (see daemon/_compiled.py): mypyc compiles the hot modules of the
package's own sources as one group, the system compiler links them, and the result is stored
under the one digest of those sources (and of the mypyc version).

    python -m vscsifs.daemon._compile build     builds unless the current sources are built
    python -m vscsifs.daemon._compile status    whether the hot modules would load compiled

Why a copy of the sources: mypyc names modules after their folders, and the source tree maps
folders to ``vscsifs.*`` names only through pyproject.toml's package-dir; a private tree
``vscsifs/<subpackage>/...`` of the SCOPE subpackages gives every module its import name, and
the digest is taken of exactly the bytes that were compiled. Its ``vscsifs/__init__.py`` is
empty, so mypy sees nothing beyond SCOPE: a hot module importing something outside it fails
the build instead of going unnoticed by the digest.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mypyc.build import mypycify
from setuptools import Distribution
from setuptools.command.build_ext import build_ext

from vscsifs.daemon._compiled import (GROUP, HOT_MODULES, LIBRARY, MANIFEST, PACKAGE, PACKAGE_ROOT,
                                      build_root, current_build, module_file, source_digest,
                                      source_files)

# -O3 as mypyc's default; -g0: the build is for speed, the pure package is the one to debug
OPT_LEVEL = "3"
DEBUG_LEVEL = "0"

# mypy as the project runs it (pyproject.toml [tool.mypy]), on the private tree
MYPY_CONFIG = """\
[mypy]
python_version = {python}
explicit_package_bases = True
check_untyped_defs = True
cache_dir = {cache}
"""


class ParallelBuildExt(build_ext):  # type: ignore[misc]
    """build_ext compiling an extension's C files side by side: mypyc's group is one extension
    of some thirty files, which build_ext alone compiles one after the other."""

    jobs = 1

    def build_extension(self, ext: Any) -> None:
        compiler = self.compiler
        serial = compiler.compile

        def compile_files(sources: list[str], *args: Any, **kw: Any) -> list[str]:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                parts = pool.map(lambda source: serial([source], *args, **kw), sources)
                return [obj for objs in parts for obj in objs]

        compiler.compile = compile_files
        try:
            super().build_extension(ext)
        finally:
            compiler.compile = serial


def compiler_version() -> str:
    return importlib.metadata.version("mypy")


def _copy_tree(dest: str) -> None:
    """The SCOPE sources under ``dest/vscsifs/`` (their import names), an empty package above."""
    pkg = os.path.join(dest, PACKAGE)
    os.makedirs(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w", encoding="utf-8"):
        pass
    for rel in source_files():
        target = os.path.join(pkg, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(PACKAGE_ROOT, rel), target)


def _module_path(tree: str, module: str) -> str:
    return os.path.join(tree, *module.split(".")) + ".py"


def build(jobs: int | None = None, force: bool = False) -> str | None:
    """Build the group unless the current sources are built already; drop every other build.
    Returns the new build's directory, or None when nothing was to do."""
    version = compiler_version()
    root = build_root()
    done = None if force else current_build()
    if done is None:
        os.makedirs(root, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="vscsifs-build-") as work:
            tree = os.path.join(work, "src")
            _copy_tree(tree)
            digest = source_digest(version, os.path.join(tree, PACKAGE))
            config = os.path.join(work, "mypy.ini")
            with open(config, "w", encoding="utf-8") as f:
                f.write(MYPY_CONFIG.format(python=f"{sys.version_info[0]}.{sys.version_info[1]}",
                                           cache=os.path.join(work, "mypy-cache")))
            extensions = mypycify(["--config-file", config,
                                   *(_module_path(tree, m) for m in HOT_MODULES)],
                                  opt_level=OPT_LEVEL, debug_level=DEBUG_LEVEL, multi_file=True,
                                  group_name=GROUP, target_dir=os.path.join(work, "c"))
            staging = tempfile.mkdtemp(prefix=".building-", dir=root)
            try:
                dist = Distribution({"name": "vscsifs-compiled", "ext_modules": extensions,
                                     "cmdclass": {"build_ext": ParallelBuildExt}})
                cmd = dist.get_command_obj("build_ext")
                cmd.build_lib = staging
                cmd.build_temp = os.path.join(work, "obj")
                cmd.jobs = jobs or os.cpu_count() or 1
                dist.run_command("build_ext")
                missing = [m for m in (LIBRARY, *HOT_MODULES) if not os.path.exists(module_file(staging, m))]
                if missing:
                    raise RuntimeError(f"mypyc built no extension for {', '.join(missing)}")
                with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as f:
                    json.dump({"compiler": version, "modules": list(HOT_MODULES)}, f, indent=1)
                done = os.path.join(root, digest)
                if os.path.exists(done):
                    shutil.rmtree(done)
                os.rename(staging, done)
            finally:
                if os.path.exists(staging):
                    shutil.rmtree(staging)
        built: str | None = done
    else:
        built = None
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if path != done:   # older builds, and any other product left there
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    return built


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["build"]:
        built = build(force="--force" in args[1:])
        if built is None:
            print(f"vscsifs: the compiled build of the current sources is there ({current_build()})")
        else:
            print(f"vscsifs: {len(HOT_MODULES)} modules compiled by mypyc into {built}")
        return 0
    if args[:1] == ["status"]:
        current = current_build()
        for module in HOT_MODULES:
            print(f"{'compiled' if current else 'source  '}  {module}")
        print(f"build: {current or 'none of the current sources'}")
        return 0
    print("usage: python -m vscsifs.daemon._compile build [--force] | status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
