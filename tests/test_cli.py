"""The command line: `jaxnet check` is the main job of this stage."""

import re
import subprocess
import sys

from jaxnet import cli
from jaxnet.presets import NOTE_NETWORKS


def test_check_passes_and_prints_the_table(capsys):
    assert cli.main(["check", "--batch", "4", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for preset in NOTE_NETWORKS:
        assert re.search(rf"^{preset.name} +\[0\]\['W'\] .* ok$", out, re.M)
    n_leaves = sum(2 * len(p.net.layers) for p in NOTE_NETWORKS)
    assert f"{n_leaves}/{n_leaves} leaves agree" in out
    assert "FAIL" not in out


def test_check_float32(capsys):
    assert cli.main(["check", "--dtype", "float32", "--batch", "4"]) == 0
    assert "manual_grads vs jax.grad (float32)" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "jaxnet", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "check" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "jaxnet", "check", "--batch", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--batch must be a positive integer" in bad.stderr


def test_readme_example_runs():
    """The README's Python example runs as printed, in a fresh process."""
    import pathlib

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    errors = [float(line.split()[-1]) for line in result.stdout.splitlines()]
    assert len(errors) == 4 and max(errors) < 1e-12
