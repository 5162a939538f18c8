"""PNG plots of a training run (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .network import predict  # noqa: E402


def curves(history: dict, path: str) -> None:
    """Loss (train / validation) and accuracy or RMSE per epoch."""
    second = "accuracy" if "train_accuracy" in history else "rmse"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", second)):
        for split in ("train", "val"):
            values = history.get(f"{split}_{metric}")
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_yscale("log" if metric == "loss" and min(history["train_loss"]) > 0 else "linear")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def decision_boundary(params, net, x, y, path: str, steps: int = 200) -> None:
    """Predicted class over the plane of 2-D inputs, with the data on top."""
    lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], steps), np.linspace(lo[1], hi[1], steps))
    grid = np.stack([g0.ravel(), g1.ravel()], axis=1)  # [steps², 2]
    probs = np.asarray(predict(params, net, grid.astype(np.asarray(params[0]["W"]).dtype)))
    classes = probs.argmax(axis=1) if probs.shape[1] > 1 else (probs[:, 0] > 0.5).astype(int)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contourf(g0, g1, classes.reshape(g0.shape), alpha=0.3, cmap="viridis")
    ax.scatter(x[:, 0], x[:, 1], c=np.asarray(y).reshape(len(x), -1)[:, 0], s=12, cmap="viridis", edgecolors="k", linewidths=0.3)
    ax.set_title("decision boundary")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def regression_fit(params, net, x, y, path: str) -> None:
    """Data and the fitted curve of a 1-D regression."""
    grid = np.linspace(x.min(), x.max(), 300)[:, None]
    fit = np.asarray(predict(params, net, grid.astype(np.asarray(params[0]["W"]).dtype)))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(x[:, 0], np.asarray(y)[:, 0], s=8, alpha=0.6, label="data")
    ax.plot(grid[:, 0], fit[:, 0], "r", label="network")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep_curves(result, path: str, metric: str = "train_loss") -> None:
    """Every configuration's ``metric`` per epoch: the mean over its seeds, and a band of ± one std."""
    configs: dict = {}
    for r, h in zip(result.replicas, result.history):
        configs.setdefault(f"{r.net.sizes} {r.label()}", []).append(h[metric])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in configs.items():
        c = np.asarray(curves)  # [seeds, epochs]
        mean, std = c.mean(axis=0), c.std(axis=0)
        epochs = np.arange(1, c.shape[1] + 1)
        line, = ax.plot(epochs, mean, label=f"{label} ({len(c)} seeds)")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    if np.all(np.asarray([v for cs in configs.values() for v in np.ravel(cs)]) > 0):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
