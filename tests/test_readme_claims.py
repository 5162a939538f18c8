"""README's speed claims come from committed results tables.

The benchmark paragraph's claims block is exactly what ``experiments/benchmark.py`` generates from
the committed ``experiments/results/benchmark.md`` (and that file's tables are exactly what its
embedded data renders to); every other "N×" ratio in README.md and experiments/README.md appears
as a number in a committed results table. Also the benchmark's own arithmetic (ratios, spreads,
the rotated round order, the initial-loss check) on made-up data. No benchmark is run here.
"""

import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
sys.path.insert(0, str(ROOT / "experiments"))
try:
    import benchmark
finally:  # benchmark.py puts experiments/ on sys.path too (for its workers): take every copy off
    while str(ROOT / "experiments") in sys.path:
        sys.path.remove(str(ROOT / "experiments"))

# "N×" / "a–b×" ratios (not sizes such as 8×8: no digit may follow the ×)
RATIO = re.compile(r"(?<![\d.×])(\d+(?:\.\d+)?)(?:–(\d+(?:\.\d+)?))?×(?!\s*\d)")
NOT_MEASURED = {  # (file, the ratio as written): why it is not a number of a results table
    ("README.md", "20×"): "the sweep issue's aim, not a measurement",
}


def _claims_block(text):
    start, end = text.find(benchmark.CLAIMS_BEGIN), text.find(benchmark.CLAIMS_END)
    assert 0 <= start < end, "README.md lost its benchmark claims block"
    return text[start : end + len(benchmark.CLAIMS_END)]


def test_readme_benchmark_claims_are_generated_from_the_committed_table():
    committed = (RESULTS / "benchmark.md").read_text()
    data = benchmark.load_data(committed)
    assert _claims_block((ROOT / "README.md").read_text()) == benchmark.claims(data)
    if data is not None:  # the tables are the embedded data's own
        assert committed.startswith(benchmark.render(data))


def _sections_and_sources(path):
    """``(section text, the committed results files it links)`` per ``## `` section of ``path``
    (the benchmark's claims block left out: it is checked whole above); comments such as the
    benchmark's embedded data are dropped from the sources, so a number must be in a table or note."""
    text = path.read_text()
    if benchmark.CLAIMS_BEGIN in text:
        text = text.replace(_claims_block(text), "")
    for section in re.split(r"(?m)^## ", text):
        names = sorted(set(re.findall(r"results/([\w.-]+\.md)", section)))
        yield (
            section,
            "\n".join(
                re.sub(r"<!--.*?-->", "", (RESULTS / n).read_text(), flags=re.S)
                for n in names
                if (RESULTS / n).exists()
            ),
        )


@pytest.mark.parametrize("name", ["README.md", "experiments/README.md"])
def test_other_ratio_claims_appear_in_the_results_their_section_links(name):
    missing = []
    for section, sources in _sections_and_sources(ROOT / name):
        for m in RATIO.finditer(section):
            if (name, m.group(0)) in NOT_MEASURED:
                continue
            for number in filter(None, m.groups()):
                if not re.search(r"(?<![\d.])" + re.escape(number) + r"(?!\d)", sources):
                    missing.append(m.group(0))
    assert not missing, f"{name}: ratios found in none of the results files their section links: {missing}"


def test_a_ratio_that_no_linked_table_has_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("## A\n[t](experiments/results/sweep_benchmark.md): 10.8× and 42.4×\n## B\n10.8×\n")
    found = [
        (m.group(0), bool(re.search(r"(?<![\d.])" + re.escape(m.group(1)) + r"(?!\d)", sources)))
        for section, sources in _sections_and_sources(readme)
        for m in RATIO.finditer(section)
    ]
    assert found == [("10.8×", True), ("42.4×", False), ("10.8×", False)]  # B links no table


def test_ratio_finder_reads_ratios_not_sizes():
    found = [m.group(0) for m in RATIO.finditer("at 0.66× the time, 0.75–0.82×, a 28×28×1 CNN, **10.8×**, 8×8")]
    assert found == ["0.66×", "0.75–0.82×", "10.8×"]


# --- the benchmark's arithmetic on made-up data ---------------------------------------------------


def _data(make_epoch, torch, fit=None):
    """A results-data dict with one workload and the given per-round rates."""
    rounds = len(make_epoch)
    fit = fit or make_epoch
    runs = {
        "make_epoch": [{"steps_per_s": v, "loss0": 1.0} for v in make_epoch],
        "fit": [
            {
                "steps_per_s": v,
                "first_call_steps_per_s": v / 10,
                "first_call_s": 2.0,
                "first_epoch_s": 1.5,
                "epochs": 300,
                "loss0": 1.0,
            }
            for v in fit
        ],
        "torch": [{"steps_per_s": v, "first_epoch_s": 0.1, "loss0": 1.0} for v in torch],
    }
    info = {
        "cpu": "test cpu",
        "cores": 2,
        "jax": "0",
        "jaxlib": "0",
        "jax_backend": "cpu",
        "torch": "0",
        "numpy": "0",
        "python": "3",
        "numpy_blas": [],
    }
    return {
        "meta": {
            "rounds": rounds,
            "calibration_rounds": 1,
            "window_s": 0.5,
            "fit_epochs": None,
            "torch_compile": False,
            "timeout_s": 600.0,
            "command": "python experiments/benchmark.py",
            "info": info,
            "blas_env": {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None},
            "date": "2000-01-01",
            "minutes": 1.0,
            "lr": 0.01,
        },
        "workloads": {
            "spiral-full": {"title": "MLP 2-100-3, spiral N = 300, full batch", "batch": 300, "fit_epochs": 300}
        },
        "loss0": {"spiral-full": 1.0},
        "calibration": {"spiral-full": {"torch|1": [5.0], "torch|2": [3.0]}},
        "chosen_threads": {"spiral-full": {"torch": 1}},
        "runs": {"spiral-full": runs},
    }


def test_ratio_is_a_ratio_of_medians_with_the_per_round_spread():
    assert benchmark.ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0]) == (2.0, 2.0, 3.0)
    assert benchmark.ratio_cell([2.0, 4.0, 6.0], [1.0, 2.0, 2.0]) == "2.00× (2.00–3.00)"
    assert benchmark.rate_cell([900.0, 1000.0, 3000.0]) == "1,000 (900–3,000)"
    with pytest.raises(ValueError, match="rounds"):
        benchmark.ratio([1.0, 2.0], [1.0])


def test_claims_and_tables_come_from_the_data():
    data = _data([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])
    block = benchmark.claims(data)
    assert block.startswith(benchmark.CLAIMS_BEGIN) and block.endswith(benchmark.CLAIMS_END)
    assert "`make_epoch` vs the PyTorch eager loop: 2.00× (2.00–3.00) at MLP 2-100-3, full batch." in block
    assert "0.20× (0.20–0.30) at MLP 2-100-3, full batch (E = 300)" in block  # one fit call: a tenth of the steady rate
    text = benchmark.results_text(data, "- a note")
    assert benchmark.load_data(text) == data and text.startswith(benchmark.render(data))
    assert "| MLP 2-100-3, spiral N = 300, full batch | 4 (2–6) |" in text
    readme = f"before\n{benchmark.CLAIMS_BEGIN}\nold\n{benchmark.CLAIMS_END}\nafter\n"
    assert benchmark.replace_block(readme, block) == f"before\n{block}\nafter\n"
    with pytest.raises(ValueError, match="claims block"):
        benchmark.replace_block("no markers", block)


def test_results_file_keeps_the_row_order():
    data = _data([2.0, 4.0], [1.0, 2.0])
    for part in (
        "workloads",
        "loss0",
        "calibration",
        "chosen_threads",
        "runs",
    ):  # a second workload, sorting before the first
        data[part]["cnn-b64"] = data[part]["spiral-full"]
    data["workloads"]["cnn-b64"] = {**data["workloads"]["spiral-full"], "title": "CNN"}
    text = benchmark.results_text(data, "")
    assert text.startswith(benchmark.render(benchmark.load_data(text)))
    assert text.index("| MLP 2-100-3") < text.index("| CNN |")


def test_failed_runs_give_no_number():
    data = _data([2.0, 4.0], [1.0, 2.0])
    data["runs"]["spiral-full"]["torch"][1] = {"error": "exit 1: boom"}
    assert benchmark.rates(data, "spiral-full", "torch") is None
    assert "vs the PyTorch eager loop" not in benchmark.claims(data)
    assert "- spiral-full, torch: exit 1: boom" in benchmark.render(data)


def test_rounds_rotate_and_keep_every_variant():
    items = list("abcdef")
    orders = [benchmark.rotated(items, r, 3) for r in range(3)]
    assert all(sorted(o) == items for o in orders)
    assert [o[0] for o in orders] == ["a", "c", "e"]


def test_initial_loss_mismatch_stops_the_run():
    reference = {}
    benchmark.check_loss0(reference, "w", "make_epoch", {"loss0": 2.0})
    benchmark.check_loss0(reference, "w", "torch", {"loss0": 2.0 * (1 + 1e-6)})
    with pytest.raises(benchmark.LossMismatch, match=r"torch\.compile"):
        benchmark.check_loss0(reference, "w", "torch.compile", {"loss0": 2.01})


def test_thread_choice_is_the_faster_median():
    calibration = {
        "torch|1": [{"steps_per_s": 10.0}, {"steps_per_s": 30.0}],
        "torch|2": [{"steps_per_s": 25.0}] * 2,
        "numpy|1": [{"error": "x"}],
        "numpy|2": [{"steps_per_s": 1.0}],
    }
    assert benchmark.best_threads(calibration, "torch") == 2 and benchmark.best_threads(calibration, "numpy") == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rounds", "0"], "positive integer"),
        (["--window", "nan"], "positive number"),
        (["--workloads", "spiral,nope"], "unknown workload"),
        (["--fit-epochs", "3"], "at least 4"),
    ],
)
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--quick"],
        ["--rounds", "1"],
        ["--calibration-rounds", "1"],
        ["--workloads", "spiral-full"],
        ["--no-torch-compile"],
    ],
)
def test_a_quick_or_partial_run_never_writes_the_committed_results(argv, capsys, monkeypatch):
    """Refused before anything is measured (``measure`` would raise here)."""
    monkeypatch.setattr(benchmark, "measure", lambda *a, **k: pytest.fail("measured"))
    assert benchmark.main([*argv, "--out", str(benchmark.RESULTS)]) == 2
    assert "never writes" in capsys.readouterr().err
