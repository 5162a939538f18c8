"""NumPy baseline: hand-written backprop for ReLU MLPs with softmax cross-entropy, float32.

Per epoch: ``perm = rng.permutation(N)``; for each of the ``N // B`` batches (the last
partial one dropped) gather ``x[idx], y[idx]`` and take one SGD step (:func:`numpy_step`).
The BLAS behind ``@`` is NumPy's own (OpenBLAS in the wheels); its thread count is set with
threadpoolctl, and what it reports (library, version, the kernel it picked for this CPU,
threads) is returned with the rate.
"""

from __future__ import annotations

import numpy as np

from baselines.workloads import LR, load_problem, steady_rate, steps_per_epoch


def numpy_step(params, x, y):
    """One SGD step in place (float32): forward ``z_l = a_{l−1} W_l + b_l``, ``a_l = relu(z_l)``
    (identity for the last layer), softmax ``p``; backward ``δ_L = (p − onehot(y)) / N``,
    ``∂W_l = a_{l−1}ᵀ δ_l``, ``∂b_l = Σ_n δ_l``, ``δ_{l−1} = δ_l W_lᵀ ∘ 1[z_{l−1} > 0]``.
    Returns the batch's mean cross-entropy (before the update)."""
    acts, zs = [x], []
    for i, p in enumerate(params):
        z = acts[-1] @ p["W"] + p["b"]  # [N, n_in] @ [n_in, n_out]
        zs.append(z)
        acts.append(np.maximum(z, 0) if i < len(params) - 1 else z)
    f = acts[-1]
    shifted = f - f.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    value = float(np.mean(np.log(total[:, 0]) - shifted[rows, y]))
    delta = e / total  # p: [N, K]
    delta[rows, y] -= 1
    delta /= len(y)  # δ_L
    for i in reversed(range(len(params))):
        dw = acts[i].T @ delta  # [n_in, N] @ [N, n_out]
        db = delta.sum(axis=0)
        if i:
            delta = (delta @ params[i]["W"].T) * (zs[i - 1] > 0)  # before W_i changes
        params[i]["W"] -= LR * dw
        params[i]["b"] -= LR * db
    return value


def loss(params, x, y) -> float:
    """Mean softmax cross-entropy of the MLP on ``(x, y)`` (float64 accumulation)."""
    a = x.astype(np.float64)
    for i, p in enumerate(params):
        a = a @ p["W"] + p["b"]
        if i < len(params) - 1:
            a = np.maximum(a, 0)
    shifted = a - a.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]))


def run(spec: dict) -> dict:
    """Steps/s of the loop (``spec``: problem (a :func:`save_problem` file), batch, threads,
    window_s), the initial full-data
    loss, and threadpoolctl's record of the BLAS as it ran."""
    from threadpoolctl import threadpool_info, threadpool_limits

    net, x, y, params = load_problem(spec["problem"])
    layers = net["layers"]
    if (
        not all(layer["type"] == "dense" and layer["activation"] == "relu" for layer in layers[:-1])
        or layers[-1]["type"] != "dense"
        or layers[-1]["activation"] != "identity"
        or net["l2"]
        or net["loss"] != "softmax_cross_entropy"
        or net["reduction"] != "mean"
    ):
        raise ValueError(
            f"the NumPy baseline covers ReLU MLPs with softmax cross-entropy (mean) and no L2, not {spec['workload']}"
        )
    loss0 = loss(params, x, y)
    batch = min(spec["batch"], len(x))
    n, steps = len(x), steps_per_epoch(len(x), batch)
    rng = np.random.default_rng(0)

    def epoch():
        perm = rng.permutation(n)
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            value = numpy_step(params, x[idx], y[idx])
        return value

    def prepare(k):
        return lambda: [epoch() for _ in range(k)]

    with threadpool_limits(limits=spec["threads"], user_api="blas"):
        blas = [
            {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ]
        rate = steady_rate(prepare, steps, spec["window_s"])
    return {"steps_per_s": rate, "loss0": loss0, "blas": blas, "numpy": np.__version__}
