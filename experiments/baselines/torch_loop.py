"""PyTorch baseline: the training loop a PyTorch user writes, eager or under ``torch.compile``.

Per epoch: ``perm = torch.randperm(N)``; for each of the ``N // B`` batches (the last partial
one dropped, as in jaxnet) gather ``x[idx], y[idx]``, ``zero_grad``, forward,
``CrossEntropyLoss`` (mean), ``backward``, ``torch.optim.SGD(lr).step()``. The model is the
jaxnet network's twin (``nn.Linear`` / ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.Flatten``,
NCHW), loaded with jaxnet's initial params, so the two start from the same function; L2
``λ/2 Σ W²`` on the weights is SGD's ``weight_decay = λ`` on the weight tensors only.
"""

from __future__ import annotations

import time

import numpy as np

from baselines.workloads import LR, load_problem, steady_rate, steps_per_epoch

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")  # the hidden activations with a PyTorch twin here
TRUNCATED_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2], as jax.nn.initializers divides by


def torch_model(net: dict, params=None):
    """``nn.Sequential`` computing what ``jaxnet.forward(params, net, ·)`` computes, on NCHW inputs.

    ``net``: :func:`baselines.workloads.describe`'s description. Dense ``W [n_in, n_out]`` →
    ``Linear.weight = Wᵀ``; Conv2D ``W [kh, kw, c_in, c_out]`` (HWIO) → ``Conv2d.weight`` (OIHW);
    the Dense after a Flatten of an [H, W, C] map gets its rows reordered from (h, w, c) to
    PyTorch's (c, h, w) flattening. ``params=None``: fresh weights drawn as jaxnet draws them
    (:func:`jaxnet_like_init`, from PyTorch's global generator), zero biases.
    """
    import torch

    modules, flat_from = [], None  # flat_from: the [H, W, C] shape a Flatten just flattened
    for i, layer in enumerate(net["layers"]):
        kind, shape, p = layer["type"], layer["in_shape"], None if params is None else params[i]
        if kind == "dense" and p is None:
            m = torch.nn.Linear(shape[-1], layer["features"])
            flat_from = None  # fresh weights: the flattening order does not matter
        elif kind == "dense":
            w = p["W"]
            if flat_from is not None:
                h, wd, c = flat_from
                w = w.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1)
                flat_from = None
            m = torch.nn.Linear(shape[-1], layer["features"])
            m.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
        elif kind == "conv":
            if layer["padding"] not in ("SAME", "VALID") or (layer["padding"] == "SAME" and layer["strides"] != [1, 1]):
                raise ValueError(f"no PyTorch twin for padding {layer['padding']!r} with strides {layer['strides']}")
            m = torch.nn.Conv2d(
                shape[-1],
                layer["features"],
                tuple(layer["kernel"]),
                tuple(layer["strides"]),
                padding="same" if layer["padding"] == "SAME" else 0,
            )
            if p is not None:
                m.weight.data = torch.from_numpy(np.ascontiguousarray(p["W"].transpose(3, 2, 0, 1)))
        elif kind == "maxpool":
            m = torch.nn.MaxPool2d(tuple(layer["window"]), tuple(layer["strides"]))
        elif kind == "flatten":
            m, flat_from = torch.nn.Flatten(), tuple(shape)
        else:
            raise ValueError(f"no PyTorch twin for layer type {kind!r}")
        activation = layer.get("activation", "identity")
        if activation not in ACTIVATIONS:
            raise ValueError(f"no PyTorch twin for activation {activation!r}")
        if p is None and kind in ("dense", "conv"):
            jaxnet_like_init(m, activation)
        elif p is not None and "b" in p:
            m.bias.data = torch.from_numpy(np.ascontiguousarray(p["b"]))
        modules.append(m)
        if activation != "identity":
            modules.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[activation]())
    return torch.nn.Sequential(*modules)


def jaxnet_like_init(module, activation: str) -> None:
    """``module.weight`` drawn as jaxnet's Dense/Conv2D draw ``W`` (``jaxnet.layers.activation_init``):
    He-normal (``scale 2 / fan_in``) before a ReLU, Glorot-normal (``2 / (fan_in + fan_out)``)
    otherwise, both truncated normals at ±2 std as ``jax.nn.initializers.variance_scaling`` draws them;
    the bias zero. The fans count the kernel's window (PyTorch's weight ``[out, in, kh, kw]``)."""
    import torch

    w = module.weight
    window = int(np.prod(w.shape[2:])) if w.dim() > 2 else 1
    fan_in, fan_out = w.shape[1] * window, w.shape[0] * window
    variance = 2.0 / fan_in if activation == "relu" else 2.0 / (fan_in + fan_out)
    std = float(np.sqrt(variance)) / TRUNCATED_STD
    with torch.no_grad():
        torch.nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)
        module.bias.zero_()


def _weights(model):
    import torch

    return [m.weight for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def run(spec: dict) -> dict:
    """Steps/s of the loop (``spec``: problem (a :func:`save_problem` file), batch, threads,
    compile, window_s); also the initial
    full-data loss (to check that every variant trains the same function) and, with
    ``compile``, the seconds of the first epoch (compilation included)."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    net, x, y, params = load_problem(spec["problem"])
    if net["loss"] != "softmax_cross_entropy" or net["reduction"] != "mean" or net["l2_bias"]:
        raise ValueError("the PyTorch loop covers softmax cross-entropy (mean) with L2 on the weights only")
    batch = min(spec["batch"], len(x))
    model = torch_model(net, params)
    weights = _weights(model)
    others = [p for p in model.parameters() if all(p is not w for w in weights)]
    groups = [{"params": weights, "weight_decay": net["l2"]}, {"params": others, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=LR)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))  # NHWC -> NCHW
    yt = torch.from_numpy(y)
    lossf = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        loss0 = float(lossf(model(xt), yt)) + 0.5 * net["l2"] * sum(float((w * w).sum()) for w in weights)
    forward = torch.compile(model) if spec["compile"] else model
    n, steps = len(xt), steps_per_epoch(len(xt), batch)

    def epoch():
        perm = torch.randperm(n)
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(forward(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        return loss

    start = time.perf_counter()
    epoch()
    first_epoch_s = time.perf_counter() - start

    def prepare(k):
        def go():
            for _ in range(k):
                loss = epoch()
            return float(loss.detach())

        return go

    rate = steady_rate(prepare, steps, spec["window_s"])
    return {
        "steps_per_s": rate,
        "loss0": loss0,
        "first_epoch_s": first_epoch_s,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
