"""Verification of the notes' networks: random test problems and the ``jaxnet check`` report.

- :func:`random_problem` / :func:`draw_params`: params with nonzero biases and inputs away from
  every kink, drawn with NumPy;
- :func:`check_notes`: :func:`jaxnet.check_grads` on every network of the notes;
- :func:`reference_grads`: ``jax.grad`` where references run (:mod:`jaxnet.devices`).

The error measure and the finite differences live in :mod:`jaxnet.gradcheck`
(:func:`~jaxnet.gradcheck.compare`, :func:`~jaxnet.gradcheck.leaf_errors`,
:func:`~jaxnet.gradcheck.finite_difference_grads`), where to compute in
:mod:`jaxnet.devices`; both are re-exported here for existing callers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import network as _network
from .check_layers import find_wrong_layer
from .devices import device_name as device_name
from .devices import on_device as on_device
from .devices import reference_device as reference_device
from .devices import to_device as to_device
from .devices import working_device as working_device
from .gradcheck import LeafError as LeafError
from .gradcheck import check_grads, check_per_example
from .gradcheck import finite_difference_grads as finite_difference_grads
from .gradcheck import leaf_errors as leaf_errors


def reference_grads(loss_fn, params, *args, device="default", jit: bool = False):
    """``jax.grad(loss_fn)(params, *args)`` computed on :func:`reference_device` for the
    params' dtype (float64: the CPU device; see ``device``) at matmul precision "highest":
    the autodiff reference that tests and :func:`jaxnet.check_grads` compare hand-derived
    gradients with. ``jit``: compile it (one program per shape; eager by default)."""
    dtype = jnp.result_type(*jax.tree.leaves(params))
    grad = jax.jit(jax.grad(loss_fn)) if jit else jax.grad(loss_fn)
    return on_device(grad, params, *args, device=reference_device(dtype, device, params))


def random_problem(
    net,
    seed: int = 0,
    n: int = 8,
    dtype=jnp.float64,
    margin: float = 1e-3,
    targets=None,
    key=None,
    state=None,
    train: bool = True,
):
    """A random test problem for ``net``: params with nonzero biases, inputs and targets.

    Drawn with NumPy from ``seed`` (so new shapes cost no JAX compilation): see
    :func:`draw_params`; inputs ~ N(0, 1), or uniform integer token ids in ``[0, vocab)`` when
    the first layer takes them (:func:`jaxnet.network.token_vocab`). Examples whose forward pass comes within
    ``margin`` of a kink (a ReLU pre-activation near 0, see ``kink_gaps`` of the layer
    protocol) are drawn again, so finite differences never straddle one. Targets come from
    ``targets(rng, n, k, dtype)`` when given; by default integer labels (softmax), uniform
    values in [0, 1] (sigmoid) or N(0, 1) (squared error). ``key``, ``state``, ``train``: the
    mode the check will run the network in (as for :func:`jaxnet.loss`: Dropout's masks and
    BatchNorm's statistics move the kinks); ``key`` is needed in training when the network draws
    random numbers (:func:`jaxnet.network.needs_key`), ``state`` in evaluation when it has state.

    Returns:
      ``(params, x [n, ...], y)``.
    """
    rng = np.random.default_rng(seed)
    for _ in range(10):
        params = draw_params(net, rng, dtype)
        x = draw_inputs(net, rng, n)
        for _ in range(100):
            near = kink_distance(params, net, _as_inputs(net, x, dtype), key, state, train) <= margin  # [n]
            if not near.any():
                break
            x[near] = draw_inputs(net, rng, int(near.sum()))
        else:
            continue  # these params keep some unit near its kink: draw new ones
        break
    else:
        raise RuntimeError(f"could not draw inputs {margin} away from every kink")
    k = net.output_shape[0]
    if targets is not None:
        y = targets(rng, n, k, dtype)
    elif net.loss == "softmax_cross_entropy":
        y = jnp.asarray(rng.integers(0, k, size=n))
    elif net.loss == "sigmoid_cross_entropy":
        y = jnp.asarray(rng.uniform(size=(n, k)), dtype)
    else:
        y = jnp.asarray(rng.normal(size=(n, k)), dtype)
    return params, _as_inputs(net, x, dtype), y


def draw_inputs(net, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` inputs for ``net`` (NumPy, [n, *input_shape]): N(0, 1), or uniform integer token ids
    in ``[0, vocab)`` when its first layer takes them (:func:`jaxnet.network.token_vocab`)."""
    vocab = _network.token_vocab(net)
    if vocab is None:
        return rng.normal(size=(n, *net.input_shape))
    return rng.integers(0, vocab, size=(n, *net.input_shape))


def _as_inputs(net, x, dtype):
    """``x`` as JAX inputs of ``net``: in ``dtype``, or integers as they are (token ids)."""
    return jnp.asarray(x) if _network.token_vocab(net) is not None else jnp.asarray(x, dtype)


def draw_params(net, rng: np.random.Generator, dtype) -> list:
    """Random params for any layer kinds: weights ~ N(0, 1/fan_in) (fan-in: the product of
    all but the last axis), everything else (biases) ~ N(0, 1/4), so no bias is zero."""
    params = []
    for layer, in_shape in zip(net.layers, net.layer_input_shapes):
        leaves = {}
        for name, shape in layer.param_shapes(in_shape).items():
            if name in layer.weights(in_shape):
                leaves[name] = jnp.asarray(rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1])), dtype)
            else:
                leaves[name] = jnp.asarray(0.5 * rng.normal(size=shape), dtype)
        params.append(leaves)
    return params


def kink_distance(params, net, x, key=None, state=None, train=True) -> np.ndarray:
    """Per example, the distance of the forward pass in the mode ``key``, ``state``, ``train``
    (as for :func:`jaxnet.loss`) from the nearest kink (the smallest of every layer's
    ``kink_gaps``; ``inf`` where there is none): [batch]."""
    _, residuals, _ = _network.forward_pass(params, net, jnp.asarray(x), key=key, state=state, train=train)
    distance = np.full(jnp.shape(x)[0], np.inf)
    for layer, r in zip(net.layers, residuals):
        gaps = layer.kink_gaps(r)
        if gaps is not None:
            distance = np.minimum(distance, np.min(np.asarray(gaps), axis=1, initial=np.inf))
    return distance


def wrong_layer_section(params, net, x, y, kinks="exclude", seed=0, **mode) -> str:
    """The section of a ``jaxnet check`` report under a mismatch: :func:`jaxnet.find_wrong_layer`'s
    table, each layer's ``bwd`` given autodiff's upstream ``dy`` and compared with ``jax.vjp``;
    ``mode``: ``state``, ``key``, ``train`` as for :func:`jaxnet.loss`."""
    report = find_wrong_layer(params, net, x, y, kinks=kinks, seed=seed, **mode)
    return "each layer's backward, given autodiff's upstream dy, against jax.vjp of its forward:\n" + str(report)


def check_notes(
    dtype=jnp.float64, seed: int = 0, batch: int = 16, kinks: str = "exclude", per_example: bool = False
) -> tuple[str, bool]:
    """Check ``manual_grads`` of every network of the notes (:data:`jaxnet.presets.NOTE_NETWORKS`)
    with :func:`jaxnet.check_grads` on a random problem (params with nonzero biases, inputs
    drawn away from kinks); with ``per_example``, also :func:`jaxnet.gradcheck.check_per_example`.
    Return the printed report and whether every leaf agreed."""
    from .presets import NOTE_NETWORKS

    lines, failures = [], []
    for i, preset in enumerate(NOTE_NETWORKS):
        net = preset.net
        with jax.enable_x64(True):  # for a float64 working dtype; scoped to the check
            params, x, y = random_problem(net, seed=seed + i, n=batch, dtype=dtype)
            reports = [
                check_grads(
                    lambda p, x, y: _network.loss(p, net, x, y),  # noqa: B023 (called in this iteration)
                    lambda p, x, y: _network.manual_grads(p, net, x, y),  # noqa: B023 (called in this iteration)
                    params,
                    x,
                    y,
                    net=net,
                    kinks=kinks,
                    seed=seed,
                )
            ]
            if per_example:
                reports.append(check_per_example(params, net, x, y))
            culprit = [] if reports[0].ok else [wrong_layer_section(params, net, x, y, kinks=kinks, seed=seed)]
        lines += [f"== {preset.name}: {net}  ({preset.description})", *map(str, reports), *culprit, ""]
        failures += [f"{preset.name}{r.path} ({r.witness})" for report in reports for r in report.failures()]
    lines.insert(0, f"manual_grads of the notes' networks, {jnp.dtype(dtype).name}, batch {batch}, seed {seed}\n")
    lines.append(
        "every leaf agrees with every witness" if not failures else f"MISMATCH in {', '.join(sorted(set(failures)))}"
    )
    return "\n".join(lines), not failures
