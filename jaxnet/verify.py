"""Verification: compare hand-derived gradients with ``jax.grad`` and finite differences.

This is the one module of the core that calls autodiff, and only as a reference.

Error measure. For a leaf with gradient ``g`` and reference ``r``:
``max_abs = max |g − r|`` and ``max_rel = max |g − r| / max(max |r|, floor · R)``, where
``R`` is the largest reference entry over all leaves and ``floor = 1e-3`` by default: the
error relative to the leaf's largest reference entry, except that a leaf whose reference is
essentially zero (a dead ReLU unit, say) is measured against a thousandth of the whole
gradient, so the rounding noise of finite differences around an exact zero is not a
failure. This is stable where single entries are near zero, and any wrong derivative that
moves a leaf's gradient by a visible fraction shows up in it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import network as _network


@dataclasses.dataclass(frozen=True)
class LeafError:
    """The disagreement of one gradient leaf with its reference."""

    path: str
    max_abs: float
    max_rel: float


def leaf_errors(grads, reference, floor: float = 1e-3) -> list[LeafError]:
    """Per-leaf :class:`LeafError` of ``grads`` against ``reference`` (same tree structure).

    See the module docstring for the measure and ``floor``.
    """
    g_leaves, g_def = jax.tree_util.tree_flatten_with_path(grads)
    r_leaves, r_def = jax.tree_util.tree_flatten(reference)
    if g_def != r_def:
        raise ValueError(f"gradient trees differ in structure: {g_def} vs {r_def}")
    g_leaves = [(path, np.asarray(g, np.float64)) for path, g in g_leaves]
    r_leaves = [np.asarray(r, np.float64) for r in r_leaves]
    overall = max((float(np.max(np.abs(r), initial=0.0)) for r in r_leaves), default=0.0)
    errors = []
    for (path, g), r in zip(g_leaves, r_leaves):
        name = jax.tree_util.keystr(path)
        if g.shape != r.shape:
            raise ValueError(f"{name}: shape {g.shape} vs reference {r.shape}")
        diff = float(np.max(np.abs(g - r), initial=0.0))
        scale = max(float(np.max(np.abs(r), initial=0.0)), floor * overall)
        rel = diff / scale if scale > 0 else diff
        if not np.all(np.isfinite(g)):
            diff = rel = float("inf")
        errors.append(LeafError(name, diff, rel))
    return errors


def finite_difference_grads(f, params, eps: float = 1e-6, chunk: int = 256, jit: bool = False):
    """Central differences ``(f(p + eps e_j) − f(p − eps e_j)) / 2 eps`` for every element.

    Evaluated in chunks of ``chunk`` unit perturbations, each chunk one vmapped call of
    ``f`` over ``2 chunk`` parameter vectors (the last chunk padded with zero
    perturbations, so every call has the same batch shape and reuses compiled kernels).
    With ``jit=True`` that batched call is compiled once and fed each chunk's perturbations
    as an argument (memory: ``2 chunk × n`` numbers at a time). Use float64.
    """
    flat, unravel = ravel_pytree(params)
    n = flat.size
    chunk = max(1, int(chunk))
    batched = jax.vmap(lambda delta: f(unravel(flat + delta)))  # [2 chunk, n] -> [2 chunk]
    if jit:
        batched = jax.jit(batched)
    out = []
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        basis = np.zeros((chunk, n), dtype=flat.dtype)
        basis[np.arange(count), start + np.arange(count)] = eps  # [chunk, n]
        values = batched(jnp.asarray(np.concatenate([basis, -basis])))  # f(p + .), f(p − .)
        out.append((values[:count] - values[chunk : chunk + count]) / (2 * eps))  # [count]
    return unravel(jnp.concatenate(out))


# Where references are computed.
#
# A float64 reference (``jax.grad``, finite differences, a jvp) must be exact to float64
# rounding on every backend, or a right gradient fails the 1e-10 bar. XLA's CPU kernels are
# (the hand-derived gradients agree with them to ~1e-15 throughout the tests). A GPU's need not
# be: on an NVIDIA H200 the float64 ``jax.grad`` of a strided convolution was 2.4e-10 (relative)
# away from the CPU's while the hand-derived gradient on that GPU matched the CPU's to 2e-16 — an
# error no tolerance derived
# from float64 rounding (~1e-16) accounts for, and loosening 1e-10 to cover it would blunt the
# check everywhere. So float64 references run on the CPU device, which every JAX install has
# (the host platform), by default; the checked problems are small, so moving them there is cheap.
# A reference in float32 (or a lower dtype) stays on the working device at matmul precision
# "highest": it is checked against your gradient in that dtype at 1e-4, far above any backend's
# float32 rounding, and where the working dtype runs is what that witness is about.

def working_device(tree=None) -> jax.Device:
    """The device ``tree``'s arrays live on: that of its first ``jax.Array`` leaf (the
    lowest-numbered one of an array spread over several), else JAX's default device
    (``jax.default_device`` when set, else ``jax.devices()[0]``)."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            return min(leaf.devices(), key=lambda d: d.id)
    default = jax.config.jax_default_device
    if isinstance(default, jax.Device):
        return default
    return jax.devices(default)[0] if default else jax.devices()[0]


def reference_device(dtype, device="default", like=None) -> jax.Device:
    """The device a reference computed in ``dtype`` runs on.

    Args:
      dtype: the reference's dtype.
      device: ``"default"`` (or ``None``): the CPU device (``jax.devices("cpu")[0]``) for
        float64, exact on every backend (see the comment above), the working device for other
        dtypes (and for float64 when JAX has no CPU backend, ``JAX_PLATFORMS`` without ``cpu``);
        ``"same"``: the working device; a ``jax.Device``: that device, for every dtype.
      like: a tree whose arrays name the working device (see :func:`working_device`).
    """
    if isinstance(device, jax.Device):
        return device
    if device is None or device == "default":
        if jnp.dtype(dtype) == jnp.float64:
            try:
                return jax.devices("cpu")[0]
            except RuntimeError:  # no CPU backend
                return working_device(like)
        return working_device(like)
    if device == "same":
        return working_device(like)
    raise ValueError(f"reference_device must be a jax.Device, 'default' or 'same', got {device!r}")


def device_name(device: jax.Device) -> str:
    """``"cpu:0"``, ``"cuda:0 (NVIDIA H200)"``: the device and, when it says more, its kind."""
    kind = device.device_kind
    return f"{device}" if kind.lower() == device.platform else f"{device} ({kind})"


def to_device(tree, device: jax.Device):
    """``tree`` with its ``jax.Array`` leaves that live elsewhere placed on ``device``
    (``jax.device_put``: committed, so jitted calls on them run there); arrays already there
    alone, and other leaves (NumPy arrays, Python scalars, a :class:`jaxnet.Network`) as they are."""
    elsewhere = lambda a: isinstance(a, jax.Array) and a.devices() != {device}
    return jax.tree.map(lambda a: jax.device_put(a, device) if elsewhere(a) else a, tree)


def on_device(fn, *args, device: jax.Device):
    """``fn(*args)`` computed on ``device``: the arrays of ``args`` placed there
    (:func:`to_device`), under ``jax.default_device(device)`` (so arrays ``fn`` creates land
    there too) and matmul precision "highest". The result lives on ``device``. Arrays that
    ``fn`` closes over should be on ``device`` or uncommitted."""
    with jax.default_device(device), jax.default_matmul_precision("highest"):
        return fn(*to_device(args, device))


def reference_grads(loss_fn, params, *args, device="default", jit: bool = False):
    """``jax.grad(loss_fn)(params, *args)`` computed on :func:`reference_device` for the
    params' dtype (float64: the CPU device; see ``device``) at matmul precision "highest":
    the autodiff reference that tests and :func:`jaxnet.check_grads` compare hand-derived
    gradients with. ``jit``: compile it (one program per shape; eager by default)."""
    dtype = jnp.result_type(*jax.tree.leaves(params))
    grad = jax.jit(jax.grad(loss_fn)) if jit else jax.grad(loss_fn)
    return on_device(grad, params, *args, device=reference_device(dtype, device, params))


def random_problem(net, seed: int = 0, n: int = 8, dtype=jnp.float64, margin: float = 1e-3, targets=None):
    """A random test problem for ``net``: params with nonzero biases, inputs and targets.

    Drawn with NumPy from ``seed`` (so new shapes cost no JAX compilation): see
    :func:`draw_params`; inputs ~ N(0, 1). Examples whose forward pass comes within
    ``margin`` of a kink (a ReLU pre-activation near 0, see ``kink_distance`` of the layer
    protocol) are drawn again, so finite differences never straddle one. Targets come from
    ``targets(rng, n, k, dtype)`` when given; by default integer labels (softmax), uniform
    values in [0, 1] (sigmoid) or N(0, 1) (squared error).

    Returns:
      ``(params, x [n, ...], y)``.
    """
    rng = np.random.default_rng(seed)
    for _ in range(10):
        params = draw_params(net, rng, dtype)
        x = rng.normal(size=(n, *net.input_shape))
        for _ in range(100):
            near = kink_distance(params, net, jnp.asarray(x, dtype)) <= margin  # [n]
            if not near.any():
                break
            x[near] = rng.normal(size=(int(near.sum()), *net.input_shape))
        else:
            continue  # these params keep some unit near its kink: draw new ones
        break
    else:
        raise RuntimeError(f"could not draw inputs {margin} away from every kink")
    x = jnp.asarray(x, dtype)
    k = net.output_shape[0]
    if targets is not None:
        y = targets(rng, n, k, dtype)
    elif net.loss == "softmax_cross_entropy":
        y = jnp.asarray(rng.integers(0, k, size=n))
    elif net.loss == "sigmoid_cross_entropy":
        y = jnp.asarray(rng.uniform(size=(n, k)), dtype)
    else:
        y = jnp.asarray(rng.normal(size=(n, k)), dtype)
    return params, x, y


def draw_params(net, rng: np.random.Generator, dtype) -> list:
    """Random params for any layer kinds: weights ~ N(0, 1/fan_in) (fan-in: the product of
    all but the last axis), everything else (biases) ~ N(0, 1/4), so no bias is zero."""
    params = []
    for layer, in_shape in zip(net.layers, net.layer_input_shapes):
        leaves = {}
        for name, shape in layer.param_shapes(in_shape).items():
            if name in layer.weight_names:
                leaves[name] = jnp.asarray(rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1])), dtype)
            else:
                leaves[name] = jnp.asarray(0.5 * rng.normal(size=shape), dtype)
        params.append(leaves)
    return params


def kink_distance(params, net, x) -> np.ndarray:
    """Per example, the distance of the forward pass from the nearest kink: [batch]."""
    _, residuals = _network.forward_pass(params, net, jnp.asarray(x))
    distance = np.full(jnp.shape(x)[0], np.inf)
    for layer, r in zip(net.layers, residuals):
        distance = np.minimum(distance, np.asarray(layer.kink_distance(r)))
    return distance


def check_notes(dtype=jnp.float64, seed: int = 0, batch: int = 16, kinks: str = "exclude",
                per_example: bool = False) -> tuple[str, bool]:
    """Check ``manual_grads`` of every network of the notes (:data:`jaxnet.presets.NOTE_NETWORKS`)
    with :func:`jaxnet.check_grads` on a random problem (params with nonzero biases, inputs
    drawn away from kinks); with ``per_example``, also :func:`jaxnet.gradcheck.check_per_example`.
    Return the printed report and whether every leaf agreed."""
    from .gradcheck import check_grads, check_per_example
    from .presets import NOTE_NETWORKS

    lines, failures = [], []
    for i, preset in enumerate(NOTE_NETWORKS):
        net = preset.net
        with jax.enable_x64(True):  # for a float64 working dtype; scoped to the check
            params, x, y = random_problem(net, seed=seed + i, n=batch, dtype=dtype)
            reports = [check_grads(lambda p, x, y: _network.loss(p, net, x, y),
                                   lambda p, x, y: _network.manual_grads(p, net, x, y),
                                   params, x, y, net=net, kinks=kinks, seed=seed)]
            if per_example:
                reports.append(check_per_example(params, net, x, y))
        lines += [f"== {preset.name}: {net}  ({preset.description})", *map(str, reports), ""]
        failures += [f"{preset.name}{r.path} ({r.witness})" for report in reports for r in report.failures()]
    lines.insert(0, f"manual_grads of the notes' networks, {jnp.dtype(dtype).name}, batch {batch}, seed {seed}\n")
    lines.append("every leaf agrees with every witness" if not failures else f"MISMATCH in {', '.join(sorted(set(failures)))}")
    return "\n".join(lines), not failures
