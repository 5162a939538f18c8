"""Note 001: one hidden sigmoid layer — regression with the residual sum of squares and full-batch
gradient descent (a noisy curve), and K-class classification with softmax (scikit-learn's 8x8
digits, K = 10).

    python experiments/note001_sigmoid.py [--quick]

Each network is trained with manual gradients and, from the same seed, with jax.grad; the curves
must agree. Writes fit.png, regression_curves.png, classification_curves.png, metrics.json.
"""

import os

import jax

import jaxnet
from _common import arguments, evaluate_all, plot_curves, train_both, write_metrics
from jaxnet import data, plots


def regression(args):
    """1-20-1 sigmoid, L = Σ_i (y_i − f(x_i))² (sum reduction), w ← w − γ Σ_i ∂L_i/∂w, full batch."""
    x, y = data.regression_1d(n=200, seed=0)
    split = data.standardize(data.split(x, y, seed=0))
    net = jaxnet.mlp([1, 20, 1], "sigmoid", "squared_error", "sum")
    key_init, key_train = jax.random.split(jax.random.key(1))
    params = jaxnet.init_params(key_init, net)
    epochs = 50 if args.quick else 6000
    results, gap, seconds = train_both(net, params, split.x_train, split.y_train, jaxnet.train.sgd(3e-3), epochs,
                                       len(split.x_train), key_train, val=(split.x_val, split.y_val))
    manual = results["manual"]
    plots.regression_fit(manual.params, net, split.x_train, split.y_train, os.path.join(args.out, "fit.png"))
    plot_curves({"manual gradients": manual.history["train_loss"], "jax.grad": results["autodiff"].history["train_loss"]},
                os.path.join(args.out, "regression_curves.png"), "train RSS")
    return {"network": str(net), "data": "regression_1d (200 noisy points of a curve), standardised, 70/15/15 split",
            "optimizer": "full-batch gradient descent, lr 3e-3", "epochs": epochs, "final": evaluate_all(manual.params, net, split),
            "manual_vs_autodiff_curve_gap": gap, "seconds_manual": seconds["manual"]}


def classification(args):
    """64-32-10 sigmoid hidden layer, softmax cross-entropy (mean), mini-batch SGD."""
    x, y = data.digits()
    split = data.standardize(data.split(x, y, seed=0))
    net = jaxnet.mlp([64, 32, 10], "sigmoid", "softmax_cross_entropy")
    key_init, key_train = jax.random.split(jax.random.key(2))
    params = jaxnet.init_params(key_init, net)
    epochs = 3 if args.quick else 60
    results, gap, seconds = train_both(net, params, split.x_train, split.y_train, jaxnet.train.sgd(0.5), epochs, 32,
                                       key_train, val=(split.x_val, split.y_val))
    manual = results["manual"]
    plot_curves({"manual gradients": manual.history["train_loss"], "jax.grad": results["autodiff"].history["train_loss"]},
                os.path.join(args.out, "classification_curves.png"))
    return {"network": str(net), "data": "scikit-learn digits 8x8 (flat, 64 features, K = 10), standardised, 70/15/15 split",
            "optimizer": "SGD lr 0.5, batch 32", "epochs": epochs, "final": evaluate_all(manual.params, net, split),
            "manual_vs_autodiff_curve_gap": gap, "seconds_manual": seconds["manual"]}


def main():
    args = arguments("note001_sigmoid", __doc__)
    write_metrics(args.out, {"regression": regression(args), "classification": classification(args)})


if __name__ == "__main__":
    main()
