"""Training: jit-compiled steps and whole scanned epochs with plain SGD or any optax optimizer.

Gradients come from :func:`jaxnet.value_and_manual_grads` (``grads="manual"``, the
default) or from ``jax.value_and_grad(jaxnet.loss)`` (``grads="autodiff"``), so the two can
be compared step for step. Every optimizer is an ``optax.GradientTransformation``;
:func:`sgd` is the notes' rule ``p ← p − γ ∂L/∂p`` written here.

An epoch is one jitted call (a jitted call per step for convolutional networks on the CPU,
see :func:`make_epoch`): the data stays on the device, a permutation drawn from the
epoch's key orders it, and ``lax.scan`` runs the mini-batch steps; :func:`fit` runs several
such epochs per compiled call (a ``lax.while_loop`` over them, see ``epochs_per_call``). The last partial batch
is **dropped** (``N mod B`` examples, different ones every epoch since the permutation is
redrawn), so every step has the same shape and nothing is retraced; full-batch gradient
descent (note 001) is ``batch_size = N``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from .activations import ACTIVATIONS
from .devices import as_array
from .distributed import from_main, to_host
from .losses import get_loss
from .network import (
    Network,
    Params,
    State,
    check_inputs,
    check_mode,
    check_net,
    forward_pass,
    has_state,
    init_state,
    inputs_as,
    l2_penalty,
    loss,
    loss_with_state,
    needs_key,
    prepare_inputs,
    value_and_manual_grads,
    value_and_manual_grads_with_state,
)

GRADS = ("manual", "autodiff")


def sgd(learning_rate: float) -> optax.GradientTransformation:
    """Plain gradient descent ``p ← p − γ g``: note 001's update (note 003 prints ``+ μ``;
    descent needs the minus). An ``optax.GradientTransformation`` with no state."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: -learning_rate * g, grads), state

    return optax.GradientTransformation(init, update)


def value_and_grads_fn(grads: str = "manual") -> Callable[..., tuple[jax.Array, Params]]:
    """``(params, net, x, y) -> (loss, grads)``: hand-derived or autodiff."""
    if grads == "manual":
        return value_and_manual_grads
    if grads == "autodiff":
        return jax.value_and_grad(loss)
    raise ValueError(f"grads must be one of {list(GRADS)}, got {grads!r}")


def value_state_and_grads_fn(grads: str = "manual") -> Callable[..., tuple[tuple[jax.Array, Any], Params]]:
    """``(params, net, x, y, state=, key=) -> ((loss, new_state), grads)`` in training mode:
    :func:`jaxnet.value_and_manual_grads_with_state` or ``jax.value_and_grad(loss_with_state,
    has_aux=True)``."""
    if grads == "manual":
        return value_and_manual_grads_with_state
    if grads == "autodiff":
        return jax.value_and_grad(loss_with_state, has_aux=True)
    raise ValueError(f"grads must be one of {list(GRADS)}, got {grads!r}")


DROPOUT_TAG = 0x64726F70  # "drop": the step keys of layers that draw random numbers, fold_in(epoch key, tag)


def step_key(key: jax.Array, step: int | jax.Array) -> jax.Array:
    """The PRNG key a training step gives the network (Dropout's masks): ``fold_in(fold_in(key,
    DROPOUT_TAG), step)`` with ``key`` the epoch's key and ``step`` the global step counter, so a
    resumed run draws the same masks; independent of the epoch's permutation key."""
    return jax.random.fold_in(jax.random.fold_in(key, DROPOUT_TAG), step)


def make_step(
    net: Network, optimizer: optax.GradientTransformation, grads: str = "manual"
) -> Callable[..., tuple[Params, Any, jax.Array]]:
    """A jitted step ``(params, opt_state, x, y) -> (params, opt_state, loss)``.

    ``params`` and ``opt_state`` are donated: do not reuse the arrays passed in. For networks
    with state or Dropout (which need state and keys carried from step to step) use
    :func:`make_epoch` or :func:`fit`.
    """
    check_net(net)
    if has_state(net) or needs_key(net):
        raise ValueError(
            "make_step: this network has state (BatchNorm) or draws random numbers (Dropout), which a step "
            "of (params, opt_state, x, y) cannot carry; use make_epoch(...) or fit(...)"
        )
    vg = value_and_grads_fn(grads)

    def step(params, opt_state, x, y):
        value, g = vg(params, net, x, y)
        updates, opt_state = optimizer.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1))


def permutation(key: jax.Array, n: int) -> jax.Array:
    """``jax.random.permutation(key, n)``, the same values, computed with cheaper sorts.

    JAX draws 32-bit random keys ``u`` (one round per ``3 ln n / ln(2³² − 1)``, rounded up) and
    stably sorts ``arange(n)`` by them: a key-value sort, which XLA:CPU runs through a general
    comparator (``experiments/results/sweep_benchmark.md`` times both ways). Here, for
    n ≤ 2¹⁶, each stable sort by ``u`` is an LSD radix sort of two passes; each pass sorts one
    ``int32`` array whose high bits are a digit of ``u`` and whose low ``m = ⌈log₂ n⌉`` bits are
    the position, so equal digits keep their order (stable) and the position comes back out of
    the sorted value. Sorting plain integers takes XLA:CPU's fast path; the result is the same
    permutation bit for bit (tested against ``jax.random.permutation``). Larger n use
    ``jax.random.permutation`` itself.
    """
    order = jnp.arange(n)
    if n <= 1:
        return order
    if n > 2**16:  # positions of more than 16 bits leave digits too short for two passes
        return jax.random.permutation(key, n)
    rounds = math.ceil(3 * math.log(n) / math.log(2**32 - 1))  # as jax.random.permutation draws them
    for _ in range(rounds):
        key, subkey = jax.random.split(key)
        order = order[_stable_argsort_u32(jax.random.bits(subkey, (n,), jnp.uint32))]
    return order


def _stable_argsort_u32(u: jax.Array) -> jax.Array:
    """Indices that stably sort ``u`` ([n] uint32, 2 ≤ n ≤ 2³⁰): ⌈32 / (32 − ⌈log₂ n⌉)⌉ LSD radix
    passes of int32 sorts (two for n ≤ 2¹⁶)."""
    n = u.shape[0]
    m = math.ceil(math.log2(n))  # bits of a position
    digit_bits = 32 - m
    position = jnp.arange(n, dtype=jnp.uint32)
    perm = jnp.arange(n, dtype=jnp.int32)  # the order after the passes so far
    for low in range(0, 32, digit_bits):  # least significant digit first
        digit = (u[perm] >> low) & jnp.uint32((1 << min(digit_bits, 32 - low)) - 1)
        packed = (digit << m) | position  # [n]: digit in the high bits, position in the low m bits
        flipped = jax.lax.bitcast_convert_type(packed ^ jnp.uint32(1 << 31), jnp.int32)  # unsigned order as signed
        ranked = jax.lax.bitcast_convert_type(jax.lax.sort(flipped), jnp.uint32) & jnp.uint32((1 << m) - 1)
        perm = perm[ranked.astype(jnp.int32)]
    return perm


def _directional_gap(params, net, x, y, g, key, mode=None):
    """|D_v L − ⟨g, v⟩| / max(|D_v L|, |⟨g, v⟩|) for a random direction v (one jvp).

    ``g`` is the gradient training uses, as training computed it (at its matmul precision);
    the reference ``D_v L`` and the product ``⟨g, v⟩`` are traced under matmul precision
    "highest", so the gap measures ``g``'s own error and means the same on a GPU that runs
    float32 products in TF32 as on a CPU (there a TF32-rounded ``g`` still shows as such)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    v = jax.tree.unflatten(treedef, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
    with jax.default_matmul_precision("highest"):  # applies when traced: the jvp's and vdot's products
        _, directional = jax.jvp(lambda p: loss(p, net, x, y, **(mode or {})), (params,), (v,))
        inner = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
    scale = jnp.maximum(jnp.maximum(jnp.abs(directional), jnp.abs(inner)), jnp.finfo(directional.dtype).tiny)
    return jnp.abs(directional - inner) / scale


def make_epoch(
    net: Network,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    n: int,
    grads: str = "manual",
    check_every: int = 0,
    max_traces: int | None = None,
    loop: str = "auto",
    devices: int | None = None,
    donate: bool = True,
) -> Callable[..., tuple[Params, Any, jax.Array, jax.Array, jax.Array, State | None]]:
    """A jitted epoch ``(params, opt_state, step, key, x, y, state=None) -> (params, opt_state,
    step, losses, gaps, state)``.

    ``x``: [n, ...], ``y``: [n] or [n, K], resident on the device. The epoch draws a
    permutation from ``key``, runs ``n // batch_size`` steps in a ``lax.scan`` (the
    remainder is dropped) and returns the per-step losses ``[steps]``. With
    ``check_every = k > 0`` every k-th step (counted globally by ``step``) also compares
    the gradient used with a jvp directional derivative along a random direction and
    records the relative gap (``gaps [steps]``, 0 where not checked). The reference side runs
    at matmul precision "highest" (see :func:`_directional_gap`), so a gap is the error of the
    gradient training uses: in float32 on a GPU that runs products in TF32 (JAX's default
    there) that gradient carries TF32 rounding — gaps near 1e-3 were measured on an H200 when
    the reference ran in TF32 too — unless training runs under
    ``jax.default_matmul_precision("highest")``. With
    ``max_traces``, tracing the epoch more often than that raises (``chex.assert_max_traces``).

    ``loop``: ``"scan"`` (the whole epoch one compiled call), ``"python"`` (a jitted step per
    batch, called from Python: the same permutation and steps, equal up to float rounding), or ``"auto"``:
    ``"python"`` for networks with convolutions on the CPU, where XLA runs convolutions
    inside a loop body several times slower than outside one (jax-ml/jax#12868; the scan
    columns of ``git show 7bc3a65:experiments/results/benchmark.md``), ``"scan"`` otherwise.

    ``devices = N``: data-parallel over the first N local devices (see :func:`data_parallel`):
    each step's batch is sharded over a 1-D mesh, params and optimizer state stay replicated,
    and the gradient function is used as it is — XLA partitions the batch sums (``xᵀ δ``,
    ``Σ δ``) into per-device partial sums and an all-reduce, so the loss and its gradient are
    those of the global batch (a mean over all ``batch_size`` examples, not a mean of means).
    Place params, optimizer state and data with :func:`replicate` first (``fit`` does).

    ``donate``: the epoch reuses the buffers of the ``params`` and ``opt_state`` passed in (do
    not use those arrays afterwards); ``False`` leaves them valid, as ``fit`` keeps them to
    return the last good state when training diverges.

    ``state``: the network's state (:func:`jaxnet.init_state`), required when it has one
    (BatchNorm), carried through the steps in training mode and returned (``None`` for a network
    without state). A network with Dropout gets step ``s``'s key :func:`step_key` ``(key, s)``.
    """
    check_net(net)
    if not (isinstance(batch_size, int) and 0 < batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, {n}] (the training set size), got {batch_size!r}")
    vg = value_state_and_grads_fn(grads)
    steps = n // batch_size
    shard = data_parallel(devices, batch_size)
    stateful, keyed = has_state(net), needs_key(net)

    def order_of(key):
        """The epoch's batches ``[steps, batch]`` (a permutation, the remainder dropped) and the spot-check key."""
        k_perm, k_check = jax.random.split(key)
        return permutation(k_perm, n)[: steps * batch_size].reshape(steps, batch_size), k_check

    def body(carry, idx, k_check, k_epoch, x, y):  # idx: [batch]
        params, opt_state, step, state = carry
        xb, yb = shard(x[idx]), shard(y[idx])  # gathered on the device; split over the mesh with devices=N
        mode = {"state": state, "key": step_key(k_epoch, step) if keyed else None}
        (value, new_state), g = vg(params, net, xb, yb, **mode)
        if check_every:
            gap = jax.lax.cond(
                step % check_every == 0,
                lambda: _directional_gap(params, net, xb, yb, g, jax.random.fold_in(k_check, step), mode),
                lambda: jnp.zeros((), value.dtype),
            )
        else:
            gap = jnp.zeros((), value.dtype)
        updates, opt_state = optimizer.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, step + 1, new_state), (value, gap)

    def check_state(state):
        if stateful and state is None:
            raise ValueError(
                "state: this network has state (BatchNorm's running statistics); pass state=init_state(net)"
            )
        return state if stateful else None

    loop = _resolve_loop(net, loop)
    if loop == "scan":

        def epoch(params, opt_state, step, key, x, y, state=None):
            order, k_check = order_of(key)
            (params, opt_state, step, state), (losses, gaps) = jax.lax.scan(
                lambda carry, idx: body(carry, idx, k_check, key, x, y),
                (params, opt_state, step, check_state(state)),
                order,
            )
            return params, opt_state, step, losses, gaps, state

        if max_traces is not None:
            epoch = chex.assert_max_traces(epoch, n=max_traces)
        return jax.jit(epoch, donate_argnums=(0, 1) if donate else ())
    if loop != "python":
        raise ValueError(f"loop must be 'auto', 'scan' or 'python', got {loop!r}")
    batches = jax.jit(order_of)
    one_step = jax.jit(
        body if max_traces is None else chex.assert_max_traces(body, n=max_traces),
        donate_argnums=(0,) if donate else (),
    )

    def python_epoch(params, opt_state, step, key, x, y, state=None):
        if isinstance(key, jax.core.Tracer):
            raise TypeError(
                "make_epoch(loop='python')'s epoch was traced: it is a Python loop of jitted steps, "
                "and under jit it would unroll into one program of every step; call it outside jit"
            )
        order, k_check = batches(key)
        state = check_state(state)
        state = None if state is None else jax.tree.map(jnp.copy, state)  # copies: only params, opt_state donated
        carry = (params, opt_state, jnp.array(step, jnp.int32), state)  # step copied too
        outs = []
        for i in range(steps):
            carry, out = one_step(carry, order[i], k_check, key, x, y)
            outs.append(out)
        losses, gaps = (jnp.stack(v) for v in zip(*outs))
        params, opt_state, step, state = carry
        return params, opt_state, step, losses, gaps, state

    return python_epoch


def data_parallel(devices: int | None, batch_size: int) -> Callable[[jax.Array], jax.Array]:
    """``x -> x`` constrained to be split along its batch axis over a 1-D mesh of the first
    ``devices`` devices (identity for ``None`` or 1). ``ValueError`` when ``devices`` exceeds
    the devices present or does not divide ``batch_size``. With several processes
    (``jax.distributed.initialize``) the devices are those of all processes."""
    if devices is None or devices == 1:
        return lambda a: a
    mesh = device_mesh(devices)
    if batch_size % devices:
        raise ValueError(
            f"devices={devices} must divide the batch size {batch_size} (each device takes an equal share)"
        )
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return lambda a: jax.lax.with_sharding_constraint(a, sharding)


def device_mesh(devices: int) -> jax.sharding.Mesh:
    """A 1-D ``jax.sharding.Mesh`` over the first ``devices`` of ``jax.devices()``, its axis
    named ``"data"`` (the mesh of :func:`data_parallel`, :func:`replicate` and of
    ``jaxnet.sweep.run(..., devices=...)``). ``ValueError`` when ``devices`` is not a positive
    integer or exceeds the devices present. With several processes
    (``jax.distributed.initialize``) the devices are those of all processes."""
    present = jax.devices()  # every process's devices (the local ones in a single process)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if devices > len(present):
        raise ValueError(f"devices={devices}, but only {len(present)} {present[0].platform} device(s) are present")
    return jax.sharding.Mesh(np.array(present[:devices]), ("data",))


def replicate(tree: Any, devices: int | None) -> Any:
    """``tree``'s leaves as global arrays held whole by each of the first ``devices`` devices (a
    replicated ``NamedSharding`` over :func:`device_mesh`); unchanged for ``None`` or 1.

    Every leaf that ``fit`` passes to its compiled calls: arrays (NumPy or JAX), Python and NumPy
    scalars (a step counter becomes a 0-d array), PRNG keys (placed as their key data, the same
    key implementation). A host value is built with ``jax.make_array_from_callback`` from the full
    value, which every process must hold, the same in each (with several processes, after
    ``jax.distributed.initialize``, see :mod:`jaxnet.distributed`); an array already placed so is
    kept, and a global array laid out otherwise is resharded (``jax.device_put``).
    ``None`` leaves (no state) stay ``None``."""
    if devices is None or devices == 1:
        return tree
    sharding = jax.sharding.NamedSharding(device_mesh(devices), jax.sharding.PartitionSpec())
    return jax.tree.map(lambda a: _replicated(a, sharding), tree)


def _replicated(a: Any, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """One leaf of :func:`replicate`."""
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_replicated(jax.random.key_data(a), sharding), impl=jax.random.key_impl(a))
    if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
        return a
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return jax.device_put(a, sharding)
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _resolve_loop(net, loop):
    """``make_epoch``'s ``loop``, with ``"auto"`` decided."""
    if loop == "auto":
        return "python" if _has_conv(net) and jax.default_backend() == "cpu" else "scan"
    return loop


def _has_conv(net):
    from .layers import Conv2D

    return any(isinstance(layer, Conv2D) for layer in net.layers)


# --- metrics --------------------------------------------------------------------------------


EVAL_CHUNK = 512
""":func:`evaluate` runs the network on chunks of this many examples (the last one padded and
masked), so every split of every size is one compiled program."""


@jax.jit
def metric_arrays(
    params: Params,
    net: Network,
    x: jax.Array,
    y: jax.Array,
    l2: float | jax.Array | None = None,
    state: State | None = None,
) -> dict[str, jax.Array]:
    """:func:`evaluate`'s metrics as a dict of scalar arrays, jitted, for use inside traced code
    (``fit``'s per-epoch report, ``jaxnet.sweep`` under ``vmap``): ``loss``, and ``accuracy``
    (classification) or ``rmse`` and ``r2`` (regression). ``l2``: the penalty in the loss
    (``None``: the net's own). Evaluation mode: BatchNorm with the running statistics of
    ``state``, Dropout the identity."""
    y = jnp.asarray(y)
    y_mean = jnp.mean(y.reshape(len(y), -1), axis=0) if net.loss == "squared_error" else None  # [K]
    sums = metric_sums(params, net, x, y, jnp.ones(len(x), bool), y_mean, state, l2)
    return metrics_from_sums(net, sums, len(x))


def metric_sums(
    params: Params,
    net: Network,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    y_mean: jax.Array | None,
    state: State | None,
    l2: float | jax.Array | None = None,
) -> dict[str, jax.Array]:
    """The sums the metrics are made of, over the rows of ``x`` [C, ...] where ``mask`` [C] is True,
    in evaluation mode: ``loss`` = Σ ℓ_i; ``correct`` (classification: right argmax, or right
    sign per output); ``squares`` = Σ (f − y)² and ``spread`` = Σ (y − ȳ)² with ``y_mean`` = ȳ
    [K] (regression); and ``penalty``, the loss's L2 term (not a sum over rows)."""
    x, targets, _ = prepare_inputs(params, net, x, y)
    out, _, _ = forward_pass(params, net, x, state=check_mode(net, params, state, None, False), train=False)  # [C, K]
    keep = lambda a: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, 0)  # masked rows count 0
    penalty = jnp.asarray(l2_penalty(params, net, l2), out.dtype)  # a static 0.0 without L2
    sums = {"loss": jnp.sum(keep(get_loss(net.loss).value(out, targets))), "penalty": penalty}
    if net.loss == "softmax_cross_entropy":
        labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
        sums["correct"] = jnp.sum(keep(jnp.argmax(out, axis=-1) == labels))
    elif net.loss == "sigmoid_cross_entropy":
        sums["correct"] = jnp.sum(keep((out > 0) == (y.reshape(out.shape) > 0.5)))
    else:
        if y_mean is None:
            raise ValueError("y_mean: a regression's R² needs the targets' mean per output [K]")
        sums["squares"] = jnp.sum(keep((out - y.reshape(out.shape)) ** 2))
        sums["spread"] = jnp.sum(keep((y.reshape(out.shape) - y_mean[None]) ** 2))  # [C, K] − [1, K]
    return sums


def metrics_from_sums(net: Network, sums: dict[str, Any], n: int) -> dict[str, Any]:
    """The metrics of :func:`metric_arrays` from :func:`metric_sums` over ``n`` examples (arrays in
    traced code, NumPy numbers on the host alike): the loss ``r Σ ℓ_i + L2`` (``r = 1/n`` for a
    mean), accuracy = correct / (n, or n K for sigmoid outputs), RMSE = sqrt(squares / (n K)),
    R² = 1 − squares / spread."""
    k = net.output_shape[0]
    r = 1.0 / n if net.reduction == "mean" else 1.0
    values = {"loss": r * sums["loss"] + sums["penalty"]}
    if net.loss == "softmax_cross_entropy":
        values["accuracy"] = sums["correct"] / n
    elif net.loss == "sigmoid_cross_entropy":
        values["accuracy"] = sums["correct"] / (n * k)
    else:
        values["rmse"] = (sums["squares"] / (n * k)) ** 0.5
        values["r2"] = 1.0 - sums["squares"] / sums["spread"]
    return values


_chunk_sums = jax.jit(metric_sums)


def evaluate(params: Params, net: Network, x: ArrayLike, y: ArrayLike, state: State | None = None) -> dict[str, float]:
    """Loss, and accuracy (classification) or RMSE and R² (regression), as Python floats, in
    evaluation mode (``state``: the network's state, needed for BatchNorm).

    Accuracy: argmax vs label (softmax), or the fraction of outputs with ``(f > 0) == (y > 0.5)``
    (sigmoid, every output counted). RMSE and R² pool all outputs:
    ``R² = 1 − Σ (f − y)² / Σ (y − ȳ)²`` with ``ȳ`` the per-output mean.

    The examples go through the network :data:`EVAL_CHUNK` at a time (the last chunk padded with
    masked rows), and the sums are added up in float64: one compiled program evaluates every
    split, whatever its size.
    """
    dtype = jax.tree.leaves(params)[0].dtype
    x, y = np.asarray(inputs_as(net, x, dtype)), np.asarray(y)
    if np.issubdtype(y.dtype, np.floating):
        y = y.astype(dtype)  # targets in the params' dtype, as the loss takes them (so is their mean below)
    if x.ndim == 0 or y.ndim == 0 or len(x) == 0 or len(y) != len(x):
        raise ValueError(
            f"x, y: expected batches [n, ...] of the same positive n, got shapes {list(x.shape)} and {list(y.shape)}"
        )
    n = len(x)
    y_mean = np.mean(y.reshape(n, -1), axis=0, dtype=np.float64).astype(dtype) if net.loss == "squared_error" else None
    totals: dict[str, float] = {}
    for start in range(0, n, EVAL_CHUNK):
        rows = min(EVAL_CHUNK, n - start)
        pad = lambda a, rows=rows, start=start: np.concatenate(
            [a[start : start + rows], np.zeros((EVAL_CHUNK - rows, *a.shape[1:]), a.dtype)]
        )  # [EVAL_CHUNK, ...]
        mask = np.arange(EVAL_CHUNK) < rows
        sums = jax.device_get(_chunk_sums(params, net, pad(x), pad(y), mask, y_mean, state))
        for name, value in sums.items():  # the penalty is the same in every chunk: kept, not added
            totals[name] = float(value) + (totals.get(name, 0.0) if name != "penalty" else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # R² of targets without spread: ±inf or NaN, as in jnp
        values = metrics_from_sums(net, {k: np.float64(v) for k, v in totals.items()}, n)
    return {k: float(v) for k, v in values.items()}


def _epoch_report(params, step, net, losses, gaps, state, x, y, val, full):
    """What ``fit`` checks and records after an epoch, computed on the device: whether the step
    losses ``[steps]`` are finite (and the first that is not), their mean, the largest spot-check
    gap, whether every parameter is finite, the step counter, and the metrics on the training and
    validation sets, evaluated where ``full`` (a traced bool) is true and NaN elsewhere."""
    finite = jnp.isfinite(losses)
    report = {
        "losses_finite": jnp.all(finite),
        "first_bad": jnp.argmin(finite),
        "mean_loss": jnp.mean(losses),
        "max_gap": jnp.max(gaps),
        "params_finite": jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(params)])),
        "step": step,
    }

    def metrics():
        splits = {"train": (x, y), **({"val": val} if val is not None else {})}
        return {name: metric_arrays(params, net, *data, None, state) for name, data in splits.items()}

    unevaluated = lambda: jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), jax.eval_shape(metrics))
    report.update(jax.lax.cond(full, metrics, unevaluated))
    return report


def code_identity(net: Network) -> tuple:
    """What a compiled program of ``net`` was traced from besides ``net``'s fields: the functions of
    every layer class (sub-layers of composites too), of its loss head and of the activations. A
    method reassigned in place (a notebook's fix, a test's planted mistake) changes it, so a cached
    program is not reused for code it was not traced from."""
    layers, classes = list(net.layers), []
    while layers:
        layer = layers.pop()
        layers.extend(getattr(layer, "layers", ()) if isinstance(getattr(layer, "layers", None), tuple) else ())
        cls = type(layer)
        classes.append((cls, *(getattr(cls, name) for name in ("fwd", "bwd", "apply", "init_state", "output_shape"))))
    return (tuple(classes), id(get_loss(net.loss)), tuple(id(a) for a in ACTIVATIONS.values()))


MAX_EPOCHS_PER_CALL = 1024
"""The most epochs ``fit`` runs in one compiled call (the length of the per-epoch report buffers)."""

CALL_SECONDS = 1.0
"""``fit(..., epochs_per_call="auto")`` sizes its calls to take about this long, so a progress bar
driven by ``on_epoch`` moves about once a second."""

RUNNING, DIVERGED, STOPPED = 0, 1, 2  # why a call of fit's program ended before its count


def _accept(carry, out, report, epoch, full, patience):
    """The carry after an epoch and why to halt: the epoch's ``out`` (``make_epoch``'s outputs) is
    taken unless it diverged (a step loss or a parameter not finite, or an evaluated training loss
    not finite): then the carry stays that of the epoch before (the last good state) and the halt
    is ``DIVERGED``. With early stopping (``carry["best"]``), an evaluated epoch with a better
    validation loss becomes the best, and ``patience`` epochs after the best the halt is ``STOPPED``."""
    params, opt_state, step, _, _, state = out
    diverged = ~report["losses_finite"] | ~report["params_finite"] | (full & ~jnp.isfinite(report["train"]["loss"]))
    new = dict(carry, params=params, opt_state=opt_state, step=step, state=state)
    halt = jnp.where(diverged, DIVERGED, RUNNING)
    if carry["best"] is not None:
        best, val_loss = carry["best"], report["val"]["loss"]
        better = full & (~best["seen"] | (val_loss < best["loss"]))
        now = {"seen": jnp.array(True), "loss": val_loss, "epoch": jnp.asarray(epoch, jnp.int32)}
        now.update(params=params, state=state)
        new["best"] = jax.lax.cond(better, lambda: now, lambda: best)
        stop = full & ~better & (epoch - best["epoch"] >= patience)
        halt = jnp.where(diverged, DIVERGED, jnp.where(stop, STOPPED, RUNNING))
    return jax.lax.cond(diverged, lambda: carry, lambda: new), halt


def _make_epoch_program(net, optimizer, batch_size, n, grads, check_every, loop, devices, code=None, max_traces=None):
    """``fit``'s program: ``(carry, key, first, count, last, eval_every, patience, x, y, val) ->
    (carry, done, halt, reports)`` runs epochs ``first, first + 1, ...`` (at most ``count``; the
    carry holds ``params``, ``opt_state``, ``step``, ``state`` and, with early stopping, ``best``)
    until one halts (see :func:`_accept`); ``done`` epochs ran (a diverged one included) and
    ``reports`` holds their :func:`_epoch_report` s, the metrics of epoch ``e`` evaluated when
    ``e % eval_every == 0`` or ``e == last``. A scanned epoch makes it one jitted ``lax.while_loop``
    (every count the same program, so results do not depend on how many epochs a call runs);
    the Python loop of a convolutional net on the CPU runs epoch by epoch. Nothing is donated."""
    run_epoch = make_epoch(net, optimizer, batch_size, n, grads, check_every, max_traces, loop, devices, donate=False)

    def judge(carry, out, epoch, last, eval_every, patience, x, y, val):
        """The epoch's report (its metrics where evaluated) and the carry it leaves (:func:`_accept`)."""
        full = (epoch % eval_every == 0) | (epoch == last)
        params, _, step, losses, gaps, state = out
        report = _epoch_report(params, step, net, losses, gaps, state, x, y, val, full)
        return (*_accept(carry, out, report, epoch, full, patience), report)

    def one(carry, key, epoch, last, eval_every, patience, x, y, val):
        out = run_epoch(carry["params"], carry["opt_state"], carry["step"], epoch_key(key, epoch), x, y, carry["state"])
        return judge(carry, out, epoch, last, eval_every, patience, x, y, val)

    if loop != "scan":  # the epoch stays a Python loop of jitted steps; the report and judgement are jitted
        return functools.partial(_python_epochs, run_epoch, jax.jit(judge), jax.jit(epoch_key))

    def epochs(carry, key, first, count, last, eval_every, patience, x, y, val):
        one_of = lambda c, e: one(c, key, e, last, eval_every, patience, x, y, val)
        shapes = jax.eval_shape(one_of, carry, first)[2]
        reports = jax.tree.map(lambda s: jnp.zeros((MAX_EPOCHS_PER_CALL, *s.shape), s.dtype), shapes)  # [E, ...]

        def body(loop_carry):
            i, carry, _, reports = loop_carry
            carry, halt, report = one_of(carry, first + i)
            return i + 1, carry, halt, jax.tree.map(lambda r, v: r.at[i].set(v), reports, report)

        more = lambda loop_carry: (loop_carry[0] < count) & (loop_carry[2] == RUNNING)
        done, carry, halt, reports = jax.lax.while_loop(more, body, (0, carry, jnp.array(RUNNING), reports))
        return carry, done, halt, reports

    return jax.jit(epochs)


def _python_epochs(run_epoch, judge, key_of, carry, key, first, count, last, eval_every, patience, x, y, val):
    """:func:`_make_epoch_program`'s program for a Python-loop epoch (``run_epoch``: a jitted call
    per step): epoch by epoch, each judged by the jitted ``judge``; the reports stacked on the host
    ``[done, ...]`` (NumPy, so no program is compiled per count)."""
    reports, halt = [], RUNNING
    for epoch in range(first, first + count):
        out = run_epoch(carry["params"], carry["opt_state"], carry["step"], key_of(key, epoch), x, y, carry["state"])
        carry, halt, report = judge(carry, out, epoch, last, eval_every, patience, x, y, val)
        reports.append(to_host(report))
        if int(to_host(halt)) != RUNNING:
            break
    return carry, len(reports), halt, jax.tree.map(lambda *r: np.stack(r), *reports)


_epoch_program = functools.lru_cache(maxsize=16)(_make_epoch_program)
""":func:`_make_epoch_program` kept for the last 16 settings (the network, the optimizer object,
the sizes and options, and :func:`code_identity`: all hashable), so ``fit`` called again with
them compiles nothing new."""


class _Pacer:
    """How many epochs ``fit``'s next call runs: ``k`` a call (calls ending at multiples of ``k``
    epochs, counted from 0, so a resumed run keeps the same boundaries), or ``"auto"``: about
    :data:`CALL_SECONDS` a call, from the time per epoch of the previous call (the first call,
    which may compile, runs one epoch; its time, compilation included, sizes the next call, which
    is then timed without it)."""

    def __init__(self, epochs_per_call: int | str) -> None:
        self.fixed = epochs_per_call if isinstance(epochs_per_call, int) else None
        self.next_count = 1

    def count(self, epoch: int, epochs: int) -> int:
        """Epochs for the call after ``epoch`` completed ones, of ``epochs`` in all."""
        count = self.fixed - epoch % self.fixed if self.fixed else self.next_count
        return max(1, min(count, epochs - epoch, MAX_EPOCHS_PER_CALL))

    def took(self, seconds: float, done: int) -> None:
        """Record that the last call ran ``done`` epochs in ``seconds``."""
        if done:
            self.next_count = max(1, int(CALL_SECONDS * done / max(seconds, 1e-9)))


def _check_epochs_per_call(epochs_per_call: Any, on_epoch: Callable | None) -> int | str:
    """``fit``'s ``epochs_per_call`` with its default resolved (``"auto"``, or 1 with ``on_epoch``)."""
    if epochs_per_call is None:
        return 1 if on_epoch is not None else "auto"
    if epochs_per_call == "auto" or (
        isinstance(epochs_per_call, int) and not isinstance(epochs_per_call, bool) and epochs_per_call >= 1
    ):
        return epochs_per_call
    raise ValueError(f"epochs_per_call must be a positive integer or 'auto', got {epochs_per_call!r}")


# --- the training loop ----------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; ``epoch``/``step`` say where, ``params``/``opt_state``/``state``
    hold the last good state (the end of the previous epoch)."""

    def __init__(self, epoch: int, step: int, params: Params, opt_state: Any, state: State | None = None) -> None:
        super().__init__(f"training diverged: the loss is not finite at epoch {epoch}, step {step}")
        self.epoch, self.step, self.params, self.opt_state, self.state = epoch, step, params, opt_state, state


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns: the final params and optimizer state, the counters (epochs and
    steps completed since the very start, resumes included), the per-epoch metric history,
    whether early stopping ended the run, the largest in-training spot-check gap, and the
    network's state (BatchNorm's running statistics; ``None`` for a network without state)."""

    params: Params
    opt_state: Any
    epoch: int  # epochs completed, counting from 0 at the very start (resumes included)
    step: int
    history: dict[str, list[float]]  # name -> list of per-epoch values
    stopped_early: bool = False
    worst_gap: float = 0.0  # largest in-training spot-check gap (0 with check_every=0)
    state: State | None = None  # the network's state after training (with early stopping: the best epoch's)


def epoch_key(key: jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The key of epoch ``epoch``: ``fold_in(key, epoch)``, so a resumed run draws the same."""
    return jax.random.fold_in(key, epoch)


def fit(
    net: Network,
    params: Params,
    x: ArrayLike,
    y: ArrayLike,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    grads: str = "manual",
    val: tuple[ArrayLike, ArrayLike] | None = None,
    patience: int | None = None,
    check_every: int = 0,
    opt_state: Any = None,
    start_epoch: int = 0,
    start_step: int = 0,
    on_epoch: Callable | None = None,
    max_traces: int | None = None,
    devices: int | None = None,
    state: State | None = None,
    eval_every: int = 1,
    epochs_per_call: int | str | None = None,
    history: dict[str, list[float]] | None = None,
) -> FitResult:
    """Train for ``epochs - start_epoch`` epochs (see :func:`make_epoch`) and record metrics.

    Args:
      net, params: the network and its initial params (not modified).
      x, y: training data (NumPy or JAX arrays); checked once with :func:`check_inputs`.
      optimizer: :func:`sgd` or any optax transformation.
      epochs: the epoch to stop at (a resumed run passes the same number with ``start_epoch``).
      batch_size: mini-batch size (``len(x)`` for full-batch gradient descent).
      key: the run's PRNG key; epoch e uses ``fold_in(key, e)``.
      grads: ``"manual"`` or ``"autodiff"``.
      val: optional ``(x_val, y_val)`` evaluated after every epoch.
      patience: with ``val``, stop after this many epochs without a better validation loss
        and return the best params (the count starts afresh on a resumed run).
      check_every: in-training gradient spot check every k steps (0: off).
      opt_state, start_epoch, start_step: to resume from a checkpoint.
      on_epoch: called as ``on_epoch(epoch, params, opt_state, step, metrics)`` after each
        compiled call, i.e. after every epoch with ``epochs_per_call=1`` (the default when
        ``on_epoch`` is given), with the state after the call's last epoch ``epoch`` and that
        epoch's ``metrics`` (every epoch's are in ``history``); the arrays stay valid: ``fit``
        does not donate them. For a network with state, also ``state=`` the state after that
        epoch (what a checkpoint must keep).
      max_traces: fail if the epoch function is traced more often (see :func:`make_epoch`).
      devices: train data-parallel over this many local devices (see :func:`make_epoch`);
        the result equals single-device training up to float rounding (BatchNorm's statistics
        are the global batch's too). Rounding can grow where a gradient is exactly zero in theory:
        the bias of a Dense layer right before a BatchNorm has gradient 0, and Adam scales its
        rounding noise up to full-size steps, which differ between layouts (plain SGD does not).
      eval_every: evaluate the metrics on the whole training and validation sets every this many
        epochs (counted from the very start, as ``epoch % eval_every == 0``) and at the last
        epoch; in between their history entries are NaN (every history list keeps one value per
        epoch), and ``train_step_loss``, the mean of the epoch's step losses, is recorded every
        epoch. Training itself is the same whatever ``eval_every``; between evaluations the
        divergence guard sees the step losses and whether the params are finite (a loss that
        overflows with finite params shows in the next epoch's step losses). With ``patience``, the
        validation loss is compared at the evaluated epochs; ``patience`` still counts epochs.
      state: the network's state to start from (BatchNorm's running statistics; default
        :func:`jaxnet.init_state`, in the params' dtype), as a resumed run passes it back.
        Training updates it step by step; the metrics are computed in evaluation mode with it.
        Dropout's masks come from the run's ``key``: step ``s`` of epoch ``e`` uses
        :func:`step_key` ``(fold_in(key, e), s)``, so a resumed run draws the same masks.

      epochs_per_call: how many epochs one compiled call runs (the host sees nothing in
        between: ``on_epoch``, the history and a divergence are handled at the end of a call):
        ``k``, the calls ending at multiples of ``k`` epochs (and at the last), or ``"auto"``,
        calls of about :data:`CALL_SECONDS` each (at most :data:`MAX_EPOCHS_PER_CALL` epochs; when
        ``devices`` spans several processes, process 0's count, so every process runs the same
        calls: a collective, :func:`jaxnet.distributed.from_main`);
        default ``"auto"``, or 1 when ``on_epoch`` is given. Every call runs the same compiled
        program, epoch after epoch on the device (a ``lax.while_loop``): params, optimizer state,
        history and a divergence are the same whatever the calls' sizes. An epoch that diverges
        ends its call with the state of the epoch before; early stopping ends it at the epoch
        that stops.
      history: a history to continue (a resumed run's ``{name: [per-epoch values]}``): each
        epoch's metrics are appended to it in place as calls end (so ``on_epoch`` can read it),
        and it is ``FitResult.history``. Default: a new dict.

    Raises:
      TrainingDiverged: when a step's loss is not finite.
    """
    check_inputs(params, net, x, y)
    if val is not None:
        check_inputs(params, net, *val)
    if patience is not None and val is None:
        raise ValueError("patience needs a validation set (val=...)")
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer (epochs between evaluations), got {eval_every!r}")
    pacer = _Pacer(_check_epochs_per_call(epochs_per_call, on_epoch))
    dtype = jax.tree.leaves(params)[0].dtype
    if state is not None:
        check_mode(net, params, state, None, False)  # its structure, shapes and dtype, whatever the network
    state = (init_state(net, dtype) if state is None else state) if has_state(net) else None
    x, y = inputs_as(net, x, dtype), as_array(y)
    val = None if val is None else (inputs_as(net, val[0], dtype), as_array(val[1]))
    loop = _resolve_loop(net, "auto")
    settings = (net, optimizer, batch_size, len(x), grads, check_every, loop, devices, code_identity(net))
    # a script's second fit with the same settings (another seed) reuses the compiled program; with
    # max_traces the trace count is this call's own, so the program is made afresh
    program = _epoch_program(*settings) if max_traces is None else _make_epoch_program(*settings, max_traces)
    params = jax.tree.map(jnp.asarray, params)
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    carry = {"params": params, "opt_state": opt_state, "step": as_array(start_step, np.int32), "state": state}
    carry["best"] = None if patience is None else _no_best(params, state, net, x, y, val, start_epoch)
    carry, x, y, val, key = replicate((carry, x, y, val, key), devices)  # global arrays, several processes
    history = {} if history is None else history
    worst_gap, stopped, epoch = 0.0, False, int(start_epoch)  # Python ints: the epochs stay weakly typed
    spans_processes = devices is not None and devices > jax.local_device_count()
    while epoch < epochs and not stopped:
        count, started = pacer.count(epoch, epochs), time.perf_counter()
        count = from_main(count) if pacer.fixed is None and spans_processes else count  # alike in every process
        new, done, halt, reports = program(carry, key, epoch + 1, count, epochs, eval_every, patience or 0, x, y, val)
        done, halt, reports = to_host((done, halt, reports))  # one transfer per call
        done, halt = int(done), int(halt)  # Python ints: the next call's epoch numbers stay weakly typed
        pacer.took(time.perf_counter() - started, done)
        good = done - (halt == DIVERGED)
        metrics = [_epoch_metrics(_row(reports, i), check_every) for i in range(good)]
        for k in metrics[0] if metrics else ():
            history.setdefault(k, []).extend(m[k] for m in metrics)
        worst_gap = max([worst_gap, *(float(g) for g in reports["max_gap"][:good])])
        epoch, carry, stopped = epoch + good, new, halt == STOPPED
        if good and on_epoch is not None:
            extra = {"state": carry["state"]} if carry["state"] is not None else {}
            on_epoch(epoch, carry["params"], carry["opt_state"], int(reports["step"][good - 1]), metrics[-1], **extra)
        if halt == DIVERGED:
            raise _diverged(epoch + 1, carry, _row(reports, good))
    params, state = (carry["best"]["params"], carry["best"]["state"]) if stopped else (carry["params"], carry["state"])
    step = int(to_host(carry["step"]))
    return FitResult(params, carry["opt_state"], epoch, step, history, stopped, worst_gap, state)


def _no_best(params, state, net, x, y, val, epoch) -> dict:
    """Early stopping's initial record (no best yet): ``seen`` False, and a validation loss, an
    epoch, params and state of the dtypes and shapes the best ones will have."""
    loss_dtype = jax.eval_shape(metric_arrays, params, net, *val, None, state)["loss"].dtype
    return {
        "seen": jnp.array(False),
        "loss": jnp.array(jnp.inf, loss_dtype),
        "epoch": jnp.asarray(epoch, jnp.int32),
        "params": params,
        "state": state,
    }


def _row(reports: dict, i: int) -> dict:
    """Epoch ``i``'s report from the host copy of a call's report buffers."""
    return jax.tree.map(lambda r: r[i], reports)


def _epoch_metrics(report: dict, check_every: int) -> dict[str, float]:
    """One epoch's history entries from its host report: ``train_<metric>``, ``val_<metric>`` (NaN
    where not evaluated), ``train_step_loss`` and, with spot checks, ``grad_gap``."""
    metrics = {f"{split}_{k}": float(v) for split in ("train", "val") for k, v in report.get(split, {}).items()}
    metrics["train_step_loss"] = float(report["mean_loss"])
    if check_every:
        metrics["grad_gap"] = float(report["max_gap"])
    return metrics


def _diverged(epoch: int, carry: dict, report: dict) -> TrainingDiverged:
    """The error for epoch ``epoch``, whose ``report`` says it diverged; ``carry`` is the last good
    state. The step named is the first whose loss is not finite, else the epoch's last update."""
    before = int(to_host(carry["step"]))
    step = before + int(report["first_bad"]) + 1 if not report["losses_finite"] else int(report["step"])
    return TrainingDiverged(epoch, step, carry["params"], carry["opt_state"], carry["state"])
