"""manual_grads equals jax.grad(loss) and finite differences across the whole grid."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet.activations import ACTIVATIONS

from .helpers import (
    TARGETS,
    assert_grads_close,
    assert_matches_fd,
    autodiff_grads,
    fd_grads,
    grid_target,
    lean,
    make_net,
    on_reference,
    random_problem,
)

# depth 0 has no hidden activation: one case, not one per activation
ARCHS = [(0, "identity")] + [(depth, act) for depth in (1, 2, 3) for act in ACTIVATIONS]
L2S = [(0.0, False), (0.0, True), (0.1, False), (0.1, True)]
# the loss settings, loss-major: 3 losses × 2 reductions × 4 L2 settings = 24
SETTINGS = [
    (loss, reduction, l2, l2_bias)
    for loss, reduction, (l2, l2_bias) in itertools.product(jaxnet.LOSSES, ["mean", "sum"], L2S)
]
ACT_INDEX = {name: i for i, name in enumerate(ACTIVATIONS)}


def _grid_in_main(depth, activation, j):
    """The main suite's covering subset of the grid (each case compiles its own eager kernels, about
    0.7 s): depth 0 with all 24 settings; every (depth, activation) once, activation i at depth d
    with loss (i + d) mod 3, reduction (i // 3 + d) mod 2 and L2 setting (i + d) mod 4 — so every
    depth sees every loss, reduction and L2 setting, and every activation every loss over the
    depths. ``-m slow`` runs the rest of the full product."""
    if depth == 0:
        return True
    i = ACT_INDEX[activation]
    return j == ((i + depth) % 3) * 8 + ((i // 3 + depth) % 2) * 4 + (i + depth) % 4


GRID = [
    (depth, activation, *setting, _grid_in_main(depth, activation, j))
    for depth, activation in ARCHS
    for j, setting in enumerate(SETTINGS)
]


@pytest.mark.parametrize(
    "depth,activation,loss,reduction,l2,l2_bias", lean([case[:-1] for case in GRID], lambda i, case: GRID[i][-1])
)
def test_float64_grid(depth, activation, loss, reduction, l2, l2_bias):
    target = grid_target(loss, depth, reduction)
    net = make_net(target, depth, activation, reduction, l2, l2_bias)
    params, x, y = random_problem(net, target, seed=depth)
    value, grads = jaxnet.value_and_manual_grads(params, net, x, y)
    np.testing.assert_allclose(value, jaxnet.loss(params, net, x, y), rtol=1e-13)
    assert_grads_close(grads, autodiff_grads(params, net, x, y), 1e-10, "jax.grad")
    assert_matches_fd(grads, fd_grads(params, net, x, y), value)


@pytest.mark.slow  # float32 in the main suite: test_jit_matches_eager, test_properties, test_per_example
@pytest.mark.parametrize("activation,target", list(itertools.product(ACTIVATIONS, TARGETS)))
def test_float32(activation, target):
    net = make_net(target, 2, activation, "mean", 0.01, False)
    params, x, y = random_problem(net, target, seed=7, n=8, dtype=jnp.float32)
    grads = jaxnet.manual_grads(params, net, x, y)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(grads))
    assert_grads_close(grads, autodiff_grads(params, net, x, y), 1e-4, "jax.grad (float32)")  # check_grads' float32 bar


CASES = [
    ("softmax_labels", 2, "relu", jnp.float64),
    ("softmax_probs", 1, "gelu_exact", jnp.float64),
    ("sigmoid_multilabel", 3, "tanh", jnp.float64),
    ("squared_error", 2, "elu", jnp.float32),
    ("sigmoid_binary", 1, "softplus", jnp.float32),
]


@pytest.mark.parametrize("target,depth,activation,dtype", lean(CASES, lambda i, case: i in (0, 3)))
def test_jit_matches_eager(target, depth, activation, dtype):
    net = make_net(target, depth, activation, "mean", 0.05, True)
    params, x, y = random_problem(net, target, seed=3, dtype=dtype)
    eager = jaxnet.value_and_manual_grads(params, net, x, y)
    jitted = jax.jit(jaxnet.value_and_manual_grads)(params, net, x, y)
    rtol = 1e-12 if dtype == jnp.float64 else 1e-4
    np.testing.assert_allclose(jitted[0], eager[0], rtol=rtol)
    assert_grads_close(jitted[1], eager[1], rtol, "eager manual_grads")
    assert_grads_close(
        jax.jit(jaxnet.manual_grads)(params, net, x, y),
        autodiff_grads(params, net, x, y, jit=True),
        1e-10 if dtype == jnp.float64 else 1e-4,
        "jit(jax.grad)",
    )


@pytest.mark.slow  # the main run checks per-example gradients against vmap(jax.grad) in test_per_example
@pytest.mark.parametrize("target", list(TARGETS))
def test_per_example_vmap(target):
    net = make_net(target, 2, "tanh", "mean", 0.1, True)
    params, x, y = random_problem(net, target, seed=11, n=4)
    in_axes = (None, None, 0, 0)
    mine = jax.vmap(jaxnet.manual_grads, in_axes)(params, net, x, y)
    ref = on_reference(jax.vmap(jax.grad(jaxnet.loss), in_axes), params, net, x, y)
    assert jax.tree.leaves(mine)[0].shape[0] == 4
    assert_grads_close(mine, ref, 1e-10, "vmap(jax.grad)")
    # and with reduction="mean" and no L2, the batch gradient is the mean of per-example ones
    plain = make_net(target, 2, "tanh")
    per_example = jax.vmap(jaxnet.manual_grads, in_axes)(params, plain, x, y)
    batch = jaxnet.manual_grads(params, plain, x, y)
    assert_grads_close(jax.tree.map(lambda g: g.mean(axis=0), per_example), batch, 1e-12, "batch gradient")
