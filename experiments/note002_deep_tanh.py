"""Note 002: tanh networks of depth 1–4 trained with the note's layer recursion, softmax
cross-entropy, on two moons; the per-layer gradient norms during training; over seeds 0–4.

    python experiments/note002_deep_tanh.py [--quick]

jaxnet's backward pass for these networks is the recursion of eqs. (11)–(12):
δ^(i) = (δ^(i+1) W^(i+1)ᵀ) ∘ (1 − z^(i) ∘ z^(i)), ∂L/∂W^(i) = z^(i−1) ⊗ δ^(i), starting from
δ^(N) = (ŷ − y)/N (eq. 7). Each depth is trained from every seed s (``key_init, key_train =
split(key(s))``) with it and with jax.grad; after every epoch the full-batch gradient norm
||∂L/∂W^(l)|| of every layer is recorded. The runs go one by one through ``fit`` rather than side
by side through ``jaxnet.sweep``: the norms need every epoch's params, which ``fit``'s
``on_epoch`` passes and ``sweep.run``'s does not. Writes grad_norms.png (one panel per depth),
curves.png (mean over the seeds, min–max bands), decision_boundaries.png (seed 0) and
metrics.json (per seed and mean / std / min / max).
"""

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from _common import arguments, band, curve_gap, evaluate_all, over_seeds, seeds_text, staged, write_metrics

import jaxnet
from jaxnet import data
from jaxnet.train import fit

WIDTH, LR, BATCH = 16, 0.1, 32


def layer_norms_fn(net):
    """``(params, x, y) -> [depth + 1]``: ||∂L/∂W^(l)|| of every layer over the batch (x, y), jitted."""
    return jax.jit(lambda p, x, y: jnp.stack([jnp.linalg.norm(g["W"]) for g in jaxnet.manual_grads(p, net, x, y)]))


def train_seed(net, split, epochs, seed, layer_norms):
    """One seed: ``fit`` with manual gradients (recording the layers' full-batch gradient norms
    after every epoch) and with jax.grad, from the same params and batches.

    Returns ``(manual FitResult, jax.grad FitResult, norms [epochs + 1, depth + 1])``."""
    key_init, key_train = jax.random.split(jax.random.key(seed))
    params = jaxnet.init_params(key_init, net)
    norms = [np.asarray(layer_norms(params, split.x_train, split.y_train))]  # over the whole training set

    def record(epoch, p, opt_state, step, metrics):
        norms.append(np.asarray(layer_norms(p, split.x_train, split.y_train)))

    runs = {
        grads: fit(
            net,
            params,
            split.x_train,
            split.y_train,
            jaxnet.train.sgd(LR),
            epochs,
            BATCH,
            key_train,
            grads=grads,
            val=(split.x_val, split.y_val),
            on_epoch=record if grads == "manual" else None,
        )
        for grads in ("manual", "autodiff")
    }
    return runs["manual"], runs["autodiff"], np.stack(norms)


def main():
    args = arguments("note002_deep_tanh", __doc__)
    epochs = 5 if args.quick else 200
    x, y = data.moons(n=400, noise=0.1, seed=0)
    split = data.standardize(data.split(x, y, seed=0))
    runs = {}
    for depth in (1, 2, 3, 4):
        net = jaxnet.mlp([2] + [WIDTH] * depth + [2], "tanh", "softmax_cross_entropy")
        layer_norms = layer_norms_fn(net)
        runs[depth] = (net, [train_seed(net, split, epochs, seed, layer_norms) for seed in args.seeds])

    with staged(args.out) as out:
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
        for ax, (depth, (net, seeds)) in zip(axes, runs.items()):
            norms = np.stack([n for _, _, n in seeds])  # [S, epochs + 1, depth + 1]
            for layer in range(norms.shape[2]):
                band(ax, norms[:, :, layer], f"W^({layer + 1})", linewidth=1.5)
            ax.set_yscale("log")
            ax.set_title(f"depth {depth} ({net.sizes[1:-1]} hidden)")
            ax.set_xlabel("epoch (1 = before training)")
            ax.legend(fontsize=7)
        axes[0].set_ylabel("||∂L/∂W|| (full batch)")
        fig.suptitle(f"mean over {seeds_text(args.seeds)}, band: min–max", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "grad_norms.png"), dpi=100)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        for depth, (_, seeds) in runs.items():
            band(ax, [m.history["train_loss"] for m, _, _ in seeds], f"depth {depth}, manual")
            ax.plot(
                np.arange(1, epochs + 1),
                np.mean([a.history["train_loss"] for _, a, _ in seeds], axis=0),
                "--",
                color="k",
                linewidth=0.8,
                label="jax.grad (dashed)" if depth == 1 else None,
            )
        ax.set_yscale("log")
        ax.set_title(f"mean over {seeds_text(args.seeds)}, band: min–max", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("train loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "curves.png"), dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(1, 4, figsize=(16, 4))
        g0, g1 = np.meshgrid(np.linspace(-2.5, 2.5, 150), np.linspace(-2.5, 2.5, 150))
        grid = np.stack([g0.ravel(), g1.ravel()], axis=1).astype(np.float32)
        for ax, (depth, (net, seeds)) in zip(axes, runs.items()):
            classes = np.asarray(jaxnet.predict(seeds[0][0].params, net, grid)).argmax(axis=1)
            ax.contourf(g0, g1, classes.reshape(g0.shape), alpha=0.3)
            ax.scatter(split.x_train[:, 0], split.x_train[:, 1], c=split.y_train, s=8, edgecolors="k", linewidths=0.2)
            ax.set_title(f"depth {depth}, seed {args.seeds[0]}")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "decision_boundaries.png"), dpi=100)
        plt.close(fig)

        depths = {}
        for depth, (net, seeds) in runs.items():
            gaps = [curve_gap(m.history["train_loss"], a.history["train_loss"]) for m, a, _ in seeds]
            norms = np.stack([n for _, _, n in seeds])  # [S, epochs + 1, depth + 1]
            depths[str(depth)] = {
                "network": str(net),
                "final": over_seeds([evaluate_all(m.params, net, split) for m, _, _ in seeds]),
                "manual_vs_autodiff_curve_gap": max(gaps),
                "manual_vs_autodiff_curve_gaps": gaps,
                "initial_layer_grad_norms": norms[:, 0].tolist(),
                "final_layer_grad_norms": norms[:, -1].tolist(),
                **over_seeds(
                    [
                        {
                            "first_over_last_layer_grad_norm_initial": float(n[0, 0] / n[0, -1]),
                            "initial_grad_norm_max_over_min": float(n[0].max() / n[0].min()),
                            "final_grad_norm_max_over_min": float(n[-1].max() / n[-1].min()),
                        }
                        for n in norms
                    ]
                ),
            }
        write_metrics(
            out,
            args.seeds,
            {
                "data": "two moons, 400 points, noise 0.1, standardised, 70/15/15 split",
                "optimizer": f"SGD lr {LR}, batch {BATCH}",
                "epochs": epochs,
                "width": WIDTH,
                "decision_boundaries_seed": args.seeds[0],
                "depths": depths,
                "note": f"every value over {seeds_text(args.seeds)} (layer gradient norms: per seed, [seed][layer]); "
                "curve gaps are the largest over the seeds",
            },
        )


if __name__ == "__main__":
    main()
