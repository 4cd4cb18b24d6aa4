"""The compiled build is loaded only when it was built from the current sources (all of it, or
none), and a run under VSCSIFS_BUILD says which build it tests."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

from vscsifs.daemon import _compile, _compiled
from vscsifs.daemon._compiled import HOT_MODULES, LIBRARY, CompiledFinder, module_file


def test_every_hot_module_exists_as_source() -> None:
    """A renamed or removed module must leave the list, or the compiled build would silently
    shrink; and each lies in the subpackages the digest covers."""
    files = set(_compiled.source_files())
    for name in HOT_MODULES:
        assert importlib.util.find_spec(name) is not None, name
        assert os.path.join(*name.split(".")[1:]) + ".py" in files, name


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A package root with a hot module and a module it imports, and a build of them keyed by
    their digest, as _compile makes it (only the files the finder looks at)."""
    root = tmp_path / "pkg"
    (root / "hot").mkdir(parents=True)
    (root / "hot" / "__init__.py").write_text("")
    (root / "hot" / "fast.py").write_text("from vscsifs.hot.consts import X\n")
    (root / "hot" / "consts.py").write_text("X: Final = 1\n")
    monkeypatch.setattr(_compiled, "PACKAGE_ROOT", str(root))
    monkeypatch.setattr(_compiled, "SCOPE", ("hot",))
    monkeypatch.setattr(_compiled, "HOT_MODULES", ("vscsifs.hot.fast",))
    monkeypatch.setattr(_compiled, "build_root", lambda: str(tmp_path / "builds"))
    build = tmp_path / "builds" / _compiled.source_digest("1.0")
    for module in (LIBRARY, "vscsifs.hot.fast"):
        Path(module_file(str(build), module)).parent.mkdir(parents=True, exist_ok=True)
        Path(module_file(str(build), module)).write_bytes(b"")
    (build / _compiled.MANIFEST).write_text(json.dumps({"compiler": "1.0",
                                                        "modules": ["vscsifs.hot.fast"]}))
    return root, build


def test_the_build_of_the_current_sources_is_found(fake_build: tuple[Path, Path]) -> None:
    _, build = fake_build
    finder = CompiledFinder(required=True)
    for module in ("vscsifs.hot.fast", LIBRARY):
        spec = finder.find_spec(module, None)
        assert spec is not None and spec.origin == module_file(str(build), module)


def test_an_edit_anywhere_in_scope_drops_the_whole_build(fake_build: tuple[Path, Path]) -> None:
    """Compiled code inlines the Final literals of the modules it imports: an edit of a module
    that is not compiled itself makes the build stale too."""
    root, _ = fake_build
    (root / "hot" / "consts.py").write_text("X: Final = 2\n")
    assert CompiledFinder().find_spec("vscsifs.hot.fast", None) is None
    assert CompiledFinder().find_spec(LIBRARY, None) is None
    with pytest.raises(ImportError, match="no compiled build of the current sources"):
        CompiledFinder(required=True).find_spec("vscsifs.hot.fast", None)


def test_a_new_source_in_scope_drops_the_build(fake_build: tuple[Path, Path]) -> None:
    root, _ = fake_build
    (root / "hot" / "more.py").write_text("")
    assert CompiledFinder().find_spec("vscsifs.hot.fast", None) is None


def test_a_build_of_other_modules_is_not_used(fake_build: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compiled, "HOT_MODULES", ("vscsifs.hot.fast", "vscsifs.hot.consts"))
    assert CompiledFinder().find_spec("vscsifs.hot.fast", None) is None


def test_the_compiler_version_is_part_of_the_key(fake_build: tuple[Path, Path]) -> None:
    _, build = fake_build
    (build / _compiled.MANIFEST).write_text(json.dumps({"compiler": "2.0",
                                                        "modules": ["vscsifs.hot.fast"]}))
    assert CompiledFinder().find_spec("vscsifs.hot.fast", None) is None


def test_other_modules_are_left_to_the_ordinary_finders(fake_build: tuple[Path, Path]) -> None:
    assert CompiledFinder(required=True).find_spec("vscsifs.hot.consts", None) is None
    assert CompiledFinder(required=True).find_spec("vscsifs.hot", None) is None


def test_the_build_tree_has_the_digest_of_the_sources(tmp_path: Path) -> None:
    """_compile compiles a private copy of the sources: its digest (the build's key) is the one
    the finder computes from the package itself."""
    _compile._copy_tree(str(tmp_path))
    copied = str(tmp_path / _compiled.PACKAGE)
    assert _compiled.source_files(copied) == _compiled.source_files()
    assert _compiled.source_digest("x", copied) == _compiled.source_digest("x")
    assert (tmp_path / _compiled.PACKAGE / "__init__.py").read_text() == ""


def test_a_bad_build_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_compiled.ENV, "fast")
    with pytest.raises(RuntimeError, match="VSCSIFS_BUILD='fast'"):
        _compiled.install()


def test_this_run_tests_the_build_it_names() -> None:
    """Under VSCSIFS_BUILD=compiled every hot module came compiled, under pure none did; unset,
    either all or none (never a mix)."""
    mode = os.environ.get(_compiled.ENV, "")
    loaded = {name: _compiled.is_compiled(importlib.import_module(name)) for name in HOT_MODULES}
    if mode == "compiled" or (mode == "" and any(loaded.values())):
        assert all(loaded.values()), [n for n, c in loaded.items() if not c]
    else:
        assert not any(loaded.values()), [n for n, c in loaded.items() if c]
    assert "vscsifs" in sys.modules
