"""The checks .ci/run makes before the tests go red on a planted mistake, with this repository's
configuration (pyproject.toml): ruff's lint and format check, and mypy at the stated strictness."""

import subprocess
import sys

from tests.readme_blocks import ROOT

CONFIG = str(ROOT / "pyproject.toml")


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_ruff_goes_red_on_lint_and_format_mistakes(tmp_path):
    (tmp_path / "bad.py").write_text("import os\nimport sys\n\nprint(sys.argv)\n")
    lint = _run("ruff", "check", "--config", CONFIG, "bad.py", cwd=tmp_path)
    assert lint.returncode == 1 and "F401" in lint.stdout and "`os` imported but unused" in lint.stdout, lint.stdout
    (tmp_path / "ugly.py").write_text("x = {'a':1}\n")
    form = _run("ruff", "format", "--check", "--config", CONFIG, "ugly.py", cwd=tmp_path)
    assert form.returncode == 1 and "ugly.py" in form.stdout and "would be reformatted" in form.stdout, form.stdout


def test_mypy_goes_red_in_annotated_and_unannotated_code(tmp_path):
    """An annotated function returning the wrong type, and (check_untyped_defs) a bad operation in
    the body of an unannotated one."""
    (tmp_path / "bad.py").write_text('def f(x: int) -> str:\n    return x\n\n\ndef g():\n    return 1 + "a"\n')
    result = _run("mypy", "--config-file", CONFIG, "--cache-dir", str(tmp_path / "cache"), "bad.py", cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "bad.py:2: error: Incompatible return value type" in result.stdout, result.stdout
    assert "bad.py:6: error: Unsupported operand types" in result.stdout, result.stdout
