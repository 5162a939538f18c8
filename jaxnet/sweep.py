"""Sweeps: many seeds and hyperparameters trained side by side in one compiled program.

Replicas that share a network are one *group*: their params, optimizer states, PRNG keys and
scalar hyperparameters (learning rate, L2, momentum) get a leading replica axis and the whole
epoch — each replica's own shuffle, every step, every update — runs under ``jax.vmap`` inside
one ``lax.scan``. Groups with different networks run one after another. Replica ``r`` with
seed ``s`` is trained exactly as ``fit`` trains that configuration alone from
``key_init, key_train = jax.random.split(jax.random.key(s))``: the same initial params, the same
batches, the same updates (equal up to float rounding).
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .network import Network, init_params
from .train import _metrics, epoch_key, value_and_grads_fn

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclasses.dataclass(frozen=True)
class Replica:
    """One configuration: a network, a seed and its scalar hyperparameters."""

    net: Network
    seed: int = 0
    lr: float = 0.01
    l2: float | None = None  # None: the network's own l2
    momentum: float = 0.0  # sgd only (0: plain SGD); "momentum" in the optimizer name sets 0.9 by default

    def label(self):
        parts = [f"lr={self.lr:g}", f"l2={self.l2_value:g}"] + ([f"momentum={self.momentum:g}"] if self.momentum else [])
        return ", ".join(parts)

    @property
    def l2_value(self):
        return self.net.l2 if self.l2 is None else float(self.l2)


def grid(net_or_nets, seeds=(0,), lr=(0.01,), l2=(None,), momentum=(0.0,)) -> list[Replica]:
    """Every combination of the given networks, seeds and hyperparameter values."""
    nets = net_or_nets if isinstance(net_or_nets, (list, tuple)) else [net_or_nets]
    return [Replica(n, s, a, b, m) for n, a, b, m, s in itertools.product(nets, lr, l2, momentum, seeds)]


def _optimizer(name):
    if name == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    if name in ("sgd", "momentum"):
        return optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.0)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")


def _hyper(name, replicas, dtype):
    """Per-replica optimizer hyperparameters: {name: [R]}."""
    lr = jnp.asarray([r.lr for r in replicas], dtype)
    if name == "adam":
        return {"learning_rate": lr}
    return {"learning_rate": lr, "momentum": jnp.asarray([r.momentum for r in replicas], dtype)}


def estimate_bytes(net: Network, batch_size: int, n: int, replicas: int, optimizer: str, dtype=jnp.float32) -> int:
    """A rough upper estimate of a group's device memory from shapes: per replica, params,
    gradients, optimizer state (``adam``: 2 slots, ``sgd``: 1) and the forward residuals of one
    batch (every layer's input, pre-activation and activation), plus the shared data."""
    size = jnp.dtype(dtype).itemsize
    n_params = sum(int(np.prod(s)) for layer, shape in zip(net.layers, net.layer_input_shapes)
                   for s in layer.param_shapes(shape).values())
    activations = sum(3 * int(np.prod(shape)) for shape in (*net.layer_input_shapes, net.output_shape))
    per_replica = (n_params * (2 + (2 if optimizer == "adam" else 1)) + 2 * batch_size * activations) * size
    data = n * (int(np.prod(net.input_shape)) + net.output_shape[0]) * size
    return replicas * per_replica + data


def _device_memory():
    """Bytes the first device can hold: its memory stats, else the host's physical memory."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


@dataclasses.dataclass
class SweepResult:
    replicas: list  # Replica per row
    params: list  # per replica, its final params
    history: list  # per replica, {"train_loss": [...], "val_loss": [...], ...}
    final: list  # per replica, {"train": metrics, "val": metrics}


def _group_epoch(net, optimizer, batch_size, n, grads):
    """A jitted epoch for R replicas of one network: vmapped over params, optimizer state, key, l2."""
    vg = value_and_grads_fn(grads)
    steps = n // batch_size

    def one(params, opt_state, key, l2, x, y):
        order = jax.random.permutation(jax.random.split(key)[0], n)[: steps * batch_size].reshape(steps, batch_size)

        def body(carry, idx):
            params, opt_state = carry
            value, g = vg(params, net, x[idx], y[idx], l2)
            updates, opt_state = optimizer.update(g, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), order)
        return params, opt_state, losses

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None)), donate_argnums=(0, 1))


def run(replicas, x, y, optimizer: str, epochs: int, batch_size: int, grads: str = "manual", val=None,
        max_bytes: int | None = None, on_epoch=None, dtype=jnp.float32) -> SweepResult:
    """Train every replica; groups of one network side by side (see the module docstring).

    Args:
      replicas: :class:`Replica` s (e.g. from :func:`grid`).
      x, y: training data (shared by all replicas); ``val``: optional ``(x, y)``.
      optimizer: ``"sgd"`` (``momentum`` per replica), ``"momentum"`` (the same, for the CLI's
        naming) or ``"adam"``; the learning rate comes from each replica.
      max_bytes: memory budget of a group (default: the device's memory); a group whose
        :func:`estimate_bytes` exceeds it runs in chunks of replicas that fit, and a single
        replica that does not fit is a ``ValueError`` before anything runs.
      on_epoch: called as ``on_epoch(group_index, epoch, train_losses [R])``.
      dtype: of the params (``init_params``'s default, as ``fit``'s callers use) and the data.

    Returns:
      a :class:`SweepResult` in the order of ``replicas``.
    """
    if not replicas:
        raise ValueError("replicas: nothing to train")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    budget = _device_memory() if max_bytes is None else int(max_bytes)
    x, y = jnp.asarray(x, dtype), jnp.asarray(y)
    n = len(x)
    if not (isinstance(batch_size, int) and 0 < batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, {n}], got {batch_size!r}")
    groups: dict = {}
    for i, r in enumerate(replicas):
        groups.setdefault(r.net, []).append(i)
    chunks = []
    for net, members in groups.items():
        one = estimate_bytes(net, batch_size, n, 1, optimizer, x.dtype)
        if one > budget:
            raise ValueError(f"one replica of {net} needs about {one / 2**20:.0f} MiB (estimated from shapes), "
                             f"more than the budget {budget / 2**20:.0f} MiB")
        per = max(1, int((budget - estimate_bytes(net, batch_size, n, 0, optimizer, x.dtype))
                         // (one - estimate_bytes(net, batch_size, n, 0, optimizer, x.dtype))))
        chunks += [(net, members[i:i + per]) for i in range(0, len(members), per)]
    out_params, history, final = [None] * len(replicas), [None] * len(replicas), [None] * len(replicas)
    opt = _optimizer(optimizer)
    for g, (net, members) in enumerate(chunks):
        rs = [replicas[i] for i in members]
        keys = [jax.random.split(jax.random.key(r.seed)) for r in rs]  # (key_init, key_train) as fit's callers do
        params = jax.tree.map(lambda *a: jnp.stack(a), *[init_params(k[0], net, x.dtype) for k in keys])
        hyper = _hyper(optimizer, rs, x.dtype)
        opt_state = jax.vmap(lambda p, h: optax.inject_hyperparams(_inner(optimizer))(**h).init(p))(params, hyper)
        l2 = jnp.asarray([r.l2_value for r in rs], x.dtype)
        epoch_fn = _group_epoch(net, opt, batch_size, n, grads)
        train_keys = jnp.stack([k[1] for k in keys])  # [R] keys
        metrics = jax.jit(jax.vmap(lambda p, l2, x, y: _metrics_l2(p, net, x, y, l2), in_axes=(0, 0, None, None)))
        hist = [dict() for _ in rs]
        for epoch in range(1, epochs + 1):
            params, opt_state, losses = epoch_fn(params, opt_state, _epoch_keys(train_keys, epoch), l2, x, y)
            for split, (xs, ys) in (("train", (x, y)), *((("val", val),) if val is not None else ())):
                m = jax.device_get(metrics(params, l2, jnp.asarray(xs, x.dtype), jnp.asarray(ys)))
                for k, values in m.items():
                    for j in range(len(rs)):
                        hist[j].setdefault(f"{split}_{k}", []).append(float(values[j]))
            if on_epoch is not None:
                on_epoch(g, epoch, [h["train_loss"][-1] for h in hist])
        for j, i in enumerate(members):
            out_params[i] = jax.tree.map(lambda a, j=j: a[j], params)
            history[i] = hist[j]
            final[i] = {k.split("_", 1)[0]: {} for k in hist[j]}
            for k, v in hist[j].items():
                split, name = k.split("_", 1)
                final[i][split][name] = v[-1]
    return SweepResult(list(replicas), out_params, history, final)


@jax.jit
def _epoch_keys(keys, epoch):
    """Every replica's key for ``epoch``, as ``fit`` derives it: [R]."""
    return jax.vmap(lambda k: epoch_key(k, epoch))(keys)


def _inner(optimizer):
    return optax.adam if optimizer == "adam" else optax.sgd


def _metrics_l2(params, net, x, y, l2):
    """``jaxnet.train`` metrics with the replica's own L2 in the loss."""
    m = _metrics(params, net, x, y)
    from .network import loss

    m["loss"] = loss(params, net, x, y, l2)
    return m


def summary(result: SweepResult, metric: str = "val_loss") -> dict:
    """Per configuration (network + hyperparameters, seeds pooled): mean ± std of the final
    metrics over seeds, and the best configuration by the mean of ``metric`` (lower is better
    for losses and RMSE, higher for accuracy and R²; ``train_loss`` when there is no ``val_``)."""
    if not any(metric in h for h in result.history):
        metric = "train_loss"
    configs: dict = {}
    for r, h in zip(result.replicas, result.history):
        configs.setdefault((str(dataclasses.replace(r.net, l2=0.0)), r.label()), []).append(h)
    rows = []
    for (net, label), hs in configs.items():
        names = sorted(hs[0])
        stats = {k: (float(np.mean([h[k][-1] for h in hs])), float(np.std([h[k][-1] for h in hs]))) for k in names}
        rows.append({"network": net, "config": label, "seeds": len(hs), "final": stats})
    higher = metric.endswith(("accuracy", "r2"))
    best = (max if higher else min)(rows, key=lambda row: row["final"][metric][0])
    return {"configs": rows, "best": best, "metric": metric}
