"""Note 003: the three-layer ReLU regression with MSE (eqs. 2–9, plain gradient descent with the
sign of eq. (3) fixed), and the CNN that the note leaves unfinished, on scikit-learn's 8x8 digit
images (conv16-pool-conv32-pool-dense64-dense10, softmax cross-entropy), over seeds 0–4.

    python experiments/note003_relu_mse_cnn.py [--quick]

Both networks are trained from every seed side by side (``jaxnet.sweep``; the CNN is the preset
``cnn``, so its runs are those of ``experiments/presets_over_seeds.py``) with manual gradients and
with jax.grad; per seed the two curves must agree. Writes regression_curves.png and
cnn_curves.png (mean over the seeds, min–max band), confusion_matrix.png (the test set, summed over
the seeds) and metrics.json (per seed and mean / std / min / max).
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
from jaxnet.presets import TRAIN_PRESETS


def regression(args, out):
    """z1 = W1 x + b1, a1 = ReLU(z1), z2 = W2 a1 + b2, a2 = ReLU(z2), h = W3 a2 + b3; J = 1/N Σ ||h − y||²."""
    x, y = data.regression(n=600, d=4, outputs=2, seed=0)
    split = data.standardize(data.split(x, y, seed=0))
    net = jaxnet.mlp([4, 16, 16, 2], "relu", "squared_error", "mean")
    epochs = 5 if args.quick else 300
    manual, autodiff, gaps = train_seeds(
        net, split.x_train, split.y_train, "sgd", 0.02, epochs, 32, args.seeds, val=(split.x_val, split.y_val)
    )
    plot_curves(
        {"manual gradients": histories(manual), "jax.grad": histories(autodiff)},
        os.path.join(out, "regression_curves.png"),
        "train MSE",
    )
    return {
        "network": str(net),
        "data": "regression: 600 points, 4 features, 2 outputs, standardised, 70/15/15 split",
        "optimizer": "SGD (p − μ ∂J/∂p) lr 0.02, batch 32",
        "epochs": epochs,
        "final": over_seeds([evaluate_all(p, net, split) for p in manual.params]),
        "manual_vs_autodiff_curve_gap": max(gaps),
        "manual_vs_autodiff_curve_gaps": gaps,
    }


def confusion(params, net, split) -> np.ndarray:
    """[10, 10] test-set counts: row the true class, column the predicted one."""
    predicted = np.asarray(jaxnet.predict(params, net, split.x_test)).argmax(axis=1)
    counts = np.zeros((10, 10), int)
    np.add.at(counts, (np.asarray(split.y_test), predicted), 1)
    return counts


def cnn(args, out):
    preset = TRAIN_PRESETS["cnn"]
    x, y = data.digits(images=True)
    split = data.standardize(data.split(x, y, seed=0))
    net = preset.build(split.x_train.shape[1:], 10)
    epochs = 2 if args.quick else preset.epochs
    manual, autodiff, gaps = train_seeds(
        net,
        split.x_train,
        split.y_train,
        preset.optimizer,
        preset.learning_rate,
        epochs,
        preset.batch_size,
        args.seeds,
        val=(split.x_val, split.y_val),
    )
    plot_curves(
        {"manual gradients": histories(manual), "jax.grad": histories(autodiff)}, os.path.join(out, "cnn_curves.png")
    )
    per_seed = [confusion(p, net, split) for p in manual.params]
    total = np.sum(per_seed, axis=0)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(total, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if total[i, j]:
                ax.text(
                    j,
                    i,
                    total[i, j],
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if total[i, j] > total.max() / 2 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_title(
        f"CNN on digits, test set ({len(split.y_test)} images),\nsummed over {seeds_text(args.seeds)}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(os.path.join(out, "confusion_matrix.png"), dpi=100)
    plt.close(fig)
    return {
        "network": str(net),
        "preset": preset.name,
        "data": "scikit-learn digits as 8x8x1 images, standardised, 70/15/15 split",
        "optimizer": f"Adam lr {preset.learning_rate:g}, batch {preset.batch_size}",
        "epochs": epochs,
        "final": over_seeds([evaluate_all(p, net, split) for p in manual.params]),
        "confusion_matrix_test": [c.tolist() for c in per_seed],
        "manual_vs_autodiff_curve_gap": max(gaps),
        "manual_vs_autodiff_curve_gaps": gaps,
    }


def main():
    args = arguments("note003_relu_mse_cnn", __doc__)
    with staged(args.out) as out:
        write_metrics(
            out,
            args.seeds,
            {
                "regression": regression(args, out),
                "cnn": cnn(args, out),
                "note": f"every value over {seeds_text(args.seeds)} (confusion matrices: per seed); "
                "curve gaps are the largest over the seeds",
            },
        )


if __name__ == "__main__":
    main()
