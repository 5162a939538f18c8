"""PNG plots of a training run (matplotlib, headless).

Each function saves its figure to ``path``, closes it and returns it: a closed
:class:`matplotlib.figure.Figure` can still be inspected (axes labels, legend entries, artists).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm
from matplotlib.lines import Line2D

from .layers import Dense
from .network import Network, predict

_predict = jax.jit(predict)  # one program for a plot's grid, not one per eager operation

CLASS_CMAP = "viridis"


def _save(fig, path: str):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def curves(history: dict, path: str):
    """Loss (train / validation) and accuracy or RMSE per epoch (the epochs that were evaluated:
    NaN entries are left out); returns the (closed) figure."""
    second = "accuracy" if "train_accuracy" in history else "rmse"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", second)):
        for split in ("train", "val"):
            values = np.asarray(history.get(f"{split}_{metric}", []), float)
            evaluated = np.isfinite(values)  # epochs fit did not evaluate (eval_every > 1) are NaN
            if evaluated.any():
                epochs = np.arange(1, len(values) + 1)[evaluated]
                ax.plot(epochs, values[evaluated], marker="." if evaluated.sum() < 40 else None, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        losses = np.asarray(history["train_loss"], float)
        positive = np.isfinite(losses).any() and np.nanmin(losses) > 0
        ax.set_yscale("log" if metric == "loss" and positive else "linear")
        if ax.get_lines():
            ax.legend()
    return _save(fig, path)


def class_colours(k: int):
    """The colormap and norm that give class ``c`` in ``0..k-1`` one colour: ``cmap(norm(c))``,
    the same in the regions (``contourf``), the points (``scatter``) and the legend."""
    cmap = plt.get_cmap(CLASS_CMAP, k)
    return cmap, BoundaryNorm(np.arange(-0.5, k), cmap.N)


def _labels(y, n: int) -> np.ndarray:
    """Integer class labels ``[n]`` from int labels ``[n]``, 0/1 targets ``[n]`` / ``[n, 1]``, or
    one-hot / probability rows ``[n, K]``."""
    y = np.asarray(y).reshape(n, -1)
    return (y.argmax(axis=1) if y.shape[1] > 1 else np.rint(y[:, 0])).astype(int)


def decision_boundary(
    params,
    net,
    x,
    y,
    path: str,
    steps: int = 200,
    *,
    axis_labels: tuple[str, str] = ("feature 0", "feature 1"),
    state=None,
):
    """Predicted class over the plane of 2-D inputs, with the data on top, axis labels and one
    legend entry per class (its colour in the regions and the points); returns the (closed) figure.

    ``axis_labels``: the names of the two input features (say ``"x₀ (standardised)"``);
    ``state``: the network's state (BatchNorm), for its predictions in evaluation mode.
    """
    lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], steps), np.linspace(lo[1], hi[1], steps))
    grid = np.stack([g0.ravel(), g1.ravel()], axis=1)  # [steps², 2]
    dtype = np.asarray(jax.tree.leaves(params)[0]).dtype
    probs = np.asarray(_predict(params, net, grid.astype(dtype), state=state))
    classes = probs.argmax(axis=1) if probs.shape[1] > 1 else (probs[:, 0] > 0.5).astype(int)
    labels = _labels(y, len(x))
    k = max(probs.shape[1], 2, int(labels.max()) + 1 if len(labels) else 0)
    cmap, norm = class_colours(k)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contourf(g0, g1, classes.reshape(g0.shape), levels=np.arange(-0.5, k), cmap=cmap, norm=norm, alpha=0.3)
    ax.scatter(x[:, 0], x[:, 1], c=labels, s=12, cmap=cmap, norm=norm, edgecolors="k", linewidths=0.3)
    ax.legend(
        handles=[
            Line2D(
                [],
                [],
                linestyle="",
                marker="o",
                markerfacecolor=cmap(norm(c)),
                markeredgecolor="k",
                markeredgewidth=0.3,
                label=f"class {c}",
            )
            for c in range(k)
        ],
        fontsize=8,
        loc="best",
    )
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title("decision boundary")
    return _save(fig, path)


def regression_fit(
    params, net, x, y, path: str, *, axis_labels: tuple[str, str] = ("x (standardised)", "y"), state=None
):
    """Data and the fitted curve of a 1-D regression, with axis labels; returns the (closed) figure."""
    grid = np.linspace(x.min(), x.max(), 300)[:, None]
    dtype = np.asarray(jax.tree.leaves(params)[0]).dtype
    fit = np.asarray(_predict(params, net, grid.astype(dtype), state=state)).reshape(len(grid), -1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(x[:, 0], np.asarray(y).reshape(len(x), -1)[:, 0], s=8, alpha=0.6, label="data")
    ax.plot(grid[:, 0], fit[:, 0], "r", label="network")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.legend()
    return _save(fig, path)


def network_label(net: Network) -> str:
    """A network's layers in a few characters: the sizes ``"64-128-10"`` of an MLP, else the
    layer kinds ``"LSTM > Dense"`` (a CNN's or a sequence network's sizes are no list of widths)."""
    if all(isinstance(layer, Dense) for layer in net.layers):
        return "-".join(map(str, net.sizes))
    return " > ".join(type(layer).__name__ for layer in net.layers)


def sweep_curves(result, path: str, metric: str = "train_loss"):
    """Every configuration's ``metric`` per epoch: the mean over its seeds, and a band of ± one std;
    returns the (closed) figure."""
    configs: dict = {}
    for r, h in zip(result.replicas, result.history):
        configs.setdefault(f"{network_label(r.net)} {r.label()}", []).append(h[metric])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in configs.items():
        c = np.asarray(curves)  # [seeds, epochs]
        with np.errstate(invalid="ignore"):  # a diverged replica's inf: no band where std is NaN
            mean, std = c.mean(axis=0), c.std(axis=0)
        epochs = np.arange(1, c.shape[1] + 1)
        (line,) = ax.plot(epochs, mean, label=f"{label} ({len(c)} seeds)")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    if np.all(np.asarray([v for cs in configs.values() for v in np.ravel(cs)]) > 0):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    return _save(fig, path)
