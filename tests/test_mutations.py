"""Every kind of check goes red on a deliberately wrong gradient.

Each mutation swaps a hand-derived piece for a plausible mistake (registries are looked
up at call time, so monkeypatching them changes what manual_grads computes, while
jaxnet.loss, and so jax.grad, stays right).
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import cli
from jaxnet.activations import ACTIVATIONS
from jaxnet.layers import Dense
from jaxnet.losses import LOSSES

from . import test_api, test_grads, test_properties
from .helpers import (
    assert_grads_close,
    assert_matches_fd,
    autodiff_grads,
    fd_grads,
    fresh_jit,
    make_net,
    on_reference,
    random_problem,
)
from .test_api import _note_000
from .test_properties import check_drawn_network


def _drop_derivative(monkeypatch, name):
    """δ_{l−1} = δ_l W_lᵀ, forgetting ∘ g'(z_{l−1})."""
    monkeypatch.setitem(ACTIVATIONS, name, dataclasses.replace(ACTIVATIONS[name], deriv=lambda z, a: jnp.ones_like(z)))


def _halve_squared_error_delta(monkeypatch):
    """∂ℓ/∂f = f − y, forgetting the 2 of the square."""
    monkeypatch.setitem(LOSSES, "squared_error", dataclasses.replace(LOSSES["squared_error"], delta=lambda f, y: f - y))


def _unstable_softmax_delta(monkeypatch):
    """p = eᶠ / Σ eᶠ without subtracting the max: inf / inf at large logits."""

    def delta(f, y):
        e = jnp.exp(f)
        p = e / jnp.sum(e, axis=-1, keepdims=True)
        return p - (jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype) if y.ndim == 1 else y)

    monkeypatch.setitem(
        LOSSES, "softmax_cross_entropy", dataclasses.replace(LOSSES["softmax_cross_entropy"], delta=delta)
    )


def _label_off_by_one(monkeypatch):
    """Integer labels one-hot encoded at the wrong index (probability rows stay right)."""
    right = LOSSES["softmax_cross_entropy"].delta

    def delta(f, y):
        return right(f, (y + 1) % f.shape[-1] if y.ndim == 1 else y)

    monkeypatch.setitem(
        LOSSES, "softmax_cross_entropy", dataclasses.replace(LOSSES["softmax_cross_entropy"], delta=delta)
    )


def _unsummed_bias(monkeypatch):
    """∂L/∂b = δ of the first sample instead of Σ_batch δ."""
    right = Dense.bwd

    def wrong(self, params, residuals, da):
        dx, grads = right(self, params, residuals, da)
        _x, z, a = residuals
        return dx, {**grads, "b": (da * jaxnet.ACTIVATIONS[self.activation].deriv(z, a))[0]}

    monkeypatch.setattr(Dense, "bwd", wrong)


def test_autodiff_check_goes_red(monkeypatch):
    net = make_net("softmax_labels", 2, "tanh")
    params, x, y = random_problem(net, "softmax_labels")
    _drop_derivative(monkeypatch, "tanh")
    with pytest.raises(AssertionError, match=r"vs jax.grad: leaf \[[01]\]\['[Wb]'\]"):
        assert_grads_close(jaxnet.manual_grads(params, net, x, y), autodiff_grads(params, net, x, y), 1e-10, "jax.grad")


def test_finite_difference_check_goes_red(monkeypatch):
    net = make_net("squared_error", 1, "sigmoid")
    params, x, y = random_problem(net, "squared_error")
    _halve_squared_error_delta(monkeypatch)
    with pytest.raises(AssertionError, match=r"vs finite differences: leaf \[[01]\]\['[Wb]'\] max rel [0-9.]+e-01"):
        assert_matches_fd(
            jaxnet.manual_grads(params, net, x, y), fd_grads(params, net, x, y), jaxnet.loss(params, net, x, y)
        )


def test_jit_autodiff_check_goes_red(monkeypatch):
    net = make_net("sigmoid_multilabel", 1, "tanh")
    params, x, y = random_problem(net, "sigmoid_multilabel")
    _unsummed_bias(monkeypatch)
    mine = jax.jit(lambda *args: jaxnet.manual_grads(*args))(params, net, x, y)  # a new function: traced afresh
    with pytest.raises(AssertionError, match=r"leaf \[[01]\]\['b'\]"):
        assert_grads_close(mine, autodiff_grads(params, net, x, y, jit=True), 1e-10, "jit(jax.grad)")


def test_per_example_check_goes_red(monkeypatch):
    net = make_net("softmax_probs", 1, "elu")
    params, x, y = random_problem(net, "softmax_probs", n=4)
    _drop_derivative(monkeypatch, "elu")
    in_axes = (None, None, 0, 0)
    with pytest.raises(AssertionError, match=r"leaf \[0\]"):
        assert_grads_close(
            jax.vmap(jaxnet.manual_grads, in_axes)(params, net, x, y),
            on_reference(jax.vmap(jax.grad(jaxnet.loss), in_axes), params, net, x, y),
            1e-10,
        )


def test_note_000_check_goes_red(monkeypatch):
    net = jaxnet.mlp([2, 6, 3], "relu", l2=0.01, l2_bias=True)
    params, x, y = random_problem(net, "softmax_labels", n=7)
    _drop_derivative(monkeypatch, "relu")
    _, ref = _note_000(jaxnet.fold_biases(params), np.asarray(x), np.asarray(y), 0.01)
    with pytest.raises(AssertionError, match=r"leaf \[0\]"):
        assert_grads_close(jaxnet.fold_biases(jaxnet.manual_grads(params, net, x, y)), ref, 1e-12, "note 000")


def test_comparison_measures_a_small_relative_error():
    """A 1e-8 relative slip in one element fails the 1e-10 check and passes a 1e-6 one."""
    net = make_net("softmax_labels", 1, "tanh")
    params, x, y = random_problem(net, "softmax_labels")
    grads = jaxnet.manual_grads(params, net, x, y)
    at = jnp.unravel_index(jnp.argmax(jnp.abs(grads[1]["W"])), grads[1]["W"].shape)  # the largest entry
    scale = float(jnp.abs(grads[1]["W"][at]))
    slipped = [grads[0], {**grads[1], "W": grads[1]["W"].at[at].add(1e-8 * scale)}]
    with pytest.raises(AssertionError, match=r"leaf \[1\]\['W'\] max rel 1.0\d*e-08"):
        assert_grads_close(slipped, grads, 1e-10)
    assert_grads_close(slipped, grads, 1e-6)


@pytest.mark.slow  # the main suite: the described network's check below goes red
def test_cli_check_goes_red(monkeypatch, capsys):
    _drop_derivative(monkeypatch, "tanh")
    assert cli.main(["check", "--batch", "4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "MISMATCH in 002-deep-tanh[0]['W'] (finite diff)" in out
    sections = dict(re.findall(r"^== ([\w-]+):(.*?)(?=^== |\Z)", out, re.M | re.S))
    assert "FAIL" in sections["002-deep-tanh"] and "FAIL" not in sections["000-relu-softmax-l2"]  # the others stay ok
    assert "first wrong layer from the output: layers[2] (Dense)" in sections["002-deep-tanh"]  # the last tanh layer


def test_cli_check_of_a_described_network_goes_red(monkeypatch, capsys):
    _drop_derivative(monkeypatch, "relu")
    assert cli.main(["check", "--preset", "000-spiral", "--hidden", "6", "--batch", "8"]) == 1
    assert "MISMATCH in [0]['W'] (finite diff)" in capsys.readouterr().out


def test_float32_check_goes_red(monkeypatch):
    _drop_derivative(monkeypatch, "gelu")
    with pytest.raises(AssertionError, match=r"vs jax.grad \(float32\)"):
        test_grads.test_float32("gelu", "squared_error")


def test_property_check_goes_red(monkeypatch):
    _drop_derivative(monkeypatch, "softplus")
    monkeypatch.setattr(test_properties, "_manual_fd", fresh_jit(test_properties._manual_fd))
    drawn = dict(d=2, widths=[4, 2], target="sigmoid_multilabel", reduction="sum", l2=0.05, l2_bias=True, n=5, seed=1)
    with pytest.raises(AssertionError, match=r"vs jax.grad: leaf \[[01]\]"):
        check_drawn_network({**drawn, "dtype": jnp.float64}, ["softplus", "tanh"])
    with pytest.raises(AssertionError, match=r"vs jax.grad \(float32\): leaf \[[01]\]"):
        check_drawn_network({**drawn, "dtype": jnp.float32}, ["softplus", "tanh"])


def test_extreme_logit_check_goes_red(monkeypatch):
    _unstable_softmax_delta(monkeypatch)
    with pytest.raises(AssertionError, match="manual gradient not finite at extreme logits"):
        test_api.test_extreme_logits_are_finite("softmax_labels", jnp.float64)


def test_target_form_check_goes_red(monkeypatch):
    _label_off_by_one(monkeypatch)
    with pytest.raises(AssertionError, match="gradient mismatch"):
        test_api.test_target_forms_agree()
