"""Shared by the experiment scripts: train every network over the seeds ``SEEDS`` side by side
(``jaxnet.sweep``) with manual gradients and with jax.grad, compare the curves, summarise the
final metrics over seeds (mean, std, min, max), write metrics.json and plots into
experiments/results/<name>/.

Outputs are staged: a script writes into a fresh folder next to its results folder and the files
replace the committed ones only when the whole script has finished (each by an atomic rename);
``--quick`` runs write to a temporary folder and refuse the committed one."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from summarize import seeds_text  # noqa: F401  (re-exported: the scripts name their seeds with it)

import jaxnet
from jaxnet import sweep

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SEEDS = (0, 1, 2, 3, 4)  # every experiment and preset result is over these seeds


def arguments(name: str, doc: str, committed: str | None = None, extra=None):
    """``--quick`` (a smoke run: few epochs, the first two seeds) and ``--out``; ``args.seeds``:
    the seeds to train (``SEEDS``; ``SEEDS[:2]`` with ``--quick``).

    ``--out`` defaults to ``committed`` (experiments/results/<name> unless given) for a full run
    and to a folder under the system's temporary directory for ``--quick``; a quick run into the
    committed folder is refused (``SystemExit`` with a message), so the committed results only
    ever come from full runs. ``extra(parser)`` adds a script's own flags."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few epochs and two seeds only (a smoke test; never written to the committed results)",
    )
    parser.add_argument(
        "--out",
        help=f"output folder (default: {os.path.relpath(committed or os.path.join(RESULTS, name))}; "
        "with --quick, a temporary folder)",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    committed = committed or os.path.join(RESULTS, name)
    if args.out is None:
        args.out = os.path.join(tempfile.gettempdir(), "jaxnet-experiments-quick", name) if args.quick else committed
    if args.quick and os.path.realpath(args.out) == os.path.realpath(committed):
        parser.error(f"--quick does not write into the committed results {committed}; give another --out")
    args.seeds = SEEDS[:2] if args.quick else SEEDS
    return args


@contextlib.contextmanager
def staged(out: str):
    """A fresh folder beside ``out`` to write into; on success its files replace those in ``out``
    (``os.replace`` each: atomic), on an exception it is removed and ``out`` is left as it was."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix="." + os.path.basename(out) + "-partial-", dir=parent)
    try:
        yield stage
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(stage)):
            os.replace(os.path.join(stage, name), os.path.join(out, name))
        print(f"wrote {out}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def train_seeds(net, x, y, optimizer: str, lr: float, epochs: int, batch_size: int, seeds, val=None):
    """``net`` trained from every seed side by side (``jaxnet.sweep.run``), with manual
    gradients and with jax.grad: replica ``s`` is ``fit`` from ``key_init, key_train =
    split(key(s))``, ``init_params(key_init, net)``.

    Returns ``(manual SweepResult, jax.grad SweepResult, gaps)``, ``gaps[i]`` the
    :func:`curve_gap` of seed ``seeds[i]``'s two train-loss curves."""
    replicas = sweep.grid(net, seeds=seeds, lr=(lr,))
    runs = {
        grads: sweep.run(replicas, x, y, optimizer, epochs, batch_size, grads=grads, val=val)
        for grads in ("manual", "autodiff")
    }
    gaps = [
        curve_gap(m["train_loss"], a["train_loss"]) for m, a in zip(runs["manual"].history, runs["autodiff"].history)
    ]
    return runs["manual"], runs["autodiff"], gaps


def curve_gap(a, b) -> float:
    """max_t |a_t − b_t| / |b_t|: how far two loss curves are apart."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def stats(values) -> dict:
    """Per-seed values [S] -> ``{"per_seed", "mean", "std", "min", "max"}``; std with ddof 0, as
    ``jaxnet.sweep.summary`` and ``jaxnet train --seeds`` print it."""
    v = np.asarray(values, np.float64)
    return {
        "per_seed": v.tolist(),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def over_seeds(per_seed: list) -> dict:
    """Nested dicts of floats, one per seed (``{"test": {"accuracy": ...}, ...}``) -> the same
    nesting with :func:`stats` of each leaf over the seeds."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {k: over_seeds([d[k] for d in per_seed]) for k in first}
    return stats(per_seed)


def evaluate_all(params, net, split, state=None) -> dict:
    """``{"train"|"val"|"test": jaxnet.train.evaluate(...)}`` of one set of params (and the
    network's state, for BatchNorm)."""
    return {
        name: jaxnet.train.evaluate(params, net, xs, ys, state)
        for name, (xs, ys) in {
            "train": (split.x_train, split.y_train),
            "val": (split.x_val, split.y_val),
            "test": (split.x_test, split.y_test),
        }.items()
        if len(xs)
    }


def band(ax, curves, label, style="-", color=None, linewidth=2.0):
    """The mean over seeds of ``curves`` [S, T] per epoch, with a shaded min–max band; returns
    the line's colour."""
    c = np.asarray(curves, np.float64)
    epochs = np.arange(1, c.shape[1] + 1)
    (line,) = ax.plot(epochs, c.mean(axis=0), style, color=color, linewidth=linewidth, label=label)
    ax.fill_between(epochs, c.min(axis=0), c.max(axis=0), color=line.get_color(), alpha=0.2, linewidth=0)
    return line.get_color()


def plot_curves(curves: dict, path: str, ylabel: str = "train loss", log: bool = True) -> None:
    """Per-epoch curves over seeds (label -> [S, T]) on one axis: each the mean over the seeds
    with its min–max band; dashed after the first."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, values) in enumerate(curves.items()):
        band(ax, values, f"{label} (mean)", "--" if i else "-", linewidth=1.5 if i else 2.5)
    ax.set_title(f"mean over {len(next(iter(curves.values())))} seeds, band: min–max", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def histories(result, name: str = "train_loss") -> np.ndarray:
    """A sweep's per-epoch ``name`` of every replica: [R, T]."""
    return np.asarray([h[name] for h in result.history])


def write_metrics(out: str, seeds, metrics: dict) -> None:
    """metrics.json in ``out`` (a staging folder from :func:`staged`), with the seeds, the JAX
    version and the device."""
    metrics = {"jax": jax.__version__, "device": jax.devices()[0].platform, "seeds": list(seeds), **metrics}
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, indent=1))
