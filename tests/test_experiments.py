"""experiments/: the committed results meet the issue's bars and the README table is the scripts'
own numbers; the scripts themselves run (quick mode, marked slow)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SCRIPTS = {
    "note000_relu_softmax_l2": {"curves.png", "decision_boundary.png", "metrics.json"},
    "note001_sigmoid": {"fit.png", "regression_curves.png", "classification_curves.png", "metrics.json"},
    "note002_deep_tanh": {"grad_norms.png", "curves.png", "decision_boundaries.png", "metrics.json"},
    "note003_relu_mse_cnn": {"regression_curves.png", "cnn_curves.png", "confusion_matrix.png", "metrics.json"},
}


def _metrics(name):
    return json.loads((EXPERIMENTS / "results" / name / "metrics.json").read_text())


def test_committed_results_meet_the_bars():
    m = _metrics("note000_relu_softmax_l2")
    assert m["train_accuracy"] >= 0.98 and m["folded_vs_unfolded_curve_gap"] < 1e-3
    cnn = _metrics("note003_relu_mse_cnn")["cnn"]
    assert cnn["final"]["test"]["accuracy"] >= 0.98 and sum(map(sum, cnn["confusion_matrix_test"])) == 270
    gaps = [m["manual_vs_autodiff_curve_gap"], cnn["manual_vs_autodiff_curve_gap"],
            *(v["manual_vs_autodiff_curve_gap"] for k, v in _metrics("note001_sigmoid").items() if isinstance(v, dict)),
            *(d["manual_vs_autodiff_curve_gap"] for d in _metrics("note002_deep_tanh")["depths"].values())]
    assert len(gaps) == 8 and max(gaps) < 1e-3  # manual and jax.grad training curves agree
    assert set(_metrics("note002_deep_tanh")["depths"]) == {"1", "2", "3", "4"}
    for name, files in SCRIPTS.items():
        assert files <= {p.name for p in (EXPERIMENTS / "results" / name).iterdir()}, name


def test_readme_table_is_the_scripts_output():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import summarize
    finally:
        sys.path.remove(str(EXPERIMENTS))
    assert summarize.table() in (EXPERIMENTS / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_runs_quick(name, tmp_path):
    result = subprocess.run([sys.executable, str(EXPERIMENTS / f"{name}.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert SCRIPTS[name] <= {p.name for p in tmp_path.iterdir()}
    metrics = (tmp_path / "metrics.json").read_text()
    assert json.loads(metrics)["jax"]
    gaps = [float(v) for v in __import__("re").findall(r'"manual_vs_autodiff_curve_gap": ([0-9.e+-]+)', metrics)]
    assert gaps and max(gaps) < 1e-3  # manual and jax.grad curves agree even in the smoke run


@pytest.mark.slow
def test_benchmark_runs_quick(tmp_path):
    out = tmp_path / "bench.md"
    result = subprocess.run([sys.executable, str(EXPERIMENTS / "benchmark.py"), "--quick", "--repeats", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert "| MLP 2-100-3, N = 300 full batch |" in text and "## Targets" in text


@pytest.mark.slow
def test_sweep_benchmark_runs_quick(tmp_path):
    out = tmp_path / "sweep.md"
    result = subprocess.run([sys.executable, str(EXPERIMENTS / "bench_sweep.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert "(2 XLA devices)" in text and "| as run, 2 device(s) |" in text and "## 3. A whole study" in text
