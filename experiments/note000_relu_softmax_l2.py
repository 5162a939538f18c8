"""Note 000: one hidden ReLU layer, softmax cross-entropy, L2, biases folded into the weights, on the
3-class spiral (300 points), full-batch gradient descent.

    python experiments/note000_relu_softmax_l2.py [--quick]

Trains (1) jaxnet's network with manual gradients, (2) the same with jax.grad, (3) the note's folded
formulation — inputs and hidden values extended by a constant 1, weights [(D + 1) × H] and
[(H + 1) × K], the corrected formulas of the derivation audit — all from the same initial weights;
the three loss curves must agree. Writes decision_boundary.png, curves.png and metrics.json.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxnet
from _common import arguments, curve_gap, plot_curves, train_both, write_metrics
from derivation_audit import relu_softmax_l2_grads, relu_softmax_l2_loss
from jaxnet import data, plots

HIDDEN, L2, LR = 100, 1e-3, 1.0


def train_folded(folded, x, y, epochs):
    """The note's folded formulation: w ← w − lr dw, one full-batch step per epoch (lax.scan)."""

    def epoch(w, _):
        w = jax.tree.map(lambda a, g: a - LR * g, w, relu_softmax_l2_grads(w, x, y, L2, heaviside=True, per_n=True))
        return w, relu_softmax_l2_loss(w, x, y, L2)

    w, losses = jax.jit(lambda w: jax.lax.scan(epoch, w, None, length=epochs))({"w1": folded[0], "w2": folded[1]})
    return w, np.asarray(losses)


def main():
    args = arguments("note000_relu_softmax_l2", __doc__)
    epochs = 50 if args.quick else 4000
    x, y = data.spiral(n_per_class=100, classes=3, seed=0)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    net = jaxnet.mlp([2, HIDDEN, 3], "relu", "softmax_cross_entropy", "mean", l2=L2, l2_bias=True)  # L2 on the folded biases too
    key_init, key_train = jax.random.split(jax.random.key(0))
    params = jaxnet.init_params(key_init, net)
    params[0]["b"] = 0.01 * jnp.ones_like(params[0]["b"])  # small positive biases: no unit starts dead
    results, gap, seconds = train_both(net, params, x, y, jaxnet.train.sgd(LR), epochs, len(x), key_train)
    folded_w, folded_losses = train_folded(jaxnet.fold_biases(params), x, y, epochs)
    manual = results["manual"]
    folded_gap = curve_gap(folded_losses, manual.history["train_loss"])
    unfolded = jaxnet.unfold_biases([folded_w["w1"], folded_w["w2"]])
    final_param_gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(unfolded), jax.tree.leaves(manual.params)))
    plot_curves({"jaxnet, manual gradients": manual.history["train_loss"], "jaxnet, jax.grad": results["autodiff"].history["train_loss"],
                 "note 000 folded formulation": folded_losses}, os.path.join(args.out, "curves.png"))
    plots.decision_boundary(manual.params, net, np.asarray(x), np.asarray(y), os.path.join(args.out, "decision_boundary.png"))
    write_metrics(args.out, {
        "network": str(net), "data": "spiral, 3 classes x 100 points", "optimizer": f"full-batch gradient descent, lr {LR}",
        "epochs": epochs, "train_accuracy": manual.history["train_accuracy"][-1], "train_loss": manual.history["train_loss"][-1],
        "autodiff_train_accuracy": results["autodiff"].history["train_accuracy"][-1],
        "manual_vs_autodiff_curve_gap": gap, "folded_vs_unfolded_curve_gap": folded_gap,
        "folded_vs_unfolded_final_param_gap": final_param_gap, "seconds_manual": seconds["manual"],
        "history": {"manual": manual.history["train_loss"], "autodiff": results["autodiff"].history["train_loss"],
                    "folded": folded_losses.tolist()},
    })


if __name__ == "__main__":
    main()
