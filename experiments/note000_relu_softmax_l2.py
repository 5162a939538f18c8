"""Note 000: one hidden ReLU layer, softmax cross-entropy, L2, biases folded into the weights, on the
3-class spiral (300 points), full-batch gradient descent, over seeds 0–4.

    python experiments/note000_relu_softmax_l2.py [--quick]

Trains (1) jaxnet's network with manual gradients and (2) the same with jax.grad, every seed side
by side (``jaxnet.sweep``; seed s initialises from ``split(key(s))[0]``), and (3) for every seed,
the note's folded formulation — inputs and hidden values extended by a constant 1, weights
[(D + 1) × H] and [(H + 1) × K], the corrected formulas of the derivation audit — from that seed's
initial weights; per seed, the three loss curves must agree. Writes decision_boundary.png (seed
0), curves.png (mean over the seeds, min–max band) and metrics.json (per seed and mean / std /
min / max).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    arguments,
    curve_gap,
    histories,
    over_seeds,
    plot_curves,
    seeds_text,
    staged,
    stats,
    train_seeds,
    write_metrics,
)
from derivation_audit import SAXON_REPAIRS, per_example, relu_softmax_l2_loss, saxon_terms

import jaxnet
from jaxnet import data, plots

HIDDEN, L2, LR = 100, 1e-3, 1.0
REPAIRED = tuple(label for label, _ in SAXON_REPAIRS)  # every repair of the audit: §3's terms corrected


def folded_grads(w, x, y):
    """§3's per-example terms with every repair of the derivation audit, averaged over the batch:
    ``{"w1": [D + 1, H], "w2": [H + 1, K]}``, the gradient of L = L_d/N + α/2 Σ w²."""
    return {leaf: per_example(term, jnp.mean)(x, y) for leaf, term in saxon_terms(w, L2, REPAIRED).items()}


def train_folded(folded, x, y, epochs):
    """The note's folded formulation: w ← w − lr dw, one full-batch step per epoch (lax.scan)."""

    def epoch(w, _):
        w = jax.tree.map(lambda a, g: a - LR * g, w, folded_grads(w, x, y))
        return w, relu_softmax_l2_loss(w, x, y, L2)

    w, losses = jax.jit(lambda w: jax.lax.scan(epoch, w, None, length=epochs))({"w1": folded[0], "w2": folded[1]})
    return w, np.asarray(losses)


def folded_vs_unfolded(net, x, y, epochs, seed, unfolded_params, unfolded_losses):
    """Seed ``seed``'s folded run from the same initial weights as its sweep replica: the curve gap
    and the largest |difference| of the final weights (unfolded back), and the folded curve."""
    params = jaxnet.init_params(jax.random.split(jax.random.key(seed))[0], net)  # the replica's initial params
    folded_w, losses = train_folded(jaxnet.fold_biases(params), x, y, epochs)
    unfolded = jaxnet.unfold_biases([folded_w["w1"], folded_w["w2"]])
    param_gap = max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(unfolded), jax.tree.leaves(unfolded_params))
    )
    return curve_gap(losses, unfolded_losses), param_gap, losses


def main():
    args = arguments("note000_relu_softmax_l2", __doc__)
    epochs = 50 if args.quick else 4000
    x, y = data.spiral(n_per_class=100, classes=3, seed=0)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    net = jaxnet.mlp(
        [2, HIDDEN, 3], "relu", "softmax_cross_entropy", "mean", l2=L2, l2_bias=True
    )  # L2 on the folded biases too
    manual, autodiff, gaps = train_seeds(net, x, y, "sgd", LR, epochs, len(x), args.seeds)
    folded = [
        folded_vs_unfolded(net, x, y, epochs, seed, p, h["train_loss"])
        for seed, p, h in zip(args.seeds, manual.params, manual.history)
    ]
    with staged(args.out) as out:
        plot_curves(
            {
                "jaxnet, manual gradients": histories(manual),
                "jaxnet, jax.grad": histories(autodiff),
                "note 000 folded formulation": np.stack([f[2] for f in folded]),
            },
            os.path.join(out, "curves.png"),
        )
        plots.decision_boundary(
            manual.params[0], net, np.asarray(x), np.asarray(y), os.path.join(out, "decision_boundary.png")
        )
        write_metrics(
            out,
            args.seeds,
            {
                "network": str(net),
                "data": "spiral, 3 classes x 100 points",
                "optimizer": f"full-batch gradient descent, lr {LR}",
                "epochs": epochs,
                "decision_boundary_seed": args.seeds[0],
                "final": over_seeds([{"train": f["train"]} for f in manual.final]),
                "autodiff_final": over_seeds([{"train": f["train"]} for f in autodiff.final]),
                "manual_vs_autodiff_curve_gap": max(gaps),
                "manual_vs_autodiff_curve_gaps": gaps,
                "folded_vs_unfolded_curve_gap": max(f[0] for f in folded),
                "folded_vs_unfolded_final_param_gap": stats([f[1] for f in folded]),
                "history_mean": {
                    "manual": histories(manual).mean(0).tolist(),
                    "autodiff": histories(autodiff).mean(0).tolist(),
                    "folded": np.mean([f[2] for f in folded], axis=0).tolist(),
                },
                "note": f"every value over {seeds_text(args.seeds)}; curve gaps are the largest over the seeds",
            },
        )


if __name__ == "__main__":
    main()
