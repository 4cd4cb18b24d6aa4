"""Builds the compiled modules (see daemon/_compiled.py): Cython turns each hot module's unchanged
source into C, the system compiler into an extension stored under that source's digest.

    python -m vscsifs.daemon._compile build     what is missing (bootstrap.sh runs it)
    python -m vscsifs.daemon._compile status    which modules would load compiled
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from Cython.Build import cythonize
from setuptools import Extension

from vscsifs.daemon._compiled import HOT_MODULES, build_root, extension_path

# Cython directives that keep a compiled module's behaviour its source's: annotations stay
# documentation (no C int/double), functions stay introspectable Python functions.
DIRECTIVES = {"language_level": "3", "annotation_typing": False, "binding": True,
              "always_allow_keywords": True, "embedsignature": False, "infer_types": False}


def _module_source(module: str) -> str:
    spec = importlib.util.find_spec(module.rpartition(".")[0])
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"cannot locate the package of {module}")
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, module.rpartition(".")[2] + ".py")
        if os.path.exists(candidate):
            return candidate
    raise RuntimeError(f"cannot locate the source of {module}")


def _compile_one(module: str, source: str, work: str) -> str:
    dest = extension_path(module, source)
    tmp_src = os.path.join(work, module.replace(".", "_") + ".py")
    shutil.copyfile(source, tmp_src)
    (ext,) = cythonize([Extension(module, [tmp_src])], compiler_directives=DIRECTIVES, quiet=True,
                       build_dir=work, force=True)
    c_file = ext.sources[0]
    paths = sysconfig.get_paths()
    cc = os.environ.get("CC", sysconfig.get_config_var("CC") or "cc").split()
    obj = os.path.join(work, module + ".so")
    cmd = [*cc, "-shared", "-fPIC", "-O2", "-fno-strict-aliasing", f"-I{paths['include']}",
           f"-I{paths['platinclude']}", c_file, "-o", obj]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"compiling {module} failed:\n{r.stderr[-4000:]}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.replace(obj, dest)
    return dest


def build(modules: Sequence[str] = HOT_MODULES, jobs: int | None = None) -> list[str]:
    """Build every module whose current source has no extension yet; drop extensions of older
    sources of the same modules. Returns the extensions built."""
    todo = []
    for module in modules:
        source = _module_source(module)
        if not os.path.exists(extension_path(module, source)):
            todo.append((module, source))
    root = build_root()
    if os.path.isdir(root):
        wanted = {os.path.basename(extension_path(m, _module_source(m))) for m in modules}
        for name in os.listdir(root):
            if name.split("-", 1)[0] in modules and name not in wanted:
                os.unlink(os.path.join(root, name))
    built: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vscsifs-build-") as work, \
            ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        for module, _ in todo:
            os.makedirs(os.path.join(work, module))
        futures = [pool.submit(_compile_one, m, s, os.path.join(work, m)) for m, s in todo]
        built.extend(fut.result() for fut in futures)
    return built


def status() -> list[tuple[str, bool]]:
    return [(m, os.path.exists(extension_path(m, _module_source(m)))) for m in HOT_MODULES]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["build"]:
        built = build()
        print(f"vscsifs: {len(built)} module(s) compiled into {build_root()} "
              f"({len(HOT_MODULES) - len(built)} already current)")
        return 0
    if args[:1] == ["status"]:
        for module, ok in status():
            print(f"{'compiled' if ok else 'source  '}  {module}")
        return 0
    print("usage: python -m vscsifs.daemon._compile build|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
