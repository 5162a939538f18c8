"""Out-of-range targets: ValueError outside jit, NaN loss and NaN gradients under jit.

Outside jit the loss heads' target checks read the labels and raise. Under jit they cannot,
so an invalid sample's loss term and its whole output-delta row are NaN: the jitted loss is
NaN, and so are the output layer's gradients in every entry, both the manual ones and autodiff's.
The NaN then reaches every hidden-layer entry that the invalid sample's backward pass reaches:
all of them with a smooth activation (tanh here), all but the units a ReLU switched off for
that sample (which get nothing from it, exactly as in exact arithmetic) with ReLU. Before, a
label of -1 silently scored class K − 1 (a finite, wrong loss) and a label of K gave a NaN
loss with finite manual gradients. Valid batches are unchanged.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet.losses import LOSSES
from tests.helpers import lean

K = 4  # classes of the softmax network
X = np.random.default_rng(0).normal(size=(6, 3))
LABELS = np.array([0, 1, 2, 3, 1, 0])


def _net(loss="softmax_cross_entropy", k=K, activation="relu"):
    net = jaxnet.mlp([3, 5, k], activation, loss=loss)
    return net, jaxnet.init_params(jax.random.PRNGKey(0), net, jnp.float64)


SOFTMAX = _net()
SIGMOID = _net("sigmoid_cross_entropy", 2)
SQUARED = _net("squared_error", 2)

jit_loss = jax.jit(jaxnet.loss)
jit_manual = jax.jit(jaxnet.manual_grads)
jit_value_and_manual = jax.jit(jaxnet.value_and_manual_grads)
jit_autodiff = jax.jit(jax.grad(jaxnet.loss))


def _bad_labels(bad):
    y = LABELS.copy()
    y[1] = bad
    return y


def _assert_all_nan(grads, what):
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isnan(leaf))), f"{what}{jax.tree_util.keystr(path)} is not all NaN: {leaf}"


def _assert_nan_grads(grads, what):
    """The output layer NaN in every entry; every hidden leaf NaN somewhere (the ReLU network's
    invalid sample has active hidden units); see test_all_nan_with_tanh for every entry."""
    _assert_all_nan(grads[-1], what)
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.any(jnp.isnan(leaf))), f"{what}{jax.tree_util.keystr(path)} has no NaN"


def _assert_jit_all_nan(net, params, y):
    """Loss NaN (also the value of value_and_manual_grads); manual gradients and autodiff of
    the jitted loss NaN as in _assert_nan_grads."""
    assert bool(jnp.isnan(jit_loss(params, net, X, y)))
    _assert_nan_grads(jit_manual(params, net, X, y), "manual_grads")
    value, grads = jit_value_and_manual(params, net, X, y)
    assert bool(jnp.isnan(value))
    _assert_nan_grads(grads, "value_and_manual_grads")
    _assert_nan_grads(jit_autodiff(params, net, X, y), "autodiff")


@pytest.mark.parametrize("bad", lean([-1, K, K + 3, -K - 1], lambda i, c: i < 2))  # the rest: -m slow
def test_softmax_label_out_of_range_under_jit_is_nan(bad):
    net, params = SOFTMAX
    _assert_jit_all_nan(net, params, _bad_labels(bad))


@pytest.mark.parametrize("bad", lean([-1, K], lambda i, c: i == 0))
def test_all_nan_with_tanh(bad):
    """With a smooth activation every entry of every leaf is NaN, manual and autodiff alike."""
    net, params = _net(activation="tanh")
    _assert_all_nan(jit_autodiff(params, net, X, _bad_labels(bad)), "autodiff")
    _assert_all_nan(jit_manual(params, net, X, _bad_labels(bad)), "manual_grads")


@pytest.mark.parametrize("bad,shown", [(-1, "[-1, 3]"), (K, "[0, 4]")])
def test_softmax_label_out_of_range_eager_raises(bad, shown):
    net, params = SOFTMAX
    y = _bad_labels(bad)
    message = re.escape(f"labels must lie in [0, {K}) for {K} classes, got values in {shown}")
    for fn in (
        jaxnet.loss,
        jaxnet.manual_grads,
        jaxnet.value_and_manual_grads,
        jaxnet.check_inputs,
        jaxnet.per_example_grads,
    ):
        with pytest.raises(ValueError, match=message):
            fn(params, net, X, y)
    one = re.escape(f"labels must lie in [0, {K}) for {K} classes, got values in [{bad}, {bad}]")
    with pytest.raises(ValueError, match=one):  # one example, eager
        jaxnet.manual_grads(params, net, X[1], y[1])


def test_labels_closed_over_by_jit_are_traced_too():
    """A NumPy array that the jitted function closes over is a traced constant inside it (not
    checked): NaN as for an argument. jaxnet.check_inputs checks such data up front."""
    net, params = SOFTMAX
    assert bool(jnp.isnan(jax.jit(lambda p: jaxnet.loss(p, net, X, _bad_labels(-1)))(params)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        jaxnet.check_inputs(params, net, X, _bad_labels(-1))


@pytest.mark.slow  # test_valid_labels_under_jit_bitwise_as_before covers it in the main run
def test_softmax_valid_labels_under_jit_unchanged():
    net, params = SOFTMAX
    value, grads = jit_value_and_manual(params, net, X, LABELS)
    eager_value, eager_grads = jaxnet.value_and_manual_grads(params, net, X, LABELS)
    assert np.isfinite(value) and all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    np.testing.assert_allclose(value, eager_value, rtol=1e-13)
    np.testing.assert_allclose(jit_loss(params, net, X, LABELS), eager_value, rtol=1e-13)
    for got, want, auto in zip(
        jax.tree.leaves(grads), jax.tree.leaves(eager_grads), jax.tree.leaves(jit_autodiff(params, net, X, LABELS))
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got, auto, rtol=1e-10, atol=1e-15)
    # the loss is the mean of −log softmax at the label, computed here independently
    logits = jaxnet.forward(params, net, X)
    want = -np.mean(np.take_along_axis(jax.nn.log_softmax(logits), LABELS[:, None], axis=1))
    np.testing.assert_allclose(value, want, rtol=1e-13)


def _unmarked_softmax(head):
    """The softmax head with the label formulas as they were before the marking."""

    def value(f, y):
        return -jnp.take_along_axis(jax.nn.log_softmax(f, axis=-1), y[:, None], axis=-1)[:, 0]

    def delta(f, y):
        return jax.nn.softmax(f, axis=-1) - jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype)

    return dataclasses.replace(head, value=value, delta=delta)


@pytest.mark.parametrize("dtype", lean([jnp.float32, jnp.float64], lambda i, c: i == 0))
def test_valid_labels_under_jit_bitwise_as_before(monkeypatch, dtype):
    """On valid labels the marking multiplies the logits by exactly 1: the jitted loss, manual
    gradients and autodiff gradients are bit for bit those of the unmarked formulas (XLA:CPU)."""
    net = SOFTMAX[0]
    params = jaxnet.init_params(jax.random.PRNGKey(0), net, dtype)
    x = X.astype(dtype)

    def results():  # fresh functions, so that each call traces the head as it is now
        return (
            jax.jit(lambda p, x, y: jaxnet.value_and_manual_grads(p, net, x, y))(params, x, LABELS),
            jax.jit(jax.grad(lambda p, x, y: jaxnet.loss(p, net, x, y)))(params, x, LABELS),
        )

    now = results()
    monkeypatch.setitem(LOSSES, "softmax_cross_entropy", _unmarked_softmax(LOSSES["softmax_cross_entropy"]))
    before = results()
    for got, want in zip(jax.tree.leaves(now), jax.tree.leaves(before)):
        assert got.dtype == want.dtype and np.asarray(got).tobytes() == np.asarray(want).tobytes()


@pytest.mark.parametrize("dtype", lean([np.int8, np.uint8, np.int32], lambda i, c: i == 0))
def test_label_dtypes(dtype):
    net, params = SOFTMAX
    np.testing.assert_allclose(
        jit_loss(params, net, X, LABELS.astype(dtype)), jit_loss(params, net, X, LABELS), rtol=1e-15
    )
    bad = -1 if np.issubdtype(dtype, np.signedinteger) else 255
    y = _bad_labels(0).astype(dtype)
    y[1] = bad
    assert bool(jnp.isnan(jit_loss(params, net, X, y)))
    _assert_nan_grads(jit_manual(params, net, X, y), "manual_grads")


def test_per_example_under_jit_marks_only_the_invalid_example():
    """Each invalid example's own gradient is NaN; the others are untouched."""
    net, params = SOFTMAX
    norms = jax.jit(jaxnet.per_example_grad_norms)(params, net, X, _bad_labels(K))
    want = jaxnet.per_example_grad_norms(params, net, X, LABELS)
    assert np.isnan(norms[1])
    mask = np.arange(len(X)) != 1
    np.testing.assert_allclose(norms[mask], want[mask], rtol=1e-12)


def test_softmax_probabilities_invalid_under_jit_is_nan():
    net, params = SOFTMAX
    probs = np.full((len(X), K), 1.0 / K)
    for bad in (-0.5, np.nan, np.inf):
        y = probs.copy()
        y[2, 1] = bad
        _assert_jit_all_nan(net, params, y)
        with pytest.raises(ValueError, match="probabilities must be finite and non-negative"):
            jaxnet.loss(params, net, X, y)


@pytest.mark.parametrize("bad", lean([2.0, -1.0, 1.5, np.nan, np.inf], lambda i, c: i in (0, 3)))
def test_sigmoid_target_out_of_range_under_jit_is_nan(bad):
    net, params = SIGMOID
    y = np.tile([0.0, 1.0], (len(X), 1))
    y[3, 0] = bad
    _assert_jit_all_nan(net, params, y)
    message = r"sigmoid_cross_entropy targets (must lie in \[0.0, 1.0\]|contain NaN or Inf)"
    with pytest.raises(ValueError, match=message):
        jaxnet.manual_grads(params, net, X, y)


def test_sigmoid_valid_targets_under_jit_unchanged():
    net, params = SIGMOID
    y = np.tile([0.0, 1.0], (len(X), 1))
    y[0] = [0.25, 0.75]
    value, grads = jit_value_and_manual(params, net, X, y)
    eager_value, eager_grads = jaxnet.value_and_manual_grads(params, net, X, y)
    np.testing.assert_allclose(value, eager_value, rtol=1e-13)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(eager_grads)):
        assert bool(jnp.all(jnp.isfinite(got)))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", lean([np.inf, -np.inf, np.nan], lambda i, c: i == 2))
def test_squared_error_nonfinite_target_under_jit_is_nan(bad):
    net, params = SQUARED
    y = np.zeros((len(X), 2))
    y[4, 1] = bad
    _assert_jit_all_nan(net, params, y)
    with pytest.raises(ValueError, match="squared_error targets contain NaN or Inf"):
        jaxnet.loss(params, net, X, y)
