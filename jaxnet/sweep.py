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
products and short reductions are written as fused elementwise code (:func:`_small_contractions`); and
``devices=N`` splits the replicas over N devices (independent replicas: no communication).
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jex_core

from .network import Network, init_params
from .train import _mesh, _metrics, epoch_key, permutation, value_and_grads_fn

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


def _group_epoch(net, optimizer, batch_size, n, grads, small_contractions=None, small_reductions=True):
    """A jitted epoch for R replicas of one network, with their metrics after it.

    ``(params [R, ...], opt_state [R, ...], keys [S], epoch, which [R], l2 [R], x, y, evals)
    -> (params, opt_state, losses [R, steps], metrics)``: replica ``r`` shuffles with
    ``fold_in(keys[which[r]], epoch)``, as ``fit`` does (replicas with the same seed share one
    shuffle, drawn once); one ``lax.scan`` over the steps runs every replica's gradient and
    update under ``vmap``; ``metrics`` has, per ``(x, y)`` of ``evals``, each metric ``[R]``.
    The vmapped gradient and metrics go through :func:`_small_contractions` (``False``: left as
    they are; ``small_reductions=False``: products rewritten, reductions not — to measure each
    part). ``None``: on the CPU only. On a GPU the rewrite gained nothing (H200: 0.95–1.10× over
    the rows of two runs of ``experiments/bench_sweep.py``; the committed
    ``experiments/results/sweep_benchmark_gpu.md`` is the second), and without it the replicas'
    products are computed as ``fit``'s are: float32 products on a GPU may run in TF32, the
    elementwise form is exact float32 (2.2e-4 from ``fit`` after 3 epochs with it, 5e-7 without)."""
    if small_contractions is None:
        small_contractions = jax.default_backend() == "cpu"
    vg = value_and_grads_fn(grads)

    def rewrite(fun):
        return _small_contractions(fun, small_reductions) if small_contractions else fun

    steps = n // batch_size

    def order_of(key):  # as make_epoch draws it from the epoch's key: [steps, batch]
        return permutation(jax.random.split(key)[0], n)[: steps * batch_size].reshape(steps, batch_size)

    grads_all = rewrite(jax.vmap(lambda p, idx, l2, x, y: vg(p, net, x[idx], y[idx], l2),
                                 in_axes=(0, 0, 0, None, None)))
    metrics_all = rewrite(jax.vmap(lambda p, l2, x, y: _metrics(p, net, x, y, l2),
                                   in_axes=(0, 0, None, None)))

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


# --- small contractions under vmap ----------------------------------------------------------

_SMALL = 8  # a contraction, output size or reduction up to this is "small"
_MIN_REDUCED_OUT = 1024  # a small reduction with fewer outputs is left alone (slower unrolled: see _small_reduce)
_FLOATS = (jnp.float32, jnp.float64)  # the dtypes rewritten (no low-precision accumulation)


def _small_contractions(fun, reductions=True):
    """``fun`` with its small batched matrix products written as fused elementwise sums.

    Under ``vmap`` over replicas, every matrix product of a layer (``x W``, ``xᵀ δ``, ``δ Wᵀ``)
    becomes a batched ``dot_general`` ``[R, M, K] × [R, K, N] -> [R, M, N]``. For the notes'
    small networks one side is tiny (``K = 2`` inputs, ``N = 3`` classes), and XLA:CPU runs such
    products far below its matmul rate, one small product per replica (measured in
    ``experiments/results/sweep_benchmark.md``). This evaluates ``fun``'s jaxpr and replaces each
    batched product with a small side by the same sum written elementwise, which XLA fuses:

    - contraction size ``K ≤ 8``: ``Σ_k lhs[..., :, k, None] · rhs[..., None, k, :]``,
      unrolled over k;
    - a weight gradient ``aᵀ δ`` (K the outer, example axis of both ``a`` and ``δ``) with
      ``min(M, N) ≤ 8``: one broadcast multiply ``[R, K, M, N]`` reduced over K, the larger of
      M and N innermost.

    Small float reductions are written out the same way: ``reduce_sum`` / ``reduce_max`` /
    ``reduce_min`` over ≤ 8 elements with ≥ 1024 outputs (the softmax and log-sum-exp over 3
    classes of many replicas × examples) as a pairwise combination of slices; XLA:CPU runs a
    reduction over a short axis far slower than the same arithmetic as elementwise code.
    (Unrolling longer reductions, a bias gradient's sum over a batch of 32, was measured too:
    faster for some shapes, several times slower for others.)

    The values are those of the products and reductions up to the order of float summation
    (only float32 and float64 products whose output has the operands' dtype are rewritten);
    every other operation, unbatched products, products with no small side and larger
    reductions are left as they are (``reductions=False``: every reduction).
    """

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(*args)
        outs = _eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(args), reductions)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


def _eval_jaxpr(jaxpr, consts, args, reductions=True):
    env = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    transposed = {}  # var -> (the array it is a transpose of, the permutation)
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive is jex_core.primitives.dot_general_p:
            small = _small_dot(eqn, *(transposed.get(v, (a, tuple(range(a.ndim)))) for v, a in zip(eqn.invars, ins)))
        elif eqn.primitive in _REDUCTIONS and reductions:
            small = _small_reduce(eqn, ins[0])
        else:
            small = None
        if eqn.primitive.name == "transpose":
            transposed[eqn.outvars[0]] = (ins[0], tuple(eqn.params["permutation"]))
        if small is not None:
            outs = [small]
        elif eqn.primitive is jex_core.primitives.jit_p:  # inline jitted helpers (jnp functions)
            outs = _eval_jaxpr(eqn.params["jaxpr"].jaxpr, eqn.params["jaxpr"].consts, ins, reductions)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)  # params (older JAX: (subfuns, params))
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*subfuns, *ins, **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _small_dot(eqn, lhs, rhs):
    """The elementwise form of a small batched ``dot_general`` (see :func:`_small_contractions`), or None.

    ``lhs``, ``rhs``: ``(array, perm)``, the operand being ``transpose(array, perm)`` (``x.T`` in
    ``xᵀ δ``), so that the layout of ``array`` decides the form."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    (lhs, lperm), (rhs, rperm) = lhs, rhs
    out_dtype = eqn.outvars[0].aval.dtype
    if not lb or len(lc) != 1 or not all(a.dtype == out_dtype for a in (lhs, rhs)) \
            or out_dtype not in _FLOATS:  # no mixed or low-precision accumulation
        return None
    lc, lb, rc, rb = ([perm[d] for d in dims] for perm, dims in ((lperm, lc), (lperm, lb), (rperm, rc), (rperm, rb)))
    lf = [d for d in range(lhs.ndim) if d not in (*lc, *lb)]
    rf = [d for d in range(rhs.ndim) if d not in (*rc, *rb)]
    if len(lf) != 1 or len(rf) != 1:
        return None
    k, m, n = lhs.shape[lc[0]], lhs.shape[lf[0]], rhs.shape[rf[0]]
    if k == 0:
        return None
    a = jnp.transpose(lhs, (*lb, lf[0], lc[0]))  # [batch..., M, K]
    b = jnp.transpose(rhs, (*rb, rc[0], rf[0]))  # [batch..., K, N]
    if k <= _SMALL:
        out = sum(a[..., :, i, None] * b[..., None, i, :] for i in range(k))  # [batch..., M, N]
    elif min(m, n) <= _SMALL and lc[0] < lf[0] and rc[0] < rf[0]:  # aᵀ δ: K is the outer axis of both
        at = jnp.swapaxes(a, -1, -2)  # [batch..., K, M]
        if n >= m:
            out = jnp.sum(at[..., :, :, None] * b[..., :, None, :], axis=-3)  # [batch..., M, N]
        else:
            out = jnp.swapaxes(jnp.sum(b[..., :, :, None] * at[..., :, None, :], axis=-3), -1, -2)
    else:
        return None
    return out


_REDUCTIONS = {jax.lax.reduce_sum_p: jnp.add, jax.lax.reduce_max_p: jnp.maximum, jax.lax.reduce_min_p: jnp.minimum}


def _small_reduce(eqn, x):
    """The elementwise form of a small float reduction (see :func:`_small_contractions`), or None.

    ``x``: the operand, ``[...]``. The reduced elements are taken as slices
    ``[extent, rest...]`` and combined pairwise with ``+`` / ``max`` / ``min``: NaNs propagate
    as in ``lax.max`` / ``lax.min`` and NumPy (XLA:CPU's own max and min reductions of a few
    thousand rows drop them in jax 0.10.2), and a sum starts from +0.0 as XLA's does (a sum of
    -0.0s is +0.0). Only reductions with at least ``_MIN_REDUCED_OUT`` outputs: the softmaxes
    of 64 replicas × 32 examples run faster unrolled (``experiments/results/sweep_benchmark.md``,
    table 1: "products and reductions" against "products"), those of 8 replicas (256 rows)
    measured slower. A reduced axis sharded over an explicit mesh, or an explicit output
    sharding, is left to the reduction (slicing a sharded axis is not allowed there)."""
    aval = eqn.invars[0].aval  # shape and dtype (x may be a Python scalar literal)
    axes = tuple(int(a) for a in eqn.params["axes"])
    extent = int(np.prod([aval.shape[a] for a in axes]))
    spec = getattr(getattr(aval, "sharding", None), "spec", None) or ()
    if not (1 < extent <= _SMALL and aval.size // extent >= _MIN_REDUCED_OUT
            and aval.dtype in _FLOATS
            and eqn.params.get("out_sharding") is None
            and all(a >= len(spec) or spec[a] is None for a in axes)):
        return None
    rest = [d for d in range(aval.ndim) if d not in axes]
    flat = jnp.transpose(x, (*axes, *rest)).reshape(extent, *(aval.shape[d] for d in rest))  # [extent, rest...]
    out = _pairwise(_REDUCTIONS[eqn.primitive], [flat[i] for i in range(extent)])
    if eqn.primitive is jax.lax.reduce_sum_p:  # XLA's sum starts from +0.0: an exact zero is +0.0
        out = jnp.where(out == 0, jnp.zeros_like(out), out)
    return out


def _pairwise(op, terms):
    """``op`` over ``terms``, combined in pairs (a tree of depth ⌈log2(len(terms))⌉)."""
    while len(terms) > 1:
        terms = [op(*terms[i:i + 2]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def run(replicas, x, y, optimizer: str, epochs: int, batch_size: int, grads: str = "manual", val=None,
        max_bytes: int | None = None, on_epoch=None, dtype=jnp.float32, devices: int | None = None) -> SweepResult:
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
    mesh = _mesh(1 if devices is None else devices)
    if max_bytes is not None:
        budget = int(max_bytes)
    else:  # per device; CPU devices share the host's memory
        budget = _device_memory() // (mesh.size if jax.devices()[0].platform == "cpu" else 1)
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
        data = estimate_bytes(net, batch_size, n, 0, optimizer, x.dtype)  # on every device
        per = mesh.size * max(1, int((budget - data) // (one - data)))  # replicas per chunk, over all devices
        chunks += [(net, members[i:i + per]) for i in range(0, len(members), per)]
    out_params, history, final = [None] * len(replicas), [None] * len(replicas), [None] * len(replicas)
    opt = _optimizer(optimizer)
    spread = _spread(mesh)
    x, y = spread((x, y), replicated=True)
    splits = [("train", (x, y))]
    if val is not None:
        splits.append(("val", spread((jnp.asarray(val[0], x.dtype), jnp.asarray(val[1])), replicated=True)))
    epoch_fns: dict = {}  # one compiled epoch per network (and chunk size)
    for g, (net, members) in enumerate(chunks):
        rs = [replicas[i] for i in members]
        padded = rs + [rs[-1]] * (-len(rs) % mesh.size)  # a multiple of the device count
        keys = [jax.random.split(jax.random.key(r.seed)) for r in padded]  # (key_init, key_train) as fit's callers do
        params = jax.tree.map(lambda *a: jnp.stack(a), *[init_params(k[0], net, x.dtype) for k in keys])
        hyper = _hyper(optimizer, padded, x.dtype)
        opt_state = jax.vmap(lambda p, h: optax.inject_hyperparams(_inner(optimizer))(**h).init(p))(params, hyper)
        l2 = jnp.asarray([r.l2_value for r in padded], x.dtype)
        if net not in epoch_fns:
            epoch_fns[net] = _group_epoch(net, opt, batch_size, n, grads)
        epoch_fn = epoch_fns[net]
        seeds = sorted({r.seed for r in padded})  # replicas with one seed share its shuffles
        train_keys = spread(jnp.stack([jax.random.split(jax.random.key(s))[1] for s in seeds]), replicated=True)  # [S]
        which = jnp.asarray([seeds.index(r.seed) for r in padded])  # [R]
        params, opt_state, l2, which = spread((params, opt_state, l2, which))
        hist = [dict() for _ in rs]
        for epoch in range(1, epochs + 1):
            params, opt_state, _, ms = epoch_fn(params, opt_state, train_keys, epoch, which, l2, x, y,
                                                [data for _, data in splits])
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


def _spread(mesh):
    """``tree -> tree`` placed on ``mesh``: split along the leading (replica) axis, or replicated."""
    if mesh.size == 1:
        return lambda tree, replicated=False: tree

    def place(tree, replicated=False):
        spec = jax.sharding.PartitionSpec() if replicated else jax.sharding.PartitionSpec(mesh.axis_names[0])
        return jax.device_put(tree, jax.sharding.NamedSharding(mesh, spec))

    return place


def _inner(optimizer):
    return optax.adam if optimizer == "adam" else optax.sgd


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
