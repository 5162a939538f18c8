"""Sweeps: many seeds and hyperparameters trained side by side in one compiled program.

Replicas that share a network are one *group*: their params, optimizer states, PRNG keys and
scalar hyperparameters (learning rate, L2, momentum) get a leading replica axis, and each epoch
— every replica's shuffle, every step, every update, the metrics after it — is one jitted call:
one ``lax.scan`` over the steps whose body runs all replicas under ``jax.vmap``. Groups with
different networks run one after another. Replica ``r`` with seed ``s`` is trained exactly as
``fit`` trains that configuration alone from
``key_init, key_train = jax.random.split(jax.random.key(s))``: the same initial params, the same
batches, the same updates (equal up to float rounding).

What keeps the small networks of the notes fast: replicas with the same seed share their
shuffles (drawn once per seed and epoch); on the CPU, the vmapped gradient's tiny batched
products and short reductions are written as fused elementwise code
(:func:`jaxnet.contractions.small_contractions`); and ``devices=N`` splits the replicas over N
devices (independent replicas: no communication). ``experiments/bench_sweep.py`` measures each
of these (``experiments/results/sweep_benchmark.md``, on a GPU ``sweep_benchmark_gpu.md``).

:func:`run` is the entry point. Its parts are public for benchmarks and tests that drive one
group's epoch themselves: :func:`group_epoch` (the compiled epoch), :func:`replica_optimizer` and
:func:`replica_hyperparams` (the optimizer and its per-replica state), :func:`spread_over`
(placing a group's arrays on the devices) and ``jaxnet.train.device_mesh``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike, DTypeLike

from . import contractions
from .network import Network, Params, has_state, init_params, inputs_as, needs_key, token_vocab
from .train import device_mesh, epoch_key, metric_arrays, permutation, value_and_grads_fn

OPTIMIZERS = ("sgd", "momentum", "adam")

_Tree = TypeVar("_Tree")


class Placement(Protocol):
    """What :func:`spread_over` returns: ``place(tree, replicated=False)``, a tree of the same structure."""

    def __call__(self, tree: _Tree, replicated: bool = False) -> _Tree: ...


@dataclasses.dataclass(frozen=True)
class Replica:
    """One configuration: a network, a seed and its scalar hyperparameters."""

    net: Network
    seed: int = 0
    lr: float = 0.01
    l2: float | None = None  # None: the network's own l2
    momentum: float = 0.0  # sgd only (0: plain SGD); "momentum" in the optimizer name sets 0.9 by default

    def label(self) -> str:
        """The scalar hyperparameters as printed in tables: ``"lr=0.1, l2=0.001"`` (and momentum)."""
        parts = [f"lr={self.lr:g}", f"l2={self.l2_value:g}"] + (
            [f"momentum={self.momentum:g}"] if self.momentum else []
        )
        return ", ".join(parts)

    @property
    def l2_value(self) -> float:
        """The L2 coefficient this replica trains with: ``l2``, or the network's own when ``None``."""
        return self.net.l2 if self.l2 is None else float(self.l2)


def grid(
    net_or_nets: Network | list[Network] | tuple[Network, ...],
    seeds: Iterable[int] = (0,),
    lr: Iterable[float] = (0.01,),
    l2: Iterable[float | None] = (None,),
    momentum: Iterable[float] = (0.0,),
) -> list[Replica]:
    """Every combination of the given networks, seeds and hyperparameter values."""
    nets = net_or_nets if isinstance(net_or_nets, (list, tuple)) else [net_or_nets]
    return [Replica(n, s, a, b, m) for n, a, b, m, s in itertools.product(nets, lr, l2, momentum, seeds)]


def replica_optimizer(name: str) -> optax.GradientTransformation:
    """The optax optimizer ``name`` (one of :data:`OPTIMIZERS`) that a group's replicas share,
    with its hyperparameters injected (``optax.inject_hyperparams``), learning rate 0 (and
    momentum 0 for ``sgd`` / ``momentum``): each replica's own values live in its optimizer
    state, initialised from :func:`replica_hyperparams`. ``ValueError`` for another name."""
    if name == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    if name in ("sgd", "momentum"):
        return optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.0)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")


def replica_hyperparams(name: str, replicas: Sequence[Replica], dtype: DTypeLike) -> dict[str, jax.Array]:
    """The hyperparameters of optimizer ``name`` per replica, ``{hyperparameter: [R]}`` of
    ``dtype``: each replica's learning rate, and its momentum unless ``name`` is ``adam``.
    ``jax.vmap(lambda p, h: optax.inject_hyperparams(optax.sgd)(**h).init(p))(params, hyper)``
    (``optax.adam`` for ``adam``) gives the stacked optimizer state that
    :func:`replica_optimizer` updates."""
    lr = jnp.asarray([r.lr for r in replicas], dtype)
    if name == "adam":
        return {"learning_rate": lr}
    return {"learning_rate": lr, "momentum": jnp.asarray([r.momentum for r in replicas], dtype)}


def estimate_bytes(
    net: Network, batch_size: int, n: int, replicas: int, optimizer: str, dtype: DTypeLike = jnp.float32
) -> int:
    """A rough upper estimate of a group's device memory from shapes: per replica, params,
    gradients, optimizer state (``adam``: 2 slots, ``sgd``: 1) and the forward residuals of one
    batch (every layer's input, pre-activation and activation), plus the shared data."""
    size = jnp.dtype(dtype).itemsize
    n_params = sum(
        int(np.prod(s))
        for layer, shape in zip(net.layers, net.layer_input_shapes)
        for s in layer.param_shapes(shape).values()
    )
    activations = sum(3 * int(np.prod(shape)) for shape in (*net.layer_input_shapes, net.output_shape))
    per_replica = (n_params * (2 + (2 if optimizer == "adam" else 1)) + 2 * batch_size * activations) * size
    data = n * (int(np.prod(net.input_shape)) + net.output_shape[0]) * size
    return replicas * per_replica + data


def _device_memory() -> int:
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
    """What :func:`run` returns, one row per replica in the order given: the replica, its final
    params, its per-epoch history and its final metrics per split."""

    replicas: list[Replica]  # Replica per row
    params: list[Params]  # per replica, its final params
    history: list[dict[str, list[float]]]  # per replica, {"train_loss": [...], "val_loss": [...], ...}
    final: list[dict[str, dict[str, float]]]  # per replica, {"train": metrics, "val": metrics}


def group_epoch(
    net: Network,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    n: int,
    grads: str,
    small_contractions: bool | None = None,
    small_reductions: bool = True,
) -> Callable[..., tuple[Params, Any, jax.Array, list[dict[str, jax.Array]]]]:
    """A jitted epoch for R replicas of one network, with their metrics after it.

    ``(params [R, ...], opt_state [R, ...], keys [S], epoch, which [R], l2 [R], x, y, evals)
    -> (params, opt_state, losses [R, steps], metrics)``: replica ``r`` shuffles with
    ``fold_in(keys[which[r]], epoch)``, as ``fit`` does (replicas with the same seed share one
    shuffle, drawn once); one ``lax.scan`` over the steps runs every replica's gradient and
    update under ``vmap``; ``metrics`` has, per ``(x, y)`` of ``evals``, each metric ``[R]``
    (those of ``jaxnet.train.metric_arrays``). ``params`` and ``opt_state`` are donated.

    Args:
      net: the group's network.
      optimizer: the shared optimizer, from :func:`replica_optimizer`; ``opt_state`` carries each
        replica's hyperparameters (:func:`replica_hyperparams`).
      batch_size, n: the batch size and the number of training examples (``n // batch_size``
        steps; the remainder of each shuffle is dropped, as in ``fit``).
      grads: ``"manual"`` or ``"autodiff"`` (``jaxnet.train.value_and_grads_fn``).
      small_contractions: whether the vmapped gradient and metrics go through
        :func:`jaxnet.contractions.small_contractions`; ``None`` (as :func:`run` uses it): on the
        CPU only. On a GPU it is off by default: it did not speed the sweep up there, and without
        it the replicas' products are computed as ``fit``'s are (float32 products on a GPU may
        run in TF32; the elementwise form is exact float32). Both are in
        ``experiments/results/sweep_benchmark_gpu.md`` (table 1, and its notes added by hand).
      small_reductions: ``False``: products rewritten, reductions not (to measure each part, as
        ``experiments/bench_sweep.py`` does).
    """
    if small_contractions is None:
        small_contractions = jax.default_backend() == "cpu"
    vg = value_and_grads_fn(grads)

    def rewrite(fun):
        return contractions.small_contractions(fun, small_reductions) if small_contractions else fun

    steps = n // batch_size

    def order_of(key):  # as make_epoch draws it from the epoch's key: [steps, batch]
        return permutation(jax.random.split(key)[0], n)[: steps * batch_size].reshape(steps, batch_size)

    grads_all = rewrite(
        jax.vmap(lambda p, idx, l2, x, y: vg(p, net, x[idx], y[idx], l2), in_axes=(0, 0, 0, None, None))
    )
    metrics_all = rewrite(jax.vmap(lambda p, l2, x, y: metric_arrays(p, net, x, y, l2), in_axes=(0, 0, None, None)))

    def epoch_fn(params, opt_state, keys, epoch, which, l2, x, y, evals):
        keys = jax.vmap(lambda k: epoch_key(k, epoch))(keys)
        orders = jnp.swapaxes(jax.vmap(order_of)(keys)[which], 0, 1)  # [steps, R, batch]

        def body(carry, idx):  # idx: [R, batch]
            params, opt_state = carry
            value, g = grads_all(params, idx, l2, x, y)  # [R], [R, ...]
            updates, opt_state = jax.vmap(optimizer.update)(g, opt_state, params)
            return (jax.vmap(optax.apply_updates)(params, updates), opt_state), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), orders)
        return params, opt_state, losses.T, [metrics_all(params, l2, xs, ys) for xs, ys in evals]

    return jax.jit(epoch_fn, donate_argnums=(0, 1))


def run(
    replicas: Sequence[Replica],
    x: ArrayLike,
    y: ArrayLike,
    optimizer: str,
    epochs: int,
    batch_size: int,
    grads: str = "manual",
    val: tuple[ArrayLike, ArrayLike] | None = None,
    max_bytes: int | None = None,
    on_epoch: Callable[[int, int, list[float]], object] | None = None,
    dtype: DTypeLike = jnp.float32,
    devices: int | None = None,
) -> SweepResult:
    """Train every replica; groups of one network side by side (see the module docstring).

    Args:
      replicas: :class:`Replica` s (e.g. from :func:`grid`).
      x, y: training data (shared by all replicas); ``val``: optional ``(x, y)``.
      optimizer: ``"sgd"`` (``momentum`` per replica), ``"momentum"`` (the same, for the CLI's
        naming) or ``"adam"``; the learning rate comes from each replica.
      max_bytes: memory budget of each device (default: the device's memory; with several CPU
        devices, the host's memory divided among them); a group whose :func:`estimate_bytes`
        exceeds it runs in chunks of replicas that fit (each device holds the data and its share
        of the chunk), and a single replica that does not fit is a ``ValueError`` before
        anything runs.
      on_epoch: called as ``on_epoch(group_index, epoch, train_losses [R])``.
      dtype: of the params (``init_params``'s default, as ``fit``'s callers use) and the data.
      devices: split each group's replicas over this many local devices (a 1-D mesh over the
        replica axis; data replicated). Replicas are independent, so no device waits on another:
        several GPUs, or the CPU cores made into devices with
        ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX starts. A group
        whose size the device count does not divide is padded with copies of its last replica,
        whose results are dropped.

    Returns:
      a :class:`SweepResult` in the order of ``replicas``.
    """
    if not replicas:
        raise ValueError("replicas: nothing to train")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    for r in replicas:
        if has_state(r.net) or needs_key(r.net):
            raise ValueError(
                f"replicas: {r.net} has state (BatchNorm) or draws random numbers (Dropout), which the sweep does "
                "not carry yet; train such networks with jaxnet.train.fit (or jaxnet train without --seeds/--sweep)"
            )
    mesh = device_mesh(1 if devices is None else devices)
    if max_bytes is not None:
        budget = int(max_bytes)
    else:  # per device; CPU devices share the host's memory
        budget = _device_memory() // (mesh.size if jax.devices()[0].platform == "cpu" else 1)
    x, y = _inputs(replicas, x, dtype), jnp.asarray(y)
    n = len(x)
    if not (isinstance(batch_size, int) and 0 < batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, {n}], got {batch_size!r}")
    groups: dict = {}
    for i, r in enumerate(replicas):
        groups.setdefault(r.net, []).append(i)
    chunks = []
    for net, members in groups.items():
        one = estimate_bytes(net, batch_size, n, 1, optimizer, dtype)
        if one > budget:
            raise ValueError(
                f"one replica of {net} needs about {one / 2**20:.0f} MiB (estimated from shapes), "
                f"more than the budget {budget / 2**20:.0f} MiB"
            )
        data = estimate_bytes(net, batch_size, n, 0, optimizer, dtype)  # on every device
        per = mesh.size * max(1, int((budget - data) // (one - data)))  # replicas per chunk, over all devices
        chunks += [(net, members[i : i + per]) for i in range(0, len(members), per)]
    # per replica, in the order given; each chunk fills its own
    out_params: list[Any] = [None] * len(replicas)
    history: list[Any] = [None] * len(replicas)
    final: list[Any] = [None] * len(replicas)
    opt = replica_optimizer(optimizer)
    spread = spread_over(mesh)
    x, y = spread((x, y), replicated=True)
    splits = [("train", (x, y))]
    if val is not None:
        splits.append(("val", spread((_inputs(replicas, val[0], dtype), jnp.asarray(val[1])), replicated=True)))
    epoch_fns: dict = {}  # one compiled epoch per network (and chunk size)
    for g, (net, members) in enumerate(chunks):
        rs = [replicas[i] for i in members]
        padded = rs + [rs[-1]] * (-len(rs) % mesh.size)  # a multiple of the device count
        keys = [jax.random.split(jax.random.key(r.seed)) for r in padded]  # (key_init, key_train) as fit's callers do
        params = jax.tree.map(lambda *a: jnp.stack(a), *[init_params(k[0], net, dtype) for k in keys])
        hyper = replica_hyperparams(optimizer, padded, dtype)
        opt_state = jax.vmap(lambda p, h: optax.inject_hyperparams(_inner(optimizer))(**h).init(p))(params, hyper)
        l2 = jnp.asarray([r.l2_value for r in padded], dtype)
        if net not in epoch_fns:
            epoch_fns[net] = group_epoch(net, opt, batch_size, n, grads)
        epoch_fn = epoch_fns[net]
        seeds = sorted({r.seed for r in padded})  # replicas with one seed share its shuffles
        train_keys = spread(jnp.stack([jax.random.split(jax.random.key(s))[1] for s in seeds]), replicated=True)  # [S]
        which = jnp.asarray([seeds.index(r.seed) for r in padded])  # [R]
        params, opt_state, l2, which = spread((params, opt_state, l2, which))
        hist: list[dict[str, list[float]]] = [dict() for _ in rs]
        for epoch in range(1, epochs + 1):
            params, opt_state, _, ms = epoch_fn(
                params, opt_state, train_keys, epoch, which, l2, x, y, [data for _, data in splits]
            )
            for (split, _), m in zip(splits, jax.device_get(ms)):
                for k, values in m.items():
                    for h, value in zip(hist, values.tolist()):
                        h.setdefault(f"{split}_{k}", []).append(float(value))
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


def _inputs(replicas: Sequence[Replica], x: ArrayLike, dtype: DTypeLike) -> jax.Array:
    """The data as every replica's network takes it (:func:`jaxnet.network.inputs_as`): token ids
    for networks that start with an embedding, ``dtype`` otherwise; one sweep cannot mix the two."""
    kinds = {token_vocab(r.net) is not None for r in replicas}
    if len(kinds) > 1:
        raise ValueError("replicas: networks of token ids and of real-valued inputs cannot share one sweep's data")
    return inputs_as(replicas[0].net, x, dtype)


def spread_over(mesh: jax.sharding.Mesh) -> Placement:
    """``place(tree, replicated=False) -> tree``: ``tree``'s arrays put on ``mesh`` (a 1-D mesh,
    e.g. ``jaxnet.train.device_mesh(devices)``), split along their leading (replica) axis, or
    whole on every device with ``replicated=True`` (the data, the seeds' keys). On a mesh of one
    device ``place`` returns ``tree`` unchanged. The replica axis must be a multiple of the
    mesh's size (:func:`run` pads a group to one)."""
    if mesh.size == 1:
        return lambda tree, replicated=False: tree

    def place(tree, replicated=False):
        spec = jax.sharding.PartitionSpec() if replicated else jax.sharding.PartitionSpec(mesh.axis_names[0])
        return jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))

    return place


def _inner(optimizer: str) -> Callable[..., optax.GradientTransformation]:
    return optax.adam if optimizer == "adam" else optax.sgd


def summary(result: SweepResult, metric: str = "val_loss") -> dict[str, Any]:
    """Per configuration (network + hyperparameters, seeds pooled): mean ± std of the final
    metrics over seeds, and the best configuration by the mean of ``metric`` (lower is better
    for losses and RMSE, higher for accuracy and R²; ``train_loss`` when there is no ``val_``).
    A configuration whose mean is not finite is never best; ``best`` is ``None`` when none is."""
    if not any(metric in h for h in result.history):
        metric = "train_loss"
    configs: dict = {}
    for r, h in zip(result.replicas, result.history):
        configs.setdefault((str(dataclasses.replace(r.net, l2=0.0)), r.label()), []).append(h)
    rows = []
    for (net, label), hs in configs.items():
        names = sorted(hs[0])
        with np.errstate(invalid="ignore"):  # a diverged replica's inf gives a NaN std, said as such
            stats = {k: (float(np.mean([h[k][-1] for h in hs])), float(np.std([h[k][-1] for h in hs]))) for k in names}
        rows.append({"network": net, "config": label, "seeds": len(hs), "final": stats})
    higher = metric.endswith(("accuracy", "r2"))
    finite = [row for row in rows if np.isfinite(row["final"][metric][0])]  # a diverged configuration never wins
    best = (max if higher else min)(finite, key=lambda row: row["final"][metric][0]) if finite else None
    return {"configs": rows, "best": best, "metric": metric}
