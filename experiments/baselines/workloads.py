"""What every benchmark worker trains, and how it times it (no torch import here).

A workload is a network, its float32 training data ``x [N, ...]``, labels ``y [N]`` (ints),
a batch size B and the SGD learning rate: an epoch is ``N // B`` steps over a fresh
permutation, the last ``N mod B`` examples dropped (as ``jaxnet.train.make_epoch`` does).
Every worker starts from the same initial params (``jaxnet.init_params(key(0), net)``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np

LR = 0.01  # plain SGD, every workload and every variant


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str  # the key used on the command line and in the results' data
    title: str  # the row label in the tables
    batch: int
    fit_epochs: int  # epochs of the timed `fit` call (the one that includes compilation)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("spiral-b32", "MLP 2-100-3, spiral N = 300, batch 32", 32, 300),
        Workload("spiral-full", "MLP 2-100-3, spiral N = 300, full batch", 300, 300),
        Workload("mlp784-b128", "MLP 784-256-256-10, random N = 1,280, batch 128", 128, 30),
        Workload("cnn-b64", "CNN (preset `cnn`), digits 8×8×1 N = 1,257, batch 64", 64, 30),
    )
}


def network(name: str):
    """The jaxnet network of a workload: ReLU MLPs with softmax cross-entropy (mean), or
    ``jaxnet.presets.TRAIN_PRESETS["cnn"]``'s network for 8×8×1 images and 10 classes (with its
    L2 1e-4 on the weights)."""
    import jaxnet
    from jaxnet.presets import TRAIN_PRESETS

    if name.startswith("spiral"):
        return jaxnet.mlp([2, 100, 3], "relu")
    if name == "mlp784-b128":
        return jaxnet.mlp([784, 256, 256, 10], "relu")
    if name == "cnn-b64":
        return TRAIN_PRESETS["cnn"].build((8, 8, 1), 10)
    raise ValueError(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}")


def problem(name: str):
    """``(net, x [N, ...] float32, y [N] int64)`` of a workload.

    spiral: ``jaxnet.data.spiral`` (3 classes × 100). mlp784: N(0, 1) inputs and uniform labels
    (seed 0). cnn: the standardised training split of the digit images, as ``jaxnet train
    --preset cnn`` prepares them (seed 0).
    """
    from jaxnet import data

    net = network(name)
    if name.startswith("spiral"):
        x, y = data.spiral(n_per_class=100, classes=3, seed=0)
    elif name == "mlp784-b128":
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(1280, 784)), rng.integers(0, 10, size=1280)
    else:
        split = data.standardize(data.split(*data.digits(images=True), seed=0))
        x, y = split.x_train, split.y_train
    return net, np.ascontiguousarray(x, np.float32), np.asarray(y, np.int64)


def initial_params(net):
    """jaxnet's initial params for ``net`` (key 0, float32) as NumPy arrays: [{"W", "b"} or {}]."""
    import jax

    import jaxnet

    params = jaxnet.init_params(jax.random.key(0), net)
    return [{k: np.array(v) for k, v in p.items()} for p in params]  # writable copies


def describe(net) -> dict:
    """``net`` as plain data for the workers that do not import jaxnet (nor JAX):
    ``{"layers": [{"type", "in_shape", ...}], "loss", "reduction", "l2", "l2_bias"}``."""
    from jaxnet.layers import Conv2D, Dense, Flatten, MaxPool2D

    layers = []
    for layer, shape in zip(net.layers, net.layer_input_shapes):
        entry = {"in_shape": list(shape)}
        if isinstance(layer, Dense):
            entry.update(type="dense", features=layer.features, activation=layer.activation)
        elif isinstance(layer, Conv2D):
            entry.update(
                type="conv",
                features=layer.features,
                kernel=list(layer.kernel_size),
                strides=list(layer.strides),
                padding=layer.padding if isinstance(layer.padding, str) else [list(p) for p in layer.padding],
                activation=layer.activation,
            )
        elif isinstance(layer, MaxPool2D):
            entry.update(type="maxpool", window=list(layer.window), strides=list(layer.strides))
        elif isinstance(layer, Flatten):
            entry.update(type="flatten")
        else:
            raise ValueError(f"the baselines have no twin for {type(layer).__name__}")
        layers.append(entry)
    return {"layers": layers, "loss": net.loss, "reduction": net.reduction, "l2": net.l2, "l2_bias": net.l2_bias}


def save_problem(name: str, path: str) -> None:
    """Write a workload's data, initial params and network description to ``path`` (.npz)."""
    net, x, y = problem(name)
    arrays = {"x": x, "y": y}
    for i, p in enumerate(initial_params(net)):
        arrays.update({f"p{i}_{k}": v for k, v in p.items()})
    np.savez(path, net=np.array(json.dumps(describe(net))), **arrays)


def load_problem(path: str):
    """``(description, x, y, params)`` as :func:`save_problem` wrote them (NumPy only)."""
    with np.load(path) as f:
        spec = json.loads(str(f["net"]))
        params = [
            {k: f[f"p{i}_{k}"].copy() for k in ("W", "b") if f"p{i}_{k}" in f} for i in range(len(spec["layers"]))
        ]
        return spec, f["x"].copy(), f["y"].copy(), params


def steps_per_epoch(n: int, batch: int) -> int:
    return n // batch


def steady_rate(prepare, steps: int, window_s: float, warmup: int = 2) -> float:
    """Steps/s of a loop of epochs in steady state.

    ``prepare(n)`` returns a zero-argument callable that runs ``n`` epochs and waits for their
    results (anything it needs, such as the epochs' keys, is made before it is timed). After
    ``warmup`` epochs, a pilot of 3 epochs sets ``n = max(3, ⌈window_s / t_epoch⌉)``; the
    rate is ``n · steps / t(n epochs)``.
    """
    prepare(warmup)()
    run = prepare(3)
    start = time.perf_counter()
    run()
    per_epoch = (time.perf_counter() - start) / 3
    n = max(3, math.ceil(window_s / max(per_epoch, 1e-9)))
    run = prepare(n)
    start = time.perf_counter()
    run()
    return n * steps / (time.perf_counter() - start)
