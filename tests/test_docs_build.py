"""The API reference's build (docs/build_api.py) goes red on what it is meant to catch.

The build itself runs in .ci/run; these tests show its checks can fail, cheaply (no rendering).
"""

import importlib.util
import sys
import textwrap
import warnings

import pdoc.doc as pdoc_doc  # the dev extra, which the README's test command installs

from tests.readme_blocks import ROOT


def _build_api():
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _module(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return pdoc_doc.Module.from_name(name)


def test_a_public_name_without_a_docstring_is_named(tmp_path, monkeypatch):
    module = _module(
        tmp_path,
        monkeypatch,
        "docs_demo",
        '''
        """A module."""
        from math import sqrt  # imported: documented where it is defined


        def documented():
            """Has one."""


        def bare():
            pass


        def _private():
            pass


        class Thing:
            """A class."""

            def method(self):
                pass

            @property
            def size(self):
                return 1

            def documented(self):
                """Has one."""
        ''',
    )
    missing = _build_api().undocumented(module)
    assert missing == ["docs_demo.bare", "docs_demo.Thing.method", "docs_demo.Thing.size"]


def test_every_public_module_is_in_the_reference():
    names = _build_api().public_modules()
    assert names[0] == "jaxnet" and "jaxnet.data" in names and "jaxnet.checkpoint" in names
    assert "jaxnet.train" in names and "jaxnet.sweep" in names and "jaxnet.cli.train" in names
    assert "jaxnet.__main__" not in names
    assert len(names) == len(set(names))


def test_a_pdoc_warning_is_a_problem(tmp_path, monkeypatch):
    """A warning raised while pdoc reads the modules (here: an annotation it cannot resolve) fails the build."""
    build_api = _build_api()
    _module(tmp_path, monkeypatch, "docs_warns", '"""A module."""\n\ndef f(x: "NoSuchType") -> int:\n    """Doc."""\n')
    monkeypatch.setattr(build_api, "public_modules", lambda: ["docs_warns"])
    with warnings.catch_warnings():
        problems = build_api.build(tmp_path / "out")
    assert problems and all(p.startswith("pdoc: ") for p in problems), problems
    assert any("NoSuchType" in p for p in problems), problems


def test_a_warning_on_import_is_a_problem(tmp_path, monkeypatch):
    """A module of the package that warns when imported fails the build too."""
    build_api = _build_api()
    (tmp_path / "docs_import_warns.py").write_text('"""A module."""\nimport warnings\n\nwarnings.warn("old API")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "docs_import_warns", raising=False)
    monkeypatch.setattr(build_api, "public_modules", lambda: ["docs_import_warns"])
    assert build_api.build(tmp_path / "out") == ["pdoc: UserWarning: old API"]
