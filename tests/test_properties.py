"""Property-based: random architectures, batch sizes, dtypes and inputs (hypothesis)."""

import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxnet

from .helpers import TARGETS, assert_grads_close, assert_matches_fd, autodiff_grads, fd_grads, random_problem


@jax.jit
def _manual_fd(params, net, x, y):
    """One compiled program per drawn network (cheaper than eager for one-off shapes)."""
    fd = fd_grads(params, net, x, y) if params[0]["W"].dtype == jnp.float64 else None
    return jaxnet.value_and_manual_grads(params, net, x, y), fd


def _manual_autodiff_fd(params, net, x, y):
    """Yours and finite differences (one program), jax.grad where the reference runs (float64:
    the CPU device, exact on every backend)."""
    mine, fd = _manual_fd(params, net, x, y)
    return mine, autodiff_grads(params, net, x, y, jit=True), fd


# Small shape alphabets keep the number of distinct compiled kernels (and so the run time)
# bounded; everything else (depth, per-layer activations, loss, target form, reduction, L2,
# dtype, values) is drawn freely.
problems = st.fixed_dictionaries(
    {
        "d": st.sampled_from([1, 2, 3]),
        "widths": st.lists(st.sampled_from([1, 2, 4]), min_size=0, max_size=3),
        "activation": st.data(),
        "target": st.sampled_from(list(TARGETS)),
        "reduction": st.sampled_from(["mean", "sum"]),
        "l2": st.sampled_from([0.0, 0.05]),
        "l2_bias": st.booleans(),
        "n": st.sampled_from([1, 2, 5]),
        "dtype": st.sampled_from([jnp.float32, jnp.float64]),
        "seed": st.integers(0, 2**16),
    }
)


def _draw_and_check(p):
    acts = p["activation"].draw(
        st.lists(st.sampled_from(list(jaxnet.ACTIVATIONS)), min_size=len(p["widths"]), max_size=len(p["widths"]))
    )
    check_drawn_network(p, acts)


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems)
def test_random_networks(p):
    """4 drawn networks (each compiles its own programs); -m slow draws 40."""
    _draw_and_check(p)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems)
def test_more_random_networks(p):
    _draw_and_check(p)


def check_drawn_network(p, acts):
    """The property: manual == jax.grad (and == finite differences in float64)."""
    loss, k = TARGETS[p["target"]]
    net = jaxnet.mlp([p["d"], *p["widths"], k], acts, loss, p["reduction"], p["l2"], p["l2_bias"])
    params, x, y = random_problem(net, p["target"], seed=p["seed"], n=p["n"], dtype=p["dtype"])
    (value, grads), autodiff, fd = _manual_autodiff_fd(params, net, x, y)
    assert value.dtype == p["dtype"] and all(g.dtype == p["dtype"] for g in jax.tree.leaves(grads))
    if p["dtype"] == jnp.float64:
        assert_grads_close(grads, autodiff, 1e-10, "jax.grad")
        assert_matches_fd(grads, fd, value)
    else:
        assert_grads_close(grads, autodiff, 1e-4, "jax.grad (float32)")  # check_grads' float32 bar
