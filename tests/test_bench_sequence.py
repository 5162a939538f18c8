"""experiments/bench_sequence_grads.py (manual vs jax.grad for the LSTM and the attention block)
runs in quick mode (marked slow): its table has every row with finite timings and ratios and a
verdict that follows from them, and a quick run leaves the committed results file alone."""

import importlib
import math
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SCRIPT = EXPERIMENTS / "bench_sequence_grads.py"
COMMITTED = EXPERIMENTS / "results" / "sequence_grad_benchmark.md"


def _script():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return importlib.import_module("bench_sequence_grads")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def _committed_state():
    return (COMMITTED.read_bytes(), COMMITTED.stat().st_mtime_ns) if COMMITTED.exists() else None


def _run(*args):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _rows(text):
    """``{key: cells}`` of the timing table (the one with a ``manual ≤ jax.grad`` column)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| row |") and "manual ≤ jax.grad" in line)
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        rows[cells["row"].strip("`")] = cells
    return rows


@pytest.mark.slow
def test_sequence_grad_benchmark_runs_quick(tmp_path):
    bench = _script()
    keys = [key for key, *_ in bench.ROWS]
    assert len(keys) >= 7 and [k for k, *_ in bench.configs(True)] == keys == [k for k, *_ in bench.configs(False)]
    before = _committed_state()

    out = tmp_path / "sequence.md"
    _run("--out", str(out))
    text = out.read_text()
    rows = _rows(text)
    assert list(rows) == keys
    for key, cells in rows.items():
        values = [float(cells[c]) for c in ("manual_grads (ms)", "jax.grad (ms)", "manual / jax.grad")]
        assert all(math.isfinite(v) and v > 0 for v in values), (key, cells)
        assert float(cells["gradient gap"]) < bench.GRAD_TOLERANCE, (key, cells)
        ratio, verdict = values[2], cells["manual ≤ jax.grad"]  # the ratio as printed, 2 decimals
        if ratio != 1:
            assert (verdict == "yes") if ratio < 1 else verdict.startswith("no: manual"), (key, cells)
    met = sum(cells["manual ≤ jax.grad"] == "yes" for cells in rows.values())
    assert re.search(rf"met on {met} of {len(keys)} rows", text)
    assert "`python experiments/bench_sequence_grads.py --quick`" in text

    # without --out a quick run only prints; into the committed file it is refused
    printed = _run("--rows", "lstm-rows")
    assert list(_rows(printed)) == ["lstm-rows"] and "nothing written" in printed
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--out", str(COMMITTED)])
    with pytest.raises(SystemExit):
        bench.main(["--rows", "lstm-rows"])  # a subset into the committed file
    assert _committed_state() == before
