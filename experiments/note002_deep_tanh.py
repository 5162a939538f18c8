"""Note 002: tanh networks of depth 1–4 trained with the note's layer recursion, softmax
cross-entropy, on two moons; the per-layer gradient norms during training.

    python experiments/note002_deep_tanh.py [--quick]

jaxnet's backward pass for these networks is the recursion of eqs. (11)–(12):
δ^(i) = (δ^(i+1) W^(i+1)ᵀ) ∘ (1 − z^(i) ∘ z^(i)), ∂L/∂W^(i) = z^(i−1) ⊗ δ^(i), starting from
δ^(N) = (ŷ − y)/N (eq. 7). Each depth is trained with it and, from the same seed, with jax.grad;
after every epoch the full-batch gradient norm ||∂L/∂W^(l)|| of every layer is recorded. Writes
grad_norms.png (one panel per depth), curves.png, decision_boundaries.png, metrics.json.
"""

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxnet
from _common import arguments, evaluate_all, train_both, write_metrics
from jaxnet import data

WIDTH = 16


def main():
    args = arguments("note002_deep_tanh", __doc__)
    epochs = 5 if args.quick else 200
    x, y = data.moons(n=400, noise=0.1, seed=0)
    split = data.standardize(data.split(x, y, seed=0))
    runs = {}
    for depth in (1, 2, 3, 4):
        net = jaxnet.mlp([2] + [WIDTH] * depth + [2], "tanh", "softmax_cross_entropy")
        key_init, key_train = jax.random.split(jax.random.key(depth))
        params = jaxnet.init_params(key_init, net)
        layer_norms = jax.jit(lambda p, net=net: jnp.stack([jnp.linalg.norm(g["W"]) for g in jaxnet.manual_grads(
            p, net, split.x_train, split.y_train)]))  # ||∂L/∂W^(l)|| over the whole training set: [depth + 1]
        norms = [np.asarray(layer_norms(params))]
        results, gap, seconds = train_both(net, params, split.x_train, split.y_train, jaxnet.train.sgd(0.1), epochs, 32,
                                           key_train, val=(split.x_val, split.y_val),
                                           on_epoch=lambda e, p, s, step, m: norms.append(np.asarray(layer_norms(p))))
        runs[depth] = (net, results, gap, seconds, np.stack(norms))  # norms: [epochs + 1, depth + 1]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
    for ax, (depth, (net, _, _, _, norms)) in zip(axes, runs.items()):
        for layer in range(norms.shape[1]):
            ax.plot(norms[:, layer], label=f"W^({layer + 1})")
        ax.set_yscale("log")
        ax.set_title(f"depth {depth} ({net.sizes[1:-1]} hidden)")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("||∂L/∂W|| (full batch)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "grad_norms.png"), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for depth, (_, results, _, _, _) in runs.items():
        line, = ax.plot(results["manual"].history["train_loss"], label=f"depth {depth}, manual")
        ax.plot(results["autodiff"].history["train_loss"], "--", color="k", linewidth=0.8,
                label="jax.grad (dashed)" if depth == 1 else None)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "curves.png"), dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    g0, g1 = np.meshgrid(np.linspace(-2.5, 2.5, 150), np.linspace(-2.5, 2.5, 150))
    grid = np.stack([g0.ravel(), g1.ravel()], axis=1).astype(np.float32)
    for ax, (depth, (net, results, _, _, _)) in zip(axes, runs.items()):
        classes = np.asarray(jaxnet.predict(results["manual"].params, net, grid)).argmax(axis=1)
        ax.contourf(g0, g1, classes.reshape(g0.shape), alpha=0.3)
        ax.scatter(split.x_train[:, 0], split.x_train[:, 1], c=split.y_train, s=8, edgecolors="k", linewidths=0.2)
        ax.set_title(f"depth {depth}")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "decision_boundaries.png"), dpi=100)
    plt.close(fig)

    write_metrics(args.out, {
        "data": "two moons, 400 points, noise 0.1, standardised, 70/15/15 split", "optimizer": "SGD lr 0.1, batch 32",
        "epochs": epochs, "width": WIDTH,
        "depths": {str(depth): {
            "network": str(net), "final": evaluate_all(results["manual"].params, net, split),
            "manual_vs_autodiff_curve_gap": gap, "seconds_manual": seconds["manual"],
            "initial_layer_grad_norms": norms[0].tolist(), "final_layer_grad_norms": norms[-1].tolist(),
            "first_over_last_layer_grad_norm_initial": float(norms[0, 0] / norms[0, -1]),
            "initial_grad_norm_max_over_min": float(norms[0].max() / norms[0].min()),
            "final_grad_norm_max_over_min": float(norms[-1].max() / norms[-1].min()),
        } for depth, (net, results, gap, seconds, norms) in runs.items()},
    })


if __name__ == "__main__":
    main()
