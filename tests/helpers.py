"""Shared test helpers: random problems away from kinks, and gradient comparisons that can fail."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import verify
from jaxnet.gradcheck import fd_round_off
from jaxnet.verify import finite_difference_grads, leaf_errors


def lean(cases, in_main):
    """``cases`` for ``pytest.mark.parametrize``, the main suite running those with
    ``in_main(i, case)`` and ``-m slow`` the others: the two runs together cover the whole grid
    once, the main one a covering subset that keeps it quick (each case compiles its own programs).
    A case is a plain tuple of the parameters, or one value (a NamedTuple is one value)."""
    return [
        case if in_main(i, case) else pytest.param(*(case if type(case) is tuple else (case,)), marks=pytest.mark.slow)
        for i, case in enumerate(cases)
    ]


# Target forms: name -> (loss, number of outputs K); draw_targets draws each form.
TARGETS = {
    "softmax_labels": ("softmax_cross_entropy", 3),
    "softmax_probs": ("softmax_cross_entropy", 3),
    "sigmoid_binary": ("sigmoid_cross_entropy", 1),
    "sigmoid_multilabel": ("sigmoid_cross_entropy", 3),
    "squared_error": ("squared_error", 2),
}


def grid_target(loss, depth, reduction):
    """The grid's target form for ``loss``: the two forms of the classification losses
    (labels / probabilities; binary / multi-label) alternate with depth and reduction, so
    every depth and every reduction sees both."""
    forms = {
        "softmax_cross_entropy": ("softmax_labels", "softmax_probs"),
        "sigmoid_cross_entropy": ("sigmoid_binary", "sigmoid_multilabel"),
        "squared_error": ("squared_error", "squared_error"),
    }
    return forms[loss][(depth + (reduction == "sum")) % 2]


def make_net(target, depth, activation, reduction="mean", l2=0.0, l2_bias=False, d=3, widths=(4, 4, 4)):
    loss, k = TARGETS[target]
    return jaxnet.mlp([d, *widths[:depth], k], activation, loss, reduction, l2, l2_bias)


def draw_targets(target, rng, n, k, dtype):
    """Targets of the given form, drawn with NumPy."""
    if target == "softmax_labels":
        return jnp.asarray(rng.integers(0, k, size=n))
    if target == "softmax_probs":
        e = np.exp(rng.normal(size=(n, k)))
        return jnp.asarray(e / e.sum(axis=1, keepdims=True), dtype)
    if target == "sigmoid_binary":
        return jnp.asarray(rng.integers(0, 2, size=n), dtype)  # [n] for K = 1
    if target == "sigmoid_multilabel":
        return jnp.asarray(rng.uniform(size=(n, k)), dtype)  # soft targets in [0, 1]
    return jnp.asarray(rng.normal(size=(n, k)), dtype)


def random_problem(net, target, seed=0, n=5, dtype=jnp.float64, margin=1e-3):
    """Params with random nonzero biases, inputs, and targets of the given form; every hidden
    pre-activation at least ``margin`` away from 0 (see :func:`jaxnet.verify.random_problem`)."""
    return verify.random_problem(net, seed, n, dtype, margin, functools.partial(draw_targets, target))


def assert_grads_close(grads, reference, rtol, what="reference", atol=0.0):
    """Every element's max(|g − r| − atol, 0) / max(|r|, 1e-3 · R) ≤ rtol (jaxnet.gradcheck.compare's
    measure), else an AssertionError naming the worst leaf."""
    errors = leaf_errors(grads, reference, atol)
    bad = [e for e in errors if not e.max_rel <= rtol]
    if bad:
        worst = max(bad, key=lambda e: e.max_rel)
        raise AssertionError(
            f"gradient mismatch vs {what}: leaf {worst.path} max rel {worst.max_rel:.3e} > {rtol:.0e} "
            f"(max abs {worst.max_abs:.3e}); all: " + ", ".join(f"{e.path}={e.max_rel:.1e}" for e in errors)
        )
    return errors


def autodiff_grads(params, net, x, y, jit=False):
    """The autodiff reference ``jax.grad(jaxnet.loss)``: in float64 on the CPU device, exact on
    every backend (a GPU's float64 ``jax.grad`` of a strided conv was 2e-10 off), in float32
    on the working device; matmul precision "highest" (see :func:`jaxnet.verify.reference_grads`)."""
    return verify.reference_grads(jaxnet.loss, params, net, x, y, jit=jit)


def on_reference(fn, params, *args):
    """``fn(params, *args)`` where :func:`autodiff_grads` computes its reference (float64: the CPU
    device), e.g. ``on_reference(jax.vmap(jax.grad(jaxnet.loss), in_axes), params, net, x, y)``."""
    dtype = jnp.result_type(*jax.tree.leaves(params))
    return verify.on_device(fn, params, *args, device=verify.reference_device(dtype, like=params))


def fresh_jit(jitted):
    """A new jit of the function under ``jitted``: jit caches traces by function (and static
    network), so a new function object traces afresh, through deliberately broken code, and its
    broken traces die with it; no other cache is touched. (Eager code caches no trace; ``fit``
    and the CLI build new closures on every call.)"""
    inner = jitted.__wrapped__
    return jax.jit(lambda *args: inner(*args))


def fd_grads(params, net, x, y, eps=1e-6):
    return finite_difference_grads(lambda p: jaxnet.loss(p, net, x, y), params, eps)


def assert_matches_fd(grads, fd, value, what="finite differences", rtol=1e-6):
    """``grads`` against float64 finite differences ``fd`` of a loss of value ``value``, as
    ``check_grads`` compares them: ``rtol`` 1e-6, differences below the round-off of the
    differences themselves (``gradcheck.fd_round_off``) not counted."""
    return assert_grads_close(grads, fd, rtol, what, atol=fd_round_off(value))


@dataclasses.dataclass(frozen=True)
class InputProbe(jaxnet.Layer):
    """A test-only layer on jaxnet's layer protocol: ``a = x ∘ W + b``, with ``W`` and ``b`` of the
    per-example input's shape (``x``: [batch, *in_shape]).

    ``∂L/∂b = Σ_batch da`` and ``∂L/∂W = Σ_batch x ∘ da``, ``∂L/∂x = da ∘ W``: placed first in a
    network, it makes the input gradient ``dx`` of the next layer visible element by element in
    its own parameter gradients (a network's first layer has its ``dx`` thrown away, so a wrong
    input gradient of that layer would go unseen). Elementwise, so it costs little to compile."""

    weight_names = ("W",)  # W has the input's shape, one axis for flat inputs

    def param_shapes(self, in_shape):
        return {"W": tuple(in_shape), "b": tuple(in_shape)}

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def init(self, key, in_shape, dtype):
        return {"W": jnp.ones(in_shape, dtype), "b": jnp.zeros(in_shape, dtype)}

    def fwd(self, params, x):
        return x * params["W"][None] + params["b"][None], {"x": x}  # [batch, *in_shape]

    def bwd(self, params, residuals, da):
        x = residuals["x"]
        return da * params["W"][None], {"W": jnp.sum(x * da, axis=0), "b": jnp.sum(da, axis=0)}

    def grad_sq_norms(self, params, residuals, da):
        """Per example ``||x_i ∘ da_i||² + ||da_i||²``: [batch]."""
        x = residuals["x"]
        axes = tuple(range(1, x.ndim))
        return jnp.sum((x * da) ** 2, axis=axes) + jnp.sum(da**2, axis=axes)


def check_network_grads(params, net, x, y, **options):
    """``jaxnet.check_grads`` of ``net``'s hand-derived ``manual_grads`` against its ``loss``
    (``net`` given, so examples at a kink are handled); ``options`` as for ``check_grads``."""
    return jaxnet.check_grads(
        lambda p, x, y: jaxnet.loss(p, net, x, y),
        lambda p, x, y: jaxnet.manual_grads(p, net, x, y),
        params,
        x,
        y,
        net=net,
        **options,
    )
