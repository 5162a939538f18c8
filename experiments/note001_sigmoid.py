"""Note 001: one hidden sigmoid layer — regression with the residual sum of squares and full-batch
gradient descent (a noisy curve), and K-class classification with softmax (scikit-learn's 8x8
digits, K = 10), over seeds 0–4.

    python experiments/note001_sigmoid.py [--quick]

Each network is trained from every seed side by side (``jaxnet.sweep``) with manual gradients and
with jax.grad; per seed the two curves must agree. Writes fit.png (every seed's fitted curve),
regression_curves.png and classification_curves.png (mean over the seeds, min–max band) and
metrics.json (per seed and mean / std / min / max).
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from _common import (
    arguments,
    evaluate_all,
    histories,
    over_seeds,
    plot_curves,
    seeds_text,
    staged,
    train_seeds,
    write_metrics,
)

import jaxnet
from jaxnet import data


def regression(args, out):
    """1-20-1 sigmoid, L = Σ_i (y_i − f(x_i))² (sum reduction), w ← w − γ Σ_i ∂L_i/∂w, full batch."""
    x, y = data.regression_1d(n=200, seed=0)
    split = data.standardize(data.split(x, y, seed=0))
    net = jaxnet.mlp([1, 20, 1], "sigmoid", "squared_error", "sum")
    epochs = 50 if args.quick else 6000
    manual, autodiff, gaps = train_seeds(
        net,
        split.x_train,
        split.y_train,
        "sgd",
        3e-3,
        epochs,
        len(split.x_train),
        args.seeds,
        val=(split.x_val, split.y_val),
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(split.x_train[:, 0], split.y_train[:, 0], s=8, alpha=0.6, label="training data")
    grid = np.linspace(split.x_train.min(), split.x_train.max(), 300, dtype=np.float32)[:, None]
    for seed, params in zip(args.seeds, manual.params):
        ax.plot(grid[:, 0], np.asarray(jaxnet.predict(params, net, grid))[:, 0], linewidth=1, label=f"seed {seed}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fit.png"), dpi=100)
    plt.close(fig)
    plot_curves(
        {"manual gradients": histories(manual), "jax.grad": histories(autodiff)},
        os.path.join(out, "regression_curves.png"),
        "train RSS",
    )
    return {
        "network": str(net),
        "data": "regression_1d (200 noisy points of a curve), standardised, 70/15/15 split",
        "optimizer": "full-batch gradient descent, lr 3e-3",
        "epochs": epochs,
        "final": over_seeds([evaluate_all(p, net, split) for p in manual.params]),
        "manual_vs_autodiff_curve_gap": max(gaps),
        "manual_vs_autodiff_curve_gaps": gaps,
    }


def classification(args, out):
    """64-32-10 sigmoid hidden layer, softmax cross-entropy (mean), mini-batch SGD."""
    x, y = data.digits()
    split = data.standardize(data.split(x, y, seed=0))
    net = jaxnet.mlp([64, 32, 10], "sigmoid", "softmax_cross_entropy")
    epochs = 3 if args.quick else 60
    manual, autodiff, gaps = train_seeds(
        net, split.x_train, split.y_train, "sgd", 0.5, epochs, 32, args.seeds, val=(split.x_val, split.y_val)
    )
    plot_curves(
        {"manual gradients": histories(manual), "jax.grad": histories(autodiff)},
        os.path.join(out, "classification_curves.png"),
    )
    return {
        "network": str(net),
        "data": "scikit-learn digits 8x8 (flat, 64 features, K = 10), standardised, 70/15/15 split",
        "optimizer": "SGD lr 0.5, batch 32",
        "epochs": epochs,
        "final": over_seeds([evaluate_all(p, net, split) for p in manual.params]),
        "manual_vs_autodiff_curve_gap": max(gaps),
        "manual_vs_autodiff_curve_gaps": gaps,
    }


def main():
    args = arguments("note001_sigmoid", __doc__)
    with staged(args.out) as out:
        write_metrics(
            out,
            args.seeds,
            {
                "regression": regression(args, out),
                "classification": classification(args, out),
                "note": f"every value over {seeds_text(args.seeds)}; curve gaps are the largest over the seeds",
            },
        )


if __name__ == "__main__":
    main()
