"""The public API: descriptions, init, forward/predict, losses as the notes define them."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet

from .helpers import assert_grads_close, autodiff_grads, lean, make_net, random_problem


def test_network_is_frozen_hashable_and_static():
    a = jaxnet.mlp([3, 4, 2], "tanh", l2=0.1)
    b = jaxnet.mlp((3, 4, 2), ["tanh"], l2=0.1)
    assert a == b and hash(a) == hash(b)
    assert a != jaxnet.mlp([3, 4, 2], "relu", l2=0.1)
    assert jax.tree.leaves(a) == []  # a pytree with no array leaves
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.l2 = 1.0
    assert a.sizes == (3, 4, 2) and a.output_shape == (2,)
    assert "3-4-2 tanh" in str(a)


def test_jit_and_grad_need_no_static_arguments():
    net = make_net("softmax_labels", 1, "tanh")
    params, x, y = random_problem(net, "softmax_labels")
    np.testing.assert_allclose(jax.jit(jaxnet.loss)(params, net, x, y), jaxnet.loss(params, net, x, y), rtol=1e-12)
    grads = jax.grad(jaxnet.loss)(params, net, x, y)  # differentiates params only
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_jit_traces_once_per_network():
    net = make_net("softmax_labels", 1, "tanh")
    params, x, y = random_problem(net, "softmax_labels")

    @jax.jit
    @chex.assert_max_traces(n=2)
    def step(params, net, x, y):
        return jaxnet.value_and_manual_grads(params, net, x, y)

    for _ in range(3):
        step(params, net, x, y)
    step(params, make_net("softmax_labels", 1, "tanh"), x, y)  # an equal description: cache hit
    step(params, make_net("softmax_labels", 1, "tanh", l2=0.5), x, y)  # a new one: second trace
    with pytest.raises(AssertionError, match=r"Function 'step' is traced > 2 times"):
        step(params, make_net("softmax_labels", 1, "tanh", l2=0.25), x, y)  # would be a third


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_init_params_structure_and_determinism(dtype):
    net = jaxnet.mlp([5, 7, 6, 3], "relu")
    params = jaxnet.init_params(jax.random.key(0), net, dtype)
    assert isinstance(params, list) and len(params) == 3
    assert [tuple(p["W"].shape) for p in params] == [(5, 7), (7, 6), (6, 3)]
    assert [tuple(p["b"].shape) for p in params] == [(7,), (6,), (3,)]
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
    assert all(not np.any(p["b"]) for p in params)
    again = jaxnet.init_params(jax.random.key(0), net, dtype)
    chex.assert_trees_all_equal(params, again)
    other = jaxnet.init_params(jax.random.key(1), net, dtype)
    assert not np.allclose(params[0]["W"], other[0]["W"])
    legacy = jaxnet.init_params(jax.random.PRNGKey(0), net, dtype)  # raw uint32 keys work too
    chex.assert_trees_all_equal_shapes(params, legacy)


@pytest.mark.parametrize(
    "activation,expected_var",
    [
        ("relu", lambda i, o: 2 / i),
        ("gelu", lambda i, o: 2 / i),
        ("tanh", lambda i, o: 2 / (i + o)),
        ("sigmoid", lambda i, o: 2 / (i + o)),
    ],
)
def test_init_scale_he_or_glorot(activation, expected_var):
    fan_in, fan_out = 400, 300
    params = jaxnet.init_params(jax.random.key(0), jaxnet.mlp([fan_in, fan_out, 2], activation), jnp.float64)
    var = float(np.var(params[0]["W"]))
    assert var == pytest.approx(expected_var(fan_in, fan_out), rel=0.05)
    # the output layer is linear: Glorot
    assert float(np.var(params[1]["W"])) == pytest.approx(2 / (fan_out + 2), rel=0.1)


def test_forward_predict_shapes_and_links():
    for target, link in [
        ("softmax_labels", lambda f: np.exp(f) / np.exp(f).sum(-1, keepdims=True)),
        ("sigmoid_multilabel", lambda f: 1 / (1 + np.exp(-f))),
        ("squared_error", lambda f: f),
    ]:
        net = make_net(target, 2, "tanh")
        params, x, _ = random_problem(net, target, n=6)
        out = jaxnet.forward(params, net, x)
        assert out.shape == (6, net.output_shape[0])
        assert jaxnet.forward(params, net, x[0]).shape == net.output_shape  # one example
        np.testing.assert_allclose(jaxnet.forward(params, net, x[0]), out[0], rtol=1e-12)
        np.testing.assert_allclose(jaxnet.predict(params, net, x), link(np.asarray(out)), rtol=1e-12)


def test_reductions_and_l2_as_defined():
    net_mean = jaxnet.mlp([3, 4, 2], "tanh", "squared_error", "mean")
    net_sum = jaxnet.mlp([3, 4, 2], "tanh", "squared_error", "sum")
    params, x, y = random_problem(net_mean, "squared_error", n=6)
    f = jaxnet.forward(params, net_mean, x)
    rss = float(np.sum((np.asarray(y) - np.asarray(f)) ** 2))  # 001: Σ_i Σ_k (y_ik − f_k(x_i))²
    assert float(jaxnet.loss(params, net_sum, x, y)) == pytest.approx(rss, rel=1e-13)
    assert float(jaxnet.loss(params, net_mean, x, y)) == pytest.approx(rss / 6, rel=1e-13)  # 003's J
    weights = sum(float(np.sum(np.asarray(p["W"]) ** 2)) for p in params)
    biases = sum(float(np.sum(np.asarray(p["b"]) ** 2)) for p in params)
    l2_w = jaxnet.mlp([3, 4, 2], "tanh", "squared_error", "mean", l2=0.3)
    l2_wb = jaxnet.mlp([3, 4, 2], "tanh", "squared_error", "mean", l2=0.3, l2_bias=True)
    assert float(jaxnet.loss(params, l2_w, x, y)) == pytest.approx(rss / 6 + 0.15 * weights, rel=1e-13)
    assert float(jaxnet.loss(params, l2_wb, x, y)) == pytest.approx(rss / 6 + 0.15 * (weights + biases), rel=1e-13)


def test_target_forms_agree():
    """Integer labels, one-hot rows; K = 1 targets as [N] or [N, 1]."""
    net = make_net("softmax_labels", 1, "tanh")
    params, x, y = random_problem(net, "softmax_labels")
    onehot = jax.nn.one_hot(y, 3, dtype=jnp.float64)
    np.testing.assert_allclose(jaxnet.loss(params, net, x, onehot), jaxnet.loss(params, net, x, y), rtol=1e-13)
    assert_grads_close(jaxnet.manual_grads(params, net, x, onehot), jaxnet.manual_grads(params, net, x, y), 1e-13)
    net = make_net("sigmoid_binary", 1, "tanh")
    params, x, y = random_problem(net, "sigmoid_binary")
    np.testing.assert_allclose(jaxnet.loss(params, net, x, y[:, None]), jaxnet.loss(params, net, x, y), rtol=1e-13)


def test_fold_biases_roundtrip():
    net = jaxnet.mlp([3, 4, 2])
    params, _, _ = random_problem(net, "softmax_labels")
    folded = jaxnet.fold_biases(params)
    assert [m.shape for m in folded] == [(4, 4), (5, 2)]
    chex.assert_trees_all_equal(jaxnet.unfold_biases(folded), params)


def _note_000(folded, x, labels, alpha):
    """Note 000 written directly in NumPy, biases folded into the weights with 'ones':
    h = ReLU([x, 1] w1), f = [h, 1] w2, L = L_d / N + α/2 Σ w²  (every w, bias rows included),
    df = p − 1(y = k) (per sample), dw2 = [h, 1]ᵀ df + α w2, dh = df w2ᵀ (ones column dropped)
    ∘ Θ(h), dw1 = [x, 1]ᵀ dh + α w1, with the data terms divided by N."""
    w1, w2 = (np.asarray(m) for m in folded)
    n = x.shape[0]
    x1 = np.hstack([x, np.ones((n, 1))])  # [N, D + 1]
    pre = x1 @ w1  # [N, H]
    h = np.maximum(pre, 0.0)
    h1 = np.hstack([h, np.ones((n, 1))])  # [N, H + 1]
    f = h1 @ w2  # [N, K]
    f = f - f.max(axis=1, keepdims=True)
    p = np.exp(f) / np.exp(f).sum(axis=1, keepdims=True)
    data = -np.log(p[np.arange(n), labels]).sum()
    loss = data / n + alpha / 2 * (np.sum(w1**2) + np.sum(w2**2))
    df = p.copy()
    df[np.arange(n), labels] -= 1.0
    df /= n
    dw2 = h1.T @ df + alpha * w2
    dh = (df @ w2.T)[:, :-1] * (pre > 0)
    dw1 = x1.T @ dh + alpha * w1
    return loss, [dw1, dw2]


def test_note_000_folded_formulation_matches():
    alpha = 0.01
    net = jaxnet.mlp([2, 6, 3], "relu", l2=alpha, l2_bias=True)
    params, x, y = random_problem(net, "softmax_labels", n=7)
    value, grads = jaxnet.value_and_manual_grads(params, net, x, y)
    ref_value, ref_grads = _note_000(jaxnet.fold_biases(params), np.asarray(x), np.asarray(y), alpha)
    assert float(value) == pytest.approx(ref_value, rel=1e-13)
    assert_grads_close(jaxnet.fold_biases(grads), ref_grads, 1e-12, "note 000 folded")
    # the autodiff reference agrees as well, so all three formulations coincide
    assert_grads_close(jaxnet.fold_biases(autodiff_grads(params, net, x, y)), ref_grads, 1e-12, "note 000 folded")


def test_batch_of_one():
    net = make_net("softmax_labels", 2, "gelu", l2=0.1)
    params, x, y = random_problem(net, "softmax_labels", n=1)
    assert_grads_close(jaxnet.manual_grads(params, net, x, y), autodiff_grads(params, net, x, y), 1e-10)
    # one example without a batch axis is the same problem
    assert_grads_close(jaxnet.manual_grads(params, net, x[0], y[0]), jaxnet.manual_grads(params, net, x, y), 1e-14)


@pytest.mark.parametrize("activation,slope_at_zero", [("relu", 0.0), ("leaky_relu", 1.0)])
def test_kink_convention_at_exact_zero(activation, slope_at_zero):
    """A pre-activation exactly 0: relu's derivative is 0 there, leaky_relu's is 1, as jax.nn."""
    net = jaxnet.mlp([2, 3, 2], activation)
    params = jaxnet.init_params(jax.random.key(0), net, jnp.float64)
    params[0]["b"] = jnp.array([0.0, 0.5, -0.5])
    x = jnp.array([[0.0, 0.0], [1.0, -2.0]])  # the first row makes z[0, 0] == 0 exactly
    y = jnp.array([0, 1])
    _, residuals, _ = jaxnet.network.forward_pass(params, net, x)
    assert residuals[0].z[0, 0] == 0.0
    act = jaxnet.ACTIVATIONS[activation]
    assert float(act.deriv(jnp.zeros(()), act.fn(jnp.zeros(())))) == slope_at_zero
    assert float(jax.grad(act.fn)(0.0)) == slope_at_zero
    assert_grads_close(jaxnet.manual_grads(params, net, x, y), autodiff_grads(params, net, x, y), 1e-12)


@pytest.mark.parametrize(
    "target,dtype",
    lean(
        [
            (t, d)
            for t in ("softmax_labels", "softmax_probs", "sigmoid_binary", "sigmoid_multilabel")
            for d in (jnp.float32, jnp.float64)
        ],
        lambda i, c: i in (1, 6),
    ),  # the main suite: labels in float64, multi-label in float32; -m slow the rest
    ids=[
        f"{t}-{d}"
        for t in ("softmax_labels", "softmax_probs", "sigmoid_binary", "sigmoid_multilabel")
        for d in ("float32", "float64")
    ],
)
def test_extreme_logits_are_finite(target, dtype):
    net = make_net(target, 0, "identity")
    params, x, y = random_problem(net, target, n=4, dtype=dtype)
    k = net.output_shape[0]
    # logits of ±1e4: zero weights, biases alternating in sign
    params = [{"W": jnp.zeros_like(params[0]["W"]), "b": jnp.array([1e4, -1e4, 1e4][:k], dtype)}]
    value, grads = jaxnet.value_and_manual_grads(params, net, x, y)
    ref = autodiff_grads(params, net, x, y)
    assert np.isfinite(float(value)) and np.isfinite(float(jaxnet.loss(params, net, x, y))), (
        "loss not finite at extreme logits"
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), "manual gradient not finite at extreme logits"
    assert_grads_close(grads, ref, 1e-6)


def test_manual_grads_documents_shapes_conventions_and_formulas():
    doc = jaxnet.manual_grads.__doc__
    for needle in [
        "[batch, n_{l−1}]",
        "W_l: ``[n_{l−1}, n_l]``",
        "δ_{l−1} = (δ_l W_lᵀ) ∘ g'(z_{l−1})",
        "∂L/∂W_l = a_{l−1}ᵀ δ_l + l2 W_l",
        "δ_L = r (p − y)",
        'reduction="mean"',
        "0 at\n    the kink",
    ]:
        assert needle in doc, needle


def test_tuple_params_give_tuple_grads():
    net = make_net("softmax_labels", 1, "tanh", l2=0.1)
    params, x, y = random_problem(net, "softmax_labels")
    grads = jaxnet.manual_grads(tuple(params), net, x, y)
    assert isinstance(grads, tuple)
    assert jax.tree.structure(grads) == jax.tree.structure(jax.grad(jaxnet.loss)(tuple(params), net, x, y))


def test_l2_override_sweeps_under_vmap():
    """A traced l2 (here vmapped over three values) equals networks built with each value."""
    net = make_net("squared_error", 1, "tanh", l2=0.0, l2_bias=True)
    params, x, y = random_problem(net, "squared_error")
    l2s = jnp.array([0.0, 0.1, 0.3])
    values, grads = jax.vmap(lambda l2: jaxnet.value_and_manual_grads(params, net, x, y, l2=l2))(l2s)
    for i, l2 in enumerate([0.0, 0.1, 0.3]):
        fixed = make_net("squared_error", 1, "tanh", l2=l2, l2_bias=True)
        np.testing.assert_allclose(values[i], jaxnet.loss(params, fixed, x, y), rtol=1e-13)
        assert_grads_close(jax.tree.map(lambda g: g[i], grads), autodiff_grads(params, fixed, x, y), 1e-12)  # noqa: B023 (called in this iteration)
    np.testing.assert_allclose(jax.jit(jaxnet.loss)(params, net, x, y, l2=0.1), values[1], rtol=1e-13)
