"""Per-example gradients and their norms (what DP-SGD clips) against vmap(jax.grad)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import gradcheck, verify
from jaxnet.layers import Conv2D, Dense
from jaxnet.per_example import per_example_grad_norms, per_example_grads

from .helpers import lean, on_reference

NETS = {
    "mlp-relu-mean-l2": jaxnet.mlp([4, 7, 5, 3], "relu", l2=0.1, l2_bias=True),
    "mlp-tanh-sum-sigmoid": jaxnet.mlp([3, 6, 2], "tanh", "sigmoid_cross_entropy", "sum"),
    # conv 1 (T = 64, P = 18, c_out = 3) forms the per-example kernels;
    # conv 2 (T = 4, P = 18, c_out = 16) uses Gram matrices
    "cnn-both-conv-paths": jaxnet.sequential(
        (8, 8, 2),
        [
            Conv2D(3, 3, padding="SAME", activation="relu"),
            jaxnet.MaxPool2D(2),
            Conv2D(16, (2, 3), strides=2, padding=((1, 0), (0, 2)), activation="tanh"),
            jaxnet.Flatten(),
            Dense(3),
        ],
        l2=0.01,
    ),
    "cnn-avgpool-mse": jaxnet.sequential(
        (6, 6, 1),
        [Conv2D(5, 3, activation="elu"), jaxnet.AvgPool2D(2), jaxnet.Flatten(), Dense(2)],
        loss="squared_error",
    ),
}


@pytest.mark.parametrize(
    "name,dtype",
    lean(  # the main suite: one dtype per network, alternating
        [(name, dtype) for name in NETS for dtype in (jnp.float32, jnp.float64)], lambda i, c: i % 2 == (i // 2) % 2
    ),
    ids=[f"{name}-{dtype}" for name in NETS for dtype in ("float32", "float64")],
)
def test_per_example_grads_norms_and_sum(name, dtype):
    """check_per_example: g_i == vmap(jax.grad), ||g_i|| from the closed forms, r Σ g_i + L2 == jax.grad."""
    net = NETS[name]
    params, x, y = verify.random_problem(net, seed=0, n=5, dtype=dtype)
    report = gradcheck.check_per_example(params, net, x, y)
    assert report.ok, str(report)
    assert {r.witness for r in report.leaves} == {"per-example", "norms", "r Σ g_i + L2"}


@pytest.mark.slow  # the main run: test_per_example_grads_norms_and_sum[cnn-both-conv-paths-float32]
def test_both_conv_norm_paths_run(monkeypatch):
    """The network above takes the per-example-kernel path in its first conv and the Gram path in its second."""
    net = NETS["cnn-both-conv-paths"]
    shapes = net.layer_input_shapes
    assert [net.layers[i]._gram_norms(shapes[i]) for i in (0, 2)] == [False, True]
    calls = []
    patches = jax.lax.conv_general_dilated_patches
    monkeypatch.setattr(
        jax.lax, "conv_general_dilated_patches", lambda *a, **k: calls.append(a[0].shape) or patches(*a, **k)
    )
    params, x, y = verify.random_problem(net, seed=4, n=3)
    per_example_grad_norms(params, net, x, y)  # eager: the patch extraction runs once, for the second conv
    assert calls == [(3, 4, 4, 3)]


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True], ids=["eager", "jit"])
def test_norms_eager_and_jit_agree_with_materialised_grads(jit):
    net = NETS["cnn-avgpool-mse"]
    params, x, y = verify.random_problem(net, seed=1, n=4)
    f = jax.jit(per_example_grad_norms) if jit else per_example_grad_norms
    grads = per_example_grads(params, net, x, y)
    materialised = jnp.sqrt(sum(jnp.sum(g.reshape(4, -1) ** 2, axis=1) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(f(params, net, x, y), materialised, rtol=1e-12)
    assert [g.shape for g in jax.tree.leaves(grads)] == [(4, *p.shape) for p in jax.tree.leaves(params)]


def test_a_wrong_norm_formula_goes_red(monkeypatch):
    """Dropping the bias term ||δ_i||² of Dense.grad_sq_norms is reported in the norms row."""
    net = NETS["mlp-relu-mean-l2"]
    params, x, y = verify.random_problem(net, seed=2, n=5)

    def no_bias(self, params, residuals, da):
        x, z, a = residuals
        dz = da * jaxnet.ACTIVATIONS[self.activation].deriv(z, a)
        return jnp.sum(x * x, axis=1) * jnp.sum(dz * dz, axis=1)

    monkeypatch.setattr(Dense, "grad_sq_norms", no_bias)
    for name in (
        "per_example_grads",
        "per_example_grad_norms",
    ):  # new functions, so check_per_example's jit traces afresh
        monkeypatch.setattr(jaxnet.per_example, name, lambda *args, f=getattr(jaxnet.per_example, name): f(*args))  # noqa: B008 (binds the original now)
    report = gradcheck.check_per_example(params, net, x, y)
    assert [r.witness for r in report.failures()] == ["norms"]


def test_a_wrong_per_example_gradient_goes_red():
    """Per-example gradients that kept the batch's 1/N: every leaf of the per-example row fails."""
    net = NETS["mlp-tanh-sum-sigmoid"]
    params, x, y = verify.random_problem(net, seed=3, n=5)
    wrong = jax.tree.map(lambda g: g / 5, per_example_grads(params, net, x, y))
    reference = on_reference(
        jax.vmap(jax.grad(jaxnet.loss), (None, None, 0, 0)), params, net, x, y
    )  # sum, no L2: per example
    assert not any(r.ok for r in gradcheck.compare("per-example", wrong, reference, 1e-10))
    assert all(r.ok for r in gradcheck.compare("per-example", per_example_grads(params, net, x, y), reference, 1e-10))
