"""The mutation suite: broken derivations written from scratch must each be reported failing,
with exactly the leaves the mistake makes wrong, in float32 and float64 (the issue's list)."""

import functools

import jax.numpy as jnp
import pytest

import jaxnet

from . import mutants
from .helpers import lean

DTYPES = [jnp.float32, jnp.float64]
CASES = [("mlp", m) for m in mutants.MLP_MISTAKES] + [("cnn", m) for m in mutants.CNN_MISTAKES]
NETS = {
    "mlp": (mutants.mlp_loss, mutants.mlp_grads, mutants.mlp_problem, mutants.MLP_MISTAKES),
    "cnn": (mutants.cnn_loss, mutants.cnn_grads, mutants.cnn_problem, mutants.CNN_MISTAKES),
}


def _named(leaves):
    return {r.path.strip("[']") for r in leaves}


@pytest.mark.parametrize(
    "net,dtype",
    lean(  # the main suite: the MLP in float32; -m slow the rest
        [("mlp", jnp.float32), ("mlp", jnp.float64), ("cnn", jnp.float32), ("cnn", jnp.float64)], lambda i, c: i == 0
    ),
    ids=["mlp-float32", "mlp-float64", "cnn-float32", "cnn-float64"],
)
def test_the_right_derivation_passes(net, dtype):
    loss, grads, problem, _ = NETS[net]
    report = jaxnet.assert_grads_match(loss, grads, *problem(dtype))
    assert len(report.leaves) == 5 * len(problem(dtype)[0])


@pytest.mark.parametrize(
    "net,mistake,dtype",
    lean(  # the main suite: each mistake in one dtype, alternating
        [(n, m, d) for n, m in CASES for d in DTYPES],  # the conv kernel (float32: 7 s) under -m slow only
        lambda i, c: i % 2 == (i // 2) % 2 and c[1] != "conv kernel not flipped",
    ),
    ids=[f"{n}-{m.replace(' ', '-')}-{d}" for n, m in CASES for d in ("float32", "float64")],
)
def test_each_mistake_is_caught_in_the_right_leaves(net, mistake, dtype):
    loss, grads, problem, mistakes = NETS[net]
    report = jaxnet.check_grads(loss, functools.partial(grads, mistake=mistake), *problem(dtype), hvp_directions=0)
    assert not report.ok
    by_witness = {w: _named(r for r in report.failures() if r.witness == w) for w in ("jax.grad", "finite diff")}
    assert by_witness == {"jax.grad": mistakes[mistake], "finite diff": mistakes[mistake]}, str(report)
    assert not any(
        r.witness in ("ref vs finite diff", "jvp vs jax.grad") for r in report.failures()
    )  # the reference is fine
