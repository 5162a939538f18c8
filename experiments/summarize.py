"""Rewrite the generated parts of experiments/README.md from the scripts' own metrics.json files,
and render the preset table (presets.md), the README's table of the presets of issue 19's layers and the
main README's quoted results from presets.json.

    python experiments/summarize.py

Every result is over the seeds the script trained (0–4): ``mean ± std (worst seed)``, the worst
seed being the lowest accuracy or R² and the highest RMSE or MSE. Nothing here trains or imports JAX.
"""

import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
START, END = "<!-- results table: python experiments/summarize.py -->", "<!-- end of results table -->"
OBS_START, OBS_END = "<!-- seed observations: python experiments/summarize.py -->", "<!-- end of seed observations -->"
SEQ_START, SEQ_END = "<!-- layer presets: python experiments/summarize.py -->", "<!-- end of layer presets -->"
LAYER_PRESETS = ("digits-bn-dropout", "digits-lstm", "digits-attention", "adding-lstm")
"""The presets that train issue 19's layer kinds (BatchNorm and Dropout; LSTM; attention), in the
README's table of them."""
LOWER_IS_BETTER = ("loss", "rmse", "mse")
TABLE_METRICS = ("accuracy", "r2", "rmse", "mse")  # the rows of presets.md, each where a preset has it


def _load(name):
    with open(os.path.join(RESULTS, name, "metrics.json")) as f:
        return json.load(f)


def load_presets(path=None):
    with open(path or os.path.join(RESULTS, "presets.json")) as f:
        return json.load(f)


def seeds_text(seeds) -> str:
    """``[0, 1, 2, 3, 4]`` -> ``"seeds 0–4"`` (as experiments/_common.py names them)."""
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seed" + ("s " if len(seeds) > 1 else " ") + ", ".join(map(str, seeds))


def worst(metric: str, s: dict) -> float:
    """The worst seed's value of ``metric``: the max for losses and RMSE, the min otherwise."""
    return s["max"] if metric in LOWER_IS_BETTER else s["min"]


def fmt(metric: str, s: dict, digits: int = 4) -> str:
    """``"0.9815 ± 0.0061 (worst 0.9741)"`` from a stats dict (mean, std, min, max)."""
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} (worst {worst(metric, s):.{digits}f})"


def rows():
    """(script, network, result over the seeds, manual vs jax.grad curve gap: the largest over the seeds)."""
    m = _load("note000_relu_softmax_l2")
    out = [
        (
            "note000_relu_softmax_l2.py",
            m["network"] + ", spiral, full-batch GD",
            f"train accuracy {fmt('accuracy', m['final']['train']['accuracy'])}; folded vs unfolded curve gap "
            f"≤ {m['folded_vs_unfolded_curve_gap']:.1e}",
            m["manual_vs_autodiff_curve_gap"],
        )
    ]
    m = _load("note001_sigmoid")
    r, c = m["regression"], m["classification"]
    out.append(
        (
            "note001_sigmoid.py",
            r["network"] + ", noisy curve, full-batch GD",
            f"test R² {fmt('r2', r['final']['test']['r2'])}, RMSE {fmt('rmse', r['final']['test']['rmse'])}",
            r["manual_vs_autodiff_curve_gap"],
        )
    )
    out.append(
        (
            "note001_sigmoid.py",
            c["network"] + ", digits",
            f"test accuracy {fmt('accuracy', c['final']['test']['accuracy'])}",
            c["manual_vs_autodiff_curve_gap"],
        )
    )
    m = _load("note002_deep_tanh")
    for d in m["depths"].values():
        out.append(
            (
                "note002_deep_tanh.py",
                d["network"] + ", two moons",
                f"test accuracy {fmt('accuracy', d['final']['test']['accuracy'])}; layer gradient norms max/min "
                f"{d['initial_grad_norm_max_over_min']['mean']:.2f} at the start, "
                f"{d['final_grad_norm_max_over_min']['mean']:.2f} at the end (means)",
                d["manual_vs_autodiff_curve_gap"],
            )
        )
    m = _load("note003_relu_mse_cnn")
    r, c = m["regression"], m["cnn"]
    out.append(
        (
            "note003_relu_mse_cnn.py",
            r["network"] + ", 4-D regression",
            f"test R² {fmt('r2', r['final']['test']['r2'])}, RMSE {fmt('rmse', r['final']['test']['rmse'])}",
            r["manual_vs_autodiff_curve_gap"],
        )
    )
    out.append(
        (
            "note003_relu_mse_cnn.py",
            "CNN " + c["network"] + ", digits 8x8x1",
            f"test accuracy {fmt('accuracy', c['final']['test']['accuracy'])}",
            c["manual_vs_autodiff_curve_gap"],
        )
    )
    return out


def seeds_of_notes():
    """The seeds every note script trained (one list; ``ValueError`` if they differ)."""
    seeds = {
        tuple(_load(n)["seeds"])
        for n in ("note000_relu_softmax_l2", "note001_sigmoid", "note002_deep_tanh", "note003_relu_mse_cnn")
    }
    if len(seeds) != 1:
        raise ValueError(f"the note scripts' results are over different seeds: {sorted(seeds)}")
    return list(seeds.pop())


def table():
    lines = [
        f"| script | network, data | result over {seeds_text(seeds_of_notes())}, manual gradients: "
        "mean ± std (worst seed) | manual vs jax.grad loss-curve gap (largest over the seeds) |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{s}` | {n} | {r} | {g:.1e} |" for s, n, r, g in rows()]
    return "\n".join(lines)


def observations():
    """Generated prose: what the spread over seeds shows where one seed would mislead."""
    r = _load("note001_sigmoid")["regression"]
    r2 = r["final"]["test"]["r2"]["per_seed"]
    seeds = _load("note001_sigmoid")["seeds"]
    good = [s for s, v in zip(seeds, r2) if v >= 0.5]
    stuck = [v for v in r2 if v < 0.5]
    which = f" ({seeds_text(good)})" if good else ""
    text = (
        f"Note 001's regression (full-batch gradient descent on the RSS, {r['epochs']} epochs) depends on the "
        f"seed: {len(good)} of {len(seeds)} seeds{which} {'reaches' if len(good) == 1 else 'reach'} a test R² "
        "of 0.5 or more"
    )
    if stuck:
        text += (
            f"; the others stay on the plateau of a nearly constant fit (test R² at most {max(stuck):.4f}), "
            "which `fit.png` shows"
        )
    return text + "."


def presets_table(presets: dict) -> str:
    """presets.md: the table of every preset over the seeds, from presets.json's contents."""
    seeds = seeds_text(presets["seeds"])
    lines = [
        f"# `jaxnet train` presets over {seeds}",
        "",
        f"Written by `python experiments/presets_over_seeds.py` (jax {presets['jax']}, {presets['device']}). "
        f"Each preset's problem as `jaxnet train --preset P` sets it up (data split with seed "
        f"{presets['split_seed']}), trained from {seeds} side by side as `jaxnet train --preset P "
        f"--seeds {len(presets['seeds'])}` trains them, hand-derived gradients; every seed's final params "
        "evaluated on each split. Mean ± std over the seeds (std with ddof 0), and the worst seed "
        "(lowest accuracy or R², highest RMSE or MSE).",
        "",
        "| preset | network | optimizer, epochs, batch | metric | test: mean ± std (worst) | val: mean ± std (worst) "
        "| train: mean ± std (worst) | test, per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in presets["presets"].items():
        final = p["final"]
        for metric in [k for k in TABLE_METRICS if k in final["test"]]:
            per_seed = ", ".join(f"{v:.4f}" for v in final["test"][metric]["per_seed"])
            lines.append(
                f"| `{name}` | {p['network']} | {p['optimizer']} {p['learning_rate']:g}, {p['epochs']}, "
                f"{p['batch_size']} | {metric} | {fmt(metric, final['test'][metric])} | "
                f"{fmt(metric, final['val'][metric])} | {fmt(metric, final['train'][metric])} | {per_seed} |"
            )
    baselines = [
        f"{p['mean_baseline_mse']['test']:.4f} (`{name}`: {baseline_ratio(p):.0f}× the worst seed's test MSE)"
        for name, p in presets["presets"].items()
        if "mean_baseline_mse" in p
    ]
    if baselines:
        lines += [
            "",
            "The mean baseline (always predicting the training targets' mean, per output) scores a test MSE of "
            + ", ".join(baselines)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def baseline_ratio(preset: dict) -> float:
    """The mean baseline's test MSE over the worst seed's (a regression preset of presets.json)."""
    return preset["mean_baseline_mse"]["test"] / preset["final"]["test"]["mse"]["max"]


def layer_presets(presets: dict | None = None) -> str:
    """experiments/README.md's table of the presets of :data:`LAYER_PRESETS` (from presets.json):
    the test accuracy, or the test MSE beside the mean baseline's, over the seeds."""
    presets = presets or load_presets()
    seeds = seeds_text(presets["seeds"])
    lines = [
        f"| preset | network | test result over {seeds}: mean ± std (worst seed) | optimizer, epochs, batch |",
        "|---|---|---|---|",
    ]
    for name in LAYER_PRESETS:
        p = presets["presets"][name]
        test = p["final"]["test"]
        if "accuracy" in test:
            result = f"accuracy {fmt('accuracy', test['accuracy'])}"
        else:
            base, ratio = p["mean_baseline_mse"]["test"], baseline_ratio(p)
            result = f"MSE {fmt('mse', test['mse'])}; mean baseline {base:.4f}, {ratio:.0f}× the worst seed's"
        lines.append(
            f"| `{name}` | {p['network']} | {result} | {p['optimizer']} {p['learning_rate']:g}, {p['epochs']}, "
            f"{p['batch_size']} |"
        )
    return "\n".join(lines)


def gap_bound(gaps) -> str:
    """The largest gap rounded up to one significant digit: ``[6.2e-4, 1e-6] -> "7e-04"``."""
    g = max(gaps)
    if g <= 0:
        return "0"
    e = math.floor(math.log10(g))
    return f"{math.ceil(round(g / 10**e, 9)) * 10**e:.0e}"


def all_gaps():
    """Every script's manual vs jax.grad curve gap (each the largest over its seeds)."""
    return [g for s, n, r, g in rows()]


def readme_quotes(presets: dict | None = None) -> dict:
    """The results README.md quotes, as the phrases it must contain (tests/test_experiments.py
    checks they are there): name -> phrase."""
    presets = presets or load_presets()
    seeds = seeds_text(presets["seeds"])
    digits, cnn = presets["presets"]["digits"]["final"], presets["presets"]["cnn"]["final"]
    spiral = _load("note000_relu_softmax_l2")["final"]["train"]["accuracy"]
    cnn_note = _load("note003_relu_mse_cnn")["cnn"]["final"]["test"]["accuracy"]
    return {
        "digits": f"test accuracy {fmt('accuracy', digits['test']['accuracy'], 3)} over {seeds}",
        "cnn": f"test accuracy {fmt('accuracy', cnn['test']['accuracy'], 3)} over {seeds}",
        "experiments": (
            f"over {seeds} (e.g. note 000's spiral net at {fmt('accuracy', spiral, 3)} training accuracy, "
            f"the note-003 CNN at {fmt('accuracy', cnn_note, 3)} test accuracy on the digits"
        ),
        "gaps": f"every manual-vs-autodiff loss curve within {gap_bound(all_gaps())} relative",
    }


def _replace_block(text, start, end, body):
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + "\n" + body + "\n" + end + tail


def main():
    path = os.path.join(HERE, "README.md")
    with open(path) as f:
        text = f.read()
    text = _replace_block(text, START, END, table())
    text = _replace_block(text, OBS_START, OBS_END, observations())
    text = _replace_block(text, SEQ_START, SEQ_END, layer_presets())
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(table())
    print(observations())
    print(layer_presets())
    print("\nREADME.md must quote:")
    for name, phrase in readme_quotes().items():
        print(f"  {name}: {phrase}")


if __name__ == "__main__":
    main()
