"""The loss as documented, against plain NumPy written from the formulas (not through jaxnet).

The 1e-10 grid compares ``manual_grads`` with ``jax.grad`` of the same ``jaxnet.loss``, so the
loss's own definition is shared by both sides: a ``reduction="sum"`` that divided by N, or an
L2 penalty that left out the biases under ``l2_bias=True``, would pass it. Here the value of
``jaxnet.loss`` is compared with a NumPy forward pass and loss written from the definitions
(README "API", ``jaxnet.loss``'s docstring, ``jaxnet.losses``):

- ``L = r · Σ_i ℓ_i + l2/2 · Σ W²`` with ``r = 1/N`` (``"mean"``) or ``1`` (``"sum"``), the sum
  over every weight matrix, and over every bias too with ``l2_bias=True`` (note 000's L2);
- softmax cross-entropy ``ℓ_i = −Σ_k y_ik log p_ik`` (labels: ``−log p_{i, y_i}``);
- sigmoid cross-entropy ``ℓ_i = Σ_k −y_ik log σ(f_ik) − (1 − y_ik) log(1 − σ(f_ik))``;
- squared error ``ℓ_i = Σ_k (f_ik − y_ik)²`` (no 1/2: note 001's RSS with ``"sum"``, note 003's
  J with ``"mean"``);

and ``manual_grads`` with central finite differences of that NumPy loss, so neither the value
nor the gradient can share a mistake in the definition with the reference.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet

from .helpers import TARGETS, assert_matches_fd

N, D, H = 5, 3, 4  # examples, inputs, hidden units (one tanh layer)


def _sigmoid(f):
    return 1.0 / (1.0 + np.exp(-f))


def numpy_loss(ws, bs, x, y, loss, reduction, l2, l2_bias):
    """``L`` of a tanh MLP (linear output layer) from the formulas, in NumPy float64.

    ``ws[l]``: [n_{l−1}, n_l], ``bs[l]``: [n_l], ``x``: [N, D]; ``y``: [N] labels or [N, K]
    (softmax), [N] or [N, 1] (sigmoid, K = 1), [N, K] otherwise."""
    a = x
    for layer, (w, b) in enumerate(zip(ws, bs)):
        z = a @ w + b[None, :]  # [N, n_l]
        a = np.tanh(z) if layer < len(ws) - 1 else z
    f = a  # [N, K]
    n, k = f.shape
    if loss == "softmax_cross_entropy":
        e = np.exp(f - f.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)  # [N, K]
        per = -np.log(p[np.arange(n), y]) if y.ndim == 1 else -np.sum(y * np.log(p), axis=1)
    elif loss == "sigmoid_cross_entropy":
        t, h = y.reshape(n, k), _sigmoid(f)
        per = np.sum(-t * np.log(h) - (1 - t) * np.log(1 - h), axis=1)
    else:
        per = np.sum((f - y.reshape(n, k)) ** 2, axis=1)
    r = 1.0 / n if reduction == "mean" else 1.0
    penalty = sum(np.sum(w**2) for w in ws) + (sum(np.sum(b**2) for b in bs) if l2_bias else 0.0)
    return r * np.sum(per) + 0.5 * l2 * penalty


def numpy_fd_grads(ws, bs, loss_of, eps=1e-6):
    """Central differences of ``loss_of(ws, bs)`` for every entry: ``([dW_l], [db_l])``."""

    def diff(arrays, i, j):
        plus, minus = [a.copy() for a in arrays], [a.copy() for a in arrays]
        plus[i].flat[j] += eps
        minus[i].flat[j] -= eps
        return plus, minus

    gw = [np.zeros_like(w) for w in ws]
    gb = [np.zeros_like(b) for b in bs]
    for i in range(len(ws)):
        for j in range(ws[i].size):
            p, m = diff(ws, i, j)
            gw[i].flat[j] = (loss_of(p, bs) - loss_of(m, bs)) / (2 * eps)
        for j in range(bs[i].size):
            p, m = diff(bs, i, j)
            gb[i].flat[j] = (loss_of(ws, p) - loss_of(ws, m)) / (2 * eps)
    return [{"W": w, "b": b} for w, b in zip(gw, gb)]


def _targets(target, rng, k):
    if target == "softmax_labels":
        return rng.integers(0, k, size=N)
    if target == "softmax_probs":
        e = np.exp(rng.normal(size=(N, k)))
        return e / e.sum(axis=1, keepdims=True)
    if target == "sigmoid_binary":
        return rng.integers(0, 2, size=N).astype(np.float64)  # [N] for K = 1
    if target == "sigmoid_multilabel":
        return rng.uniform(size=(N, k))
    return rng.normal(size=(N, k))


@pytest.mark.parametrize("l2,l2_bias", [(0.0, False), (0.0, True), (0.3, False), (0.3, True)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_loss_and_manual_grads_match_the_numpy_definition(target, reduction, l2, l2_bias):
    loss, k = TARGETS[target]
    rng = np.random.default_rng(len(target) + 10 * (reduction == "sum"))
    ws = [rng.normal(size=(D, H)) / np.sqrt(D), rng.normal(size=(H, k)) / np.sqrt(H)]
    bs = [0.5 + 0.5 * rng.uniform(size=H), -0.5 - 0.5 * rng.uniform(size=k)]  # nonzero, |b| ≥ 0.5
    x, y = rng.normal(size=(N, D)), _targets(target, rng, k)
    net = jaxnet.mlp([D, H, k], "tanh", loss, reduction, l2, l2_bias)
    params = [{"W": jnp.asarray(w), "b": jnp.asarray(b)} for w, b in zip(ws, bs)]
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    expected = numpy_loss(ws, bs, x, y, loss, reduction, l2, l2_bias)
    assert float(jaxnet.loss(params, net, xj, yj)) == pytest.approx(expected, rel=1e-12, abs=0)
    value, grads = jaxnet.value_and_manual_grads(params, net, xj, yj)
    assert float(value) == pytest.approx(expected, rel=1e-12, abs=0)
    fd = numpy_fd_grads(ws, bs, lambda w, b: numpy_loss(w, b, x, y, loss, reduction, l2, l2_bias))
    assert_matches_fd(grads, fd, expected, "NumPy finite differences of the NumPy loss", rtol=1e-7)


def test_the_numpy_reference_sees_the_definitions():
    """The reference itself distinguishes what it must: N, the bias penalty, the 2 of the square."""
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(D, H)), rng.normal(size=(H, 2))]
    bs = [rng.normal(size=H), rng.normal(size=2)]
    x, y = rng.normal(size=(N, D)), rng.normal(size=(N, 2))
    args = (ws, bs, x, y, "squared_error")
    mean, total = numpy_loss(*args, "mean", 0.0, False), numpy_loss(*args, "sum", 0.0, False)
    assert total == pytest.approx(N * mean, rel=1e-14)
    weights_only, with_biases = numpy_loss(*args, "sum", 0.3, False), numpy_loss(*args, "sum", 0.3, True)
    assert weights_only - total == pytest.approx(0.15 * sum(np.sum(w**2) for w in ws), rel=1e-12)
    assert with_biases - weights_only == pytest.approx(0.15 * sum(np.sum(b**2) for b in bs), rel=1e-12)
