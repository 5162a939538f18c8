"""The package's seams: no import cycle among jaxnet's modules, no private name used across modules."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).parents[1]


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """``(module imported, names taken from it, line)`` for every import in ``path`` (top level or
    inside functions), relative imports resolved; plus ``module._name`` attribute uses of
    imported jaxnet modules."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).split(".") if path.name == "__init__.py" else _module_name(path).split(".")[:-1]
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if _is_module(sub):
                    found.append((sub, (), node.lineno))  # a module imported from its package
                    aliases[alias.asname or alias.name] = sub
                else:
                    found.append((base, (alias.name,), node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, (), node.lineno))
                if alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):  # module._name, module.sub._name, alias._name
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            dotted = _dotted(node.value)
            if dotted:
                head, _, rest = dotted.partition(".")
                module = aliases.get(head, head) + (f".{rest}" if rest else "")
                if _is_module(module):
                    found.append((module, (node.attr,), node.lineno))
    return [(m, names, line) for m, names, line in found if m == "jaxnet" or m.startswith("jaxnet.")]


def _dotted(node):
    """``a.b.c`` for a chain of names and attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return inner and f"{inner}.{node.attr}"
    return None


def _is_module(dotted):
    path = ROOT / pathlib.Path(*dotted.split("."))
    return dotted.split(".")[0] == "jaxnet" and (path.with_suffix(".py").exists() or (path / "__init__.py").exists())


def _files(*folders):
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_private_names_across_modules():
    """jaxnet's modules and the experiments use other modules' public names only."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}.{name}"
        for path in _files("jaxnet", "experiments")
        for module, names, line in _imports(path)
        for name in names
        if name.startswith("_") and module != _module_name(path)
    ]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_no_import_cycle_among_jaxnet_modules():
    graph = {}
    for path in _files("jaxnet"):
        me = _module_name(path)
        graph[me] = {m for m, _, _ in _imports(path) if m != me and m in _all_modules()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _all_modules():
    return {_module_name(p) for p in _files("jaxnet")}


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """Both checks see a planted private import and a planted cycle."""
    package = tmp_path / "jaxnet"
    package.mkdir()
    (tmp_path / "experiments").mkdir()
    (package / "__init__.py").write_text("from . import e\n\nVERSION = 1\n")
    (package / "e.py").write_text("def version():\n    from jaxnet import VERSION\n    return VERSION\n")
    (package / "a.py").write_text("from .b import _helper\n")
    (package / "b.py").write_text("def _helper():\n    from . import a\n")
    (package / "c.py").write_text("import jaxnet.b\n\njaxnet.b._helper()\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    for check, message in (
        (test_no_private_names_across_modules, "jaxnet/c.py:3: jaxnet.b._helper"),
        (test_no_private_names_across_modules, "jaxnet/a.py:1: jaxnet.b._helper"),
        (test_no_import_cycle_among_jaxnet_modules, "import cycle: jaxnet -> jaxnet.e -> jaxnet"),
    ):
        try:
            check()
        except AssertionError as e:
            assert message in str(e)
        else:
            raise AssertionError(f"{check.__name__} passed a planted violation")


HEAVY = ("optax", "chex", "matplotlib", "sklearn", "tqdm", "jaxnet.sweep", "jaxnet.train", "jaxnet.plots")
IMPORTED = "import sys\n{code}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"


def _imported_after(code):
    import subprocess
    import sys

    script = IMPORTED.format(code=code, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_import_jaxnet_and_the_help_pull_in_no_heavy_module_they_do_not_use():
    """``import jaxnet`` and ``jaxnet --help`` load neither the training nor the sweep machinery
    (optax, chex) nor plotting, data or progress-bar libraries; ``jaxnet.train`` and ``jaxnet.sweep``
    load on first use."""
    assert _imported_after("import jaxnet") == "[]"
    help_code = (
        "import contextlib, io, jaxnet.cli as c\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    c.main(['--help'])"
    )
    assert _imported_after(help_code) == "[]"
    assert _imported_after("import jaxnet; jaxnet.train.fit") == "['chex', 'jaxnet.train', 'optax']"
    assert "jaxnet.sweep" in _imported_after("import jaxnet; jaxnet.sweep.run")


def test_an_unknown_attribute_is_still_an_attribute_error():
    import pytest

    import jaxnet

    with pytest.raises(AttributeError, match="module 'jaxnet' has no attribute 'trian'"):
        jaxnet.trian  # noqa: B018
    assert {"train", "sweep", "Dense"} <= set(dir(jaxnet))
