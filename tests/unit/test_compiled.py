"""The compiled build loads an extension only when it was built from the module's current source,
and a run under VSCSIFS_BUILD says which build it tests."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from vscsifs.daemon import _compiled
from vscsifs.daemon._compiled import HOT_MODULES, CompiledFinder, extension_path


def test_every_hot_module_exists_as_source() -> None:
    """A renamed or removed module must leave the list, or the compiled build would silently
    shrink."""
    for name in HOT_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None, name


@pytest.fixture
def fake_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    pkg = tmp_path / "fakepkg_compiled"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    src = pkg / "hot.py"
    src.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_compiled, "HOT_MODULES", ("fakepkg_compiled.hot",))
    monkeypatch.setattr(_compiled, "build_root", lambda: str(tmp_path / "builds"))
    return "fakepkg_compiled.hot", src


def test_an_extension_of_the_current_source_is_found(fake_module: tuple[str, Path]) -> None:
    name, src = fake_module
    finder = CompiledFinder()
    assert finder.find_spec(name, [str(src.parent)]) is None  # nothing built: the source
    ext = extension_path(name, str(src))
    os.makedirs(os.path.dirname(ext))
    Path(ext).write_bytes(b"")
    spec = finder.find_spec(name, [str(src.parent)])
    assert spec is not None and spec.origin == ext


def test_an_edited_source_is_never_shadowed_by_an_older_build(fake_module: tuple[str, Path]) -> None:
    name, src = fake_module
    ext = extension_path(name, str(src))
    os.makedirs(os.path.dirname(ext))
    Path(ext).write_bytes(b"")
    src.write_text("X = 2\n")
    assert CompiledFinder().find_spec(name, [str(src.parent)]) is None
    with pytest.raises(ImportError, match="has no build of its current source"):
        CompiledFinder(required=True).find_spec(name, [str(src.parent)])


def test_other_modules_are_left_to_the_ordinary_finders(fake_module: tuple[str, Path]) -> None:
    assert CompiledFinder(required=True).find_spec("fakepkg_compiled", None) is None


def test_a_bad_build_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_compiled.ENV, "fast")
    with pytest.raises(RuntimeError, match="VSCSIFS_BUILD='fast'"):
        _compiled.install()


def test_this_run_tests_the_build_it_names() -> None:
    """Under VSCSIFS_BUILD=compiled every hot module came compiled; otherwise (pure, the
    default) none did."""
    mode = os.environ.get(_compiled.ENV, "")
    loaded = {name: _compiled.is_compiled(importlib.import_module(name)) for name in HOT_MODULES}
    if mode == "compiled":
        assert all(loaded.values()), [n for n, c in loaded.items() if not c]
    else:
        assert not any(loaded.values()), [n for n, c in loaded.items() if c]
    assert "vscsifs" in sys.modules
