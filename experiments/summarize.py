"""Rewrite the results table of experiments/README.md from the scripts' own metrics.json files.

    python experiments/summarize.py
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
START, END = "<!-- results table: python experiments/summarize.py -->", "<!-- end of results table -->"


def _load(name):
    with open(os.path.join(HERE, "results", name, "metrics.json")) as f:
        return json.load(f)


def rows():
    """(script, network, result, manual vs jax.grad curve gap, seconds of the manual run)."""
    m = _load("note000_relu_softmax_l2")
    out = [("note000_relu_softmax_l2.py", m["network"] + ", spiral, full-batch GD",
            f"train accuracy {m['train_accuracy']:.4f}; folded vs unfolded curve gap {m['folded_vs_unfolded_curve_gap']:.1e}",
            m["manual_vs_autodiff_curve_gap"], m["seconds_manual"])]
    m = _load("note001_sigmoid")
    r, c = m["regression"], m["classification"]
    out.append(("note001_sigmoid.py", r["network"] + ", noisy curve, full-batch GD",
                f"test R² {r['final']['test']['r2']:.4f}, RMSE {r['final']['test']['rmse']:.4f}",
                r["manual_vs_autodiff_curve_gap"], r["seconds_manual"]))
    out.append(("note001_sigmoid.py", c["network"] + ", digits",
                f"test accuracy {c['final']['test']['accuracy']:.4f}", c["manual_vs_autodiff_curve_gap"], c["seconds_manual"]))
    m = _load("note002_deep_tanh")
    for depth, d in m["depths"].items():
        out.append(("note002_deep_tanh.py", d["network"] + ", two moons",
                    f"test accuracy {d['final']['test']['accuracy']:.4f}; layer gradient norms max/min "
                    f"{d['initial_grad_norm_max_over_min']:.2f} at the start, {d['final_grad_norm_max_over_min']:.2f} at the end", d["manual_vs_autodiff_curve_gap"], d["seconds_manual"]))
    m = _load("note003_relu_mse_cnn")
    r, c = m["regression"], m["cnn"]
    out.append(("note003_relu_mse_cnn.py", r["network"] + ", 4-D regression",
                f"test R² {r['final']['test']['r2']:.4f}, RMSE {r['final']['test']['rmse']:.4f}",
                r["manual_vs_autodiff_curve_gap"], r["seconds_manual"]))
    out.append(("note003_relu_mse_cnn.py", "CNN " + c["network"] + ", digits 8x8x1",
                f"test accuracy {c['final']['test']['accuracy']:.4f}", c["manual_vs_autodiff_curve_gap"], c["seconds_manual"]))
    return out


def table():
    lines = ["| script | network, data | result (manual gradients) | manual vs jax.grad loss-curve gap | manual run, s |",
             "|---|---|---|---|---|"]
    lines += [f"| `{s}` | {n} | {r} | {g:.1e} | {t:.1f} |" for s, n, r, g, t in rows()]
    return "\n".join(lines)


def main():
    path = os.path.join(HERE, "README.md")
    text = open(path).read()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + START + "\n" + table() + "\n" + END + tail)
    print(table())


if __name__ == "__main__":
    main()
