"""Note 003: the three-layer ReLU regression with MSE (eqs. 2–9, plain gradient descent with the
sign of eq. (3) fixed), and the CNN that the note leaves unfinished, on scikit-learn's 8x8 digit
images (conv16-pool-conv32-pool-dense64-dense10, softmax cross-entropy).

    python experiments/note003_relu_mse_cnn.py [--quick]

Both networks are trained with manual gradients and, from the same seed, with jax.grad; the curves
must agree. Writes regression_curves.png, cnn_curves.png, confusion_matrix.png, metrics.json.
"""

import os

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxnet
from _common import arguments, evaluate_all, plot_curves, train_both, write_metrics
from jaxnet import data
from jaxnet.presets import TRAIN_PRESETS


def regression(args):
    """z1 = W1 x + b1, a1 = ReLU(z1), z2 = W2 a1 + b2, a2 = ReLU(z2), h = W3 a2 + b3; J = 1/N Σ ||h − y||²."""
    x, y = data.regression(n=600, d=4, outputs=2, seed=0)
    split = data.standardize(data.split(x, y, seed=0))
    net = jaxnet.mlp([4, 16, 16, 2], "relu", "squared_error", "mean")
    key_init, key_train = jax.random.split(jax.random.key(3))
    params = jaxnet.init_params(key_init, net)
    epochs = 5 if args.quick else 300
    results, gap, seconds = train_both(net, params, split.x_train, split.y_train, jaxnet.train.sgd(0.02), epochs, 32,
                                       key_train, val=(split.x_val, split.y_val))
    manual = results["manual"]
    plot_curves({"manual gradients": manual.history["train_loss"], "jax.grad": results["autodiff"].history["train_loss"]},
                os.path.join(args.out, "regression_curves.png"), "train MSE")
    return {"network": str(net), "data": "regression: 600 points, 4 features, 2 outputs, standardised, 70/15/15 split",
            "optimizer": "SGD (p − μ ∂J/∂p) lr 0.02, batch 32", "epochs": epochs,
            "final": evaluate_all(manual.params, net, split), "manual_vs_autodiff_curve_gap": gap,
            "seconds_manual": seconds["manual"]}


def cnn(args):
    x, y = data.digits(images=True)
    split = data.standardize(data.split(x, y, seed=0))
    net = TRAIN_PRESETS["cnn"].build(split.x_train.shape[1:], 10)
    key_init, key_train = jax.random.split(jax.random.key(4))
    params = jaxnet.init_params(key_init, net)
    epochs = 2 if args.quick else 30
    results, gap, seconds = train_both(net, params, split.x_train, split.y_train, optax.adam(2e-3), epochs, 64,
                                       key_train, val=(split.x_val, split.y_val))
    manual = results["manual"]
    plot_curves({"manual gradients": manual.history["train_loss"], "jax.grad": results["autodiff"].history["train_loss"]},
                os.path.join(args.out, "cnn_curves.png"))
    predicted = np.asarray(jaxnet.predict(manual.params, net, split.x_test)).argmax(axis=1)
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (np.asarray(split.y_test), predicted), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(confusion, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if confusion[i, j]:
                ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=8,
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_title(f"CNN on digits, test set ({len(split.y_test)} images)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "confusion_matrix.png"), dpi=100)
    plt.close(fig)
    return {"network": str(net), "data": "scikit-learn digits as 8x8x1 images, standardised, 70/15/15 split",
            "optimizer": "Adam lr 2e-3, batch 64", "epochs": epochs, "final": evaluate_all(manual.params, net, split),
            "confusion_matrix_test": confusion.tolist(), "manual_vs_autodiff_curve_gap": gap,
            "seconds_manual": seconds["manual"]}


def main():
    args = arguments("note003_relu_mse_cnn", __doc__)
    write_metrics(args.out, {"regression": regression(args), "cnn": cnn(args)})


if __name__ == "__main__":
    main()
