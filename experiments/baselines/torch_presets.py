"""PyTorch eager scripts of the ``jaxnet train`` presets: what a PyTorch user runs to train the same
network on the same data for the same steps, then evaluate it.

    python experiments/baselines/torch_presets.py --preset 000-spiral --threads 2 [--epochs N] [--seed 0]

The process never imports JAX: the data come from ``jaxnet/data.py`` loaded on its own (NumPy
and scikit-learn only, :func:`numpy_data`), so the split, the standardisation and the examples
are exactly ``jaxnet train --seed S``'s, at the cost of the NumPy/scikit-learn code a PyTorch
user's own loading would run. :data:`PRESETS` restates each preset's network and settings as
plain data (``tests/test_bench_train_path.py`` checks them against ``jaxnet.presets``), and the
model is :func:`baselines.torch_loop.torch_model` of that description: the same layers and
activations, weights drawn from the distributions jaxnet draws them from (He- or Glorot-normal,
zero biases; from PyTorch's generator, so not the same numbers).

Training: ``n // B`` steps an epoch over ``torch.randperm`` (the last partial batch dropped, as
jaxnet does), the loss ``r Σ_i ℓ_i`` with ``ℓ_i`` summed over the outputs (softmax cross-entropy
or squared error; ``r = 1/B`` for a mean, 1 for a sum), plain ``torch.optim.SGD`` for ``sgd``
(jaxnet's ``sgd`` is plain SGD) and ``torch.optim.Adam`` with its defaults for ``adam`` (optax's
defaults: betas 0.9, 0.999, eps 1e-8). jaxnet's L2 ``λ/2 Σ θ²`` over the weights (and the
biases with ``l2_bias``) is the optimizer's ``weight_decay = λ`` on those tensors: both SGD and
Adam (not AdamW) add ``λ θ`` to the gradient, the gradient of that term. At the end the train,
validation and test splits are evaluated as ``jaxnet.train.evaluate`` defines the metrics (the
loss with its L2 term; accuracy, or RMSE and R²). The last line printed is
``TORCH-PRESET-RESULT {json}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
import time
import types

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # experiments/, for ``baselines``

MARK = "TORCH-PRESET-RESULT "

# name: dataset, its kwargs, the hidden layers, the loss head, L2, optimizer, lr, epochs, batch (None: full).
# Hidden layers: ("dense", features, activation), ("conv", features, kernel, activation) (SAME, stride 1),
# ("maxpool", window) (VALID, stride = window), ("flatten",); the output Dense(K) is added.
PRESETS: dict[str, dict] = {
    "digits": dict(
        dataset="digits", kwargs={}, hidden=[("dense", 128, "relu")], loss="softmax_cross_entropy",
        reduction="mean", l2=1e-4, l2_bias=False, optimizer="adam", lr=1e-3, epochs=30, batch=64,
    ),
    "000-spiral": dict(
        dataset="spiral", kwargs={"n_per_class": 100, "classes": 3}, hidden=[("dense", 100, "relu")],
        loss="softmax_cross_entropy", reduction="mean", l2=1e-3, l2_bias=True, optimizer="sgd", lr=1.0,
        epochs=300, batch=32,
    ),
    "001-regression": dict(
        dataset="regression_1d", kwargs={"n": 200}, hidden=[("dense", 10, "sigmoid")], loss="squared_error",
        reduction="sum", l2=0.0, l2_bias=False, optimizer="sgd", lr=1.5e-3, epochs=3000, batch=None,
    ),
    "001-classification": dict(
        dataset="circles", kwargs={"n": 400}, hidden=[("dense", 20, "sigmoid")], loss="softmax_cross_entropy",
        reduction="mean", l2=0.0, l2_bias=False, optimizer="adam", lr=1e-2, epochs=200, batch=32,
    ),
    "002-tanh": dict(
        dataset="moons", kwargs={"n": 400}, hidden=[("dense", 16, "tanh")] * 3, loss="softmax_cross_entropy",
        reduction="mean", l2=0.0, l2_bias=False, optimizer="sgd", lr=0.1, epochs=200, batch=32,
    ),
    "003-regression": dict(
        dataset="regression", kwargs={"n": 600, "d": 4, "outputs": 2}, hidden=[("dense", 32, "relu")] * 2,
        loss="squared_error", reduction="mean", l2=0.0, l2_bias=False, optimizer="adam", lr=3e-3, epochs=200,
        batch=32,
    ),
    "cnn": dict(
        dataset="digits", kwargs={"images": True},
        hidden=[("conv", 16, 3, "relu"), ("maxpool", 2), ("conv", 32, 3, "relu"), ("maxpool", 2), ("flatten",),
                ("dense", 64, "relu")],
        loss="softmax_cross_entropy", reduction="mean", l2=1e-4, l2_bias=False, optimizer="adam", lr=2e-3,
        epochs=30, batch=64,
    ),
}  # fmt: skip


def numpy_data():
    """``jaxnet/data.py`` as a module of its own (with ``jaxnet/files.py``, which it imports), without
    the ``jaxnet`` package's ``__init__``, which imports JAX: NumPy and scikit-learn only."""
    name = "_jaxnet_numpy_only"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(HERE.parents[1] / "jaxnet")]
        sys.modules[name] = package
    return importlib.import_module(name + ".data")


def load_split(preset: str, seed: int = 0):
    """The standardised train/val/test split ``jaxnet train --preset P --seed S`` trains on."""
    data = numpy_data()
    p = PRESETS[preset]
    x, y = data.DATASETS[p["dataset"]](**p["kwargs"])
    return data.standardize(data.split(x, y, seed=seed))


def outputs(preset: str, split) -> int:
    """K: the classes of the split (softmax), else the targets' columns (as ``jaxnet train``)."""
    if PRESETS[preset]["loss"] == "softmax_cross_entropy":
        return int(max(split.y_train.max(), split.y_val.max(initial=0), split.y_test.max(initial=0))) + 1
    return 1 if split.y_train.ndim == 1 else split.y_train.shape[1]


def description(preset: str, in_shape, k: int) -> dict:
    """The preset's network in :func:`baselines.workloads.describe`'s form, for input shape
    ``in_shape`` and ``k`` outputs."""
    p, shape, layers = PRESETS[preset], list(in_shape), []
    for kind, *args in [*p["hidden"], ("dense", k, "identity")]:
        entry = {"in_shape": list(shape), "type": kind}
        if kind == "dense":
            entry.update(features=args[0], activation=args[1])
            shape = [args[0]]
        elif kind == "conv":
            entry.update(features=args[0], kernel=[args[1]] * 2, strides=[1, 1], padding="SAME", activation=args[2])
            shape = [*shape[:2], args[0]]
        elif kind == "maxpool":
            entry.update(window=[args[0]] * 2, strides=[args[0]] * 2)
            shape = [shape[0] // args[0], shape[1] // args[0], shape[2]]
        else:
            shape = [int(np.prod(shape))]
        layers.append(entry)
    return {k_: p[k_] for k_ in ("loss", "reduction", "l2", "l2_bias")} | {"layers": layers}


def tensors(x, y, loss: str):
    """NumPy split arrays as PyTorch tensors: float32 inputs (images NHWC -> NCHW), int64 labels or
    float32 targets."""
    import torch

    x = np.ascontiguousarray((x.transpose(0, 3, 1, 2) if x.ndim == 4 else x), np.float32)
    y = np.asarray(y, np.int64 if loss == "softmax_cross_entropy" else np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def data_loss(net: dict, out, y):
    """``r Σ_i ℓ_i``: softmax cross-entropy or squared error summed over the outputs; ``r = 1/n``
    for ``mean``, 1 for ``sum`` (jaxnet's loss without its L2 term)."""
    import torch

    if net["loss"] == "softmax_cross_entropy":
        total = torch.nn.functional.cross_entropy(out, y, reduction="sum")
    else:
        total = ((out - y.reshape(out.shape)) ** 2).sum()
    return total / len(out) if net["reduction"] == "mean" else total


def penalised(model, l2_bias: bool) -> list:
    """The tensors jaxnet's L2 penalises: the Linear/Conv2d weights, and their biases with ``l2_bias``."""
    import torch

    layers = [m for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    return [m.weight for m in layers] + ([m.bias for m in layers] if l2_bias else [])


def l2_term(net: dict, model) -> float:
    """``λ/2 Σ θ²`` over the penalised tensors."""
    return 0.5 * net["l2"] * sum(float((t.detach().double() ** 2).sum()) for t in penalised(model, net["l2_bias"]))


def loss_value(net: dict, model, x, y) -> float:
    """jaxnet's training loss of ``model`` on ``(x, y)``: the data loss plus the L2 term."""
    import torch

    with torch.no_grad():
        return float(data_loss(net, model(x), y)) + l2_term(net, model)


def optimizer(preset: str, net: dict, model):
    """SGD or Adam (defaults) at the preset's lr, ``weight_decay = λ`` on the penalised tensors only."""
    import torch

    p, decayed = PRESETS[preset], penalised(model, net["l2_bias"])
    rest = [t for t in model.parameters() if all(t is not d for d in decayed)]
    groups = [{"params": decayed, "weight_decay": net["l2"]}, {"params": rest, "weight_decay": 0.0}]
    if p["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=p["lr"])
    return torch.optim.Adam(groups, lr=p["lr"], betas=(0.9, 0.999), eps=1e-8)


def metrics(net: dict, model, x, y) -> dict:
    """``jaxnet.train.evaluate``'s metrics: ``loss`` (with the L2 term), and ``accuracy``, or
    ``rmse`` = sqrt(Σ (f − y)² / (n K)) and ``r2`` = 1 − Σ (f − y)² / Σ (y − ȳ)² (ȳ per output)."""
    import torch

    with torch.no_grad():
        out = model(x)
        values = {"loss": float(data_loss(net, out, y)) + l2_term(net, model)}
        if net["loss"] == "softmax_cross_entropy":
            values["accuracy"] = float((out.argmax(-1) == y).double().mean())
        else:
            f, t = out.double(), y.double().reshape(out.shape)
            squares = float(((f - t) ** 2).sum())
            values["rmse"] = (squares / f.numel()) ** 0.5
            values["r2"] = 1.0 - squares / float(((t - t.mean(0, keepdim=True)) ** 2).sum())
    return values


def train(preset: str, threads: int, epochs: int | None = None, seed: int = 0) -> dict:
    """Train the preset's twin and evaluate every split; the result's numbers (see the module notes)."""
    import torch

    from baselines.torch_loop import torch_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    split = load_split(preset, seed)
    net = description(preset, split.x_train.shape[1:], outputs(preset, split))
    model = torch_model(net)
    x, y = tensors(split.x_train, split.y_train, net["loss"])
    opt, p = optimizer(preset, net, model), PRESETS[preset]
    n = len(x)
    batch = min(p["batch"] or n, n)
    steps, epochs = n // batch, epochs or p["epochs"]
    loss0 = loss_value(net, model, x, y)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            data_loss(net, model(x[idx]), y[idx]).backward()
            opt.step()
    train_s = time.perf_counter() - start
    model.eval()
    splits = {"train": (split.x_train, split.y_train), "val": (split.x_val, split.y_val)}
    splits["test"] = (split.x_test, split.y_test)
    final = {name: metrics(net, model, *tensors(xs, ys, net["loss"])) for name, (xs, ys) in splits.items() if len(xs)}
    return {
        "preset": preset,
        "epochs": epochs,
        "steps": epochs * steps,
        "batch": batch,
        "loss0": loss0,
        "train_s": train_s,
        "final": final,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "jax_imported": "jax" in sys.modules,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0, help="the data split (as jaxnet train --seed) and torch's seed")
    args = parser.parse_args(argv)
    result = train(args.preset, args.threads, args.epochs, args.seed)
    test = result["final"].get("test", {})
    print(f"{args.preset}: {result['steps']} steps, test " + ", ".join(f"{k} {v:.4g}" for k, v in test.items()))
    print(MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
