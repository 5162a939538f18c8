"""jaxnet.check_grads: a report as data that names the wrong leaf, element and witness."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import verify

NET = jaxnet.mlp([3, 40, 3], "tanh", l2=0.1)


def _loss(p, x, y):
    return jaxnet.loss(p, NET, x, y)


def _grads(p, x, y):
    return jaxnet.manual_grads(p, NET, x, y)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("fd_max_elements", [256, 16], ids=["every-element", "directions"])
def test_right_gradient_passes(dtype, fd_max_elements):
    params, x, y = verify.random_problem(NET, seed=0, n=5, dtype=dtype)
    report = jaxnet.assert_grads_match(_loss, _grads, params, x, y, fd_max_elements=fd_max_elements)
    assert report.ok and {r.witness for r in report.leaves} == {"jax.grad", "finite diff", "ref vs finite diff"}
    assert len(report.leaves) == 3 * 4
    assert "ok" in str(report) and "FAIL" not in str(report)


def test_one_wrong_element_is_located():
    params, x, y = verify.random_problem(NET, seed=1, n=5)

    def wrong(p, x, y):
        g = _grads(p, x, y)
        g[1]["W"] = g[1]["W"].at[7, 2].multiply(1.5)
        return g

    report = jaxnet.check_grads(_loss, wrong, params, x, y)
    bad = report.failures()
    assert {r.path for r in bad} == {"[1]['W']"} and {r.witness for r in bad} == {"jax.grad", "finite diff"}
    autodiff = next(r for r in bad if r.witness == "jax.grad")
    assert autodiff.worst == "(7, 2)" and autodiff.frac_bad == pytest.approx(1 / 120)
    assert autodiff.yours == pytest.approx(1.5 * autodiff.reference)
    with pytest.raises(AssertionError, match=r"gradient mismatch in \[1\]\['W'\] \(finite diff\), \[1\]\['W'\] \(jax.grad\)"):
        jaxnet.assert_grads_match(_loss, wrong, params, x, y)


def test_directional_differences_catch_a_wrong_big_leaf():
    params, x, y = verify.random_problem(NET, seed=2, n=5)
    wrong = lambda p, x, y: [{**g, "W": 1.01 * g["W"]} if i == 0 else g for i, g in enumerate(_grads(p, x, y))]
    report = jaxnet.check_grads(_loss, wrong, params, x, y, fd_max_elements=16, directions=3)
    fd = [r for r in report.failures() if r.witness == "finite diff"]
    assert [r.path for r in fd] == ["[0]['W']"] and fd[0].worst.startswith("dir ")


def test_a_user_written_layer():
    """Checking your own derivation: y = tanh(x W) summed, dL/dW = xᵀ (1 − y²)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    w = {"W": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)))}
    loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["W"]))
    right = lambda p, x: {"W": x.T @ (1 - jnp.tanh(x @ p["W"]) ** 2)}
    forgot = lambda p, x: {"W": x.T @ jnp.ones((4, 2))}  # dropped the derivative of tanh
    assert jaxnet.check_grads(loss, right, w, x).ok
    assert not jaxnet.check_grads(loss, forgot, w, x).ok
