"""Shared by the experiment scripts: train with manual gradients and with jax.grad from the same
seed, compare the curves, write metrics.json and plots into experiments/results/<name>/."""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxnet  # noqa: E402
from jaxnet.train import fit  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def arguments(name: str, doc: str):
    """``--quick`` (a smoke run: few epochs) and ``--out`` (default experiments/results/<name>)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs only (a smoke test)")
    parser.add_argument("--out", default=os.path.join(RESULTS, name))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    return args


def train_both(net, params, x, y, optimizer, epochs, batch_size, key, val=None, on_epoch=None):
    """``fit`` with manual gradients and with jax.grad, same params, data order and optimizer.

    Returns ``({"manual": FitResult, "autodiff": FitResult}, the largest relative gap between
    their train-loss curves, the wall-clock seconds of the manual run)``."""
    results, seconds = {}, {}
    for grads in ("manual", "autodiff"):
        start = time.perf_counter()
        results[grads] = fit(net, params, x, y, optimizer, epochs, batch_size, key, grads=grads, val=val,
                             on_epoch=on_epoch if grads == "manual" else None)
        seconds[grads] = time.perf_counter() - start
    return results, curve_gap(results["manual"].history["train_loss"], results["autodiff"].history["train_loss"]), seconds


def curve_gap(a, b) -> float:
    """max_t |a_t − b_t| / |b_t|: how far two loss curves are apart."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def plot_curves(curves: dict, path: str, ylabel: str = "train loss", log: bool = True) -> None:
    """Several per-epoch curves on one axis (label -> values); dashed after the first."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, values) in enumerate(curves.items()):
        ax.plot(np.arange(1, len(values) + 1), values, "--" if i else "-", label=label, linewidth=1.5 if i else 2.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_metrics(out: str, metrics: dict) -> None:
    metrics = {"jax": jax.__version__, "device": jax.devices()[0].platform, **metrics}
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, indent=1))
    print(f"wrote {out}")


def evaluate_all(params, net, split) -> dict:
    return {name: jaxnet.train.evaluate(params, net, xs, ys) for name, (xs, ys) in
            {"train": (split.x_train, split.y_train), "val": (split.x_val, split.y_val),
             "test": (split.x_test, split.y_test)}.items() if len(xs)}
