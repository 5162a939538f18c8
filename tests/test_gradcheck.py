"""jaxnet.check_grads: a report as data that names the wrong leaf, element and witness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import gradcheck, verify

from .helpers import lean

NET = jaxnet.mlp([3, 40, 3], "tanh", l2=0.1)


def _loss(p, x, y):
    return jaxnet.loss(p, NET, x, y)


def _grads(p, x, y):
    return jaxnet.manual_grads(p, NET, x, y)


@pytest.mark.parametrize(
    "fd_max_elements,dtype",
    lean(  # the main suite: every element in float64; -m slow the rest
        [(256, jnp.float32), (256, jnp.float64), (16, jnp.float32), (16, jnp.float64)], lambda i, c: i == 1
    ),
    ids=["every-element-float32", "every-element-float64", "directions-float32", "directions-float64"],
)
def test_right_gradient_passes(dtype, fd_max_elements):
    params, x, y = verify.random_problem(NET, seed=0, n=5, dtype=dtype)
    report = jaxnet.assert_grads_match(_loss, _grads, params, x, y, fd_max_elements=fd_max_elements)
    witnesses = ["jax.grad", "finite diff", "ref vs finite diff", "jvp vs jax.grad", "hessian-vector"]
    assert report.ok and [r.witness for r in report.leaves] == [w for w in witnesses for _ in range(4)]
    assert _verdicts(report) == ["ok"] * len(report.leaves)


def _verdicts(report):
    """The table's ok column, row by row (the header, its rule and the notes left out)."""
    rows = str(report).splitlines()[2 : 2 + len(report.leaves)]
    return [row.split()[-1] for row in rows]


def test_the_table_says_which_rows_fail():
    """L = Σ tanh(x W) + Σ c²: a doubled ∂L/∂c fails against both witnesses, ∂L/∂W passes."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    params = {"W": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2))), "c": jnp.asarray([0.5, -1.0])}
    loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["W"])) + jnp.sum(p["c"] ** 2)
    wrong = lambda p, x: {"W": x.T @ (1 - jnp.tanh(x @ p["W"]) ** 2), "c": 4 * p["c"]}
    report = jaxnet.check_grads(loss, wrong, params, x, hvp_directions=0)
    assert _verdicts(report) == ["ok" if r.ok else "FAIL" for r in report.leaves] and "ok" in _verdicts(report)
    assert {(r.witness, r.path) for r in report.failures()} == {("jax.grad", "['c']"), ("finite diff", "['c']")}


def test_nan_or_inf_on_either_side_is_a_failure():
    """A NaN reference used to compare as ok (NaN > rtol is False); NaN or inf anywhere now fails,
    and does not spoil the scale of the other entries."""
    yours = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([4.0])}
    for bad_yours, bad_ref in [(None, np.nan), (np.nan, None), (np.inf, None), (None, -np.inf), (np.inf, np.inf)]:
        mine = {**yours, "a": yours["a"].copy()}
        ref = {**yours, "a": yours["a"].copy()}
        if bad_yours is not None:
            mine["a"][1] = bad_yours
        if bad_ref is not None:
            ref["a"][1] = bad_ref
        a, b = gradcheck.compare("jax.grad", mine, ref, 1e-10)
        assert (a.ok, a.worst, a.max_rel, a.frac_bad) == (False, "(1,)", np.inf, pytest.approx(1 / 3)), (
            bad_yours,
            bad_ref,
            a,
        )
        assert b.ok and b.max_rel == 0.0, (bad_yours, bad_ref, b)
    # through check_grads: a loss that is NaN at these params (sqrt of negative numbers) and a finite gradient
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    w = {"W": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)))}
    loss = lambda p, x: jnp.sum(jnp.sqrt(x @ p["W"]))
    report = jaxnet.check_grads(loss, lambda p, x: {"W": jnp.ones((3, 2))}, w, x)
    assert not report.ok and {r.witness for r in report.failures()} >= {"jax.grad", "finite diff"}
    assert "FAIL" in _verdicts(report)


def test_random_directions_take_flat_seeds_as_numpy_2_5_requires(monkeypatch):
    """NumPy 2.5's SeedSequence refuses nested sequences such as ``((seed, 0), i)``."""
    default_rng = np.random.default_rng

    def flat_only(seed=None):
        if isinstance(seed, (tuple, list)) and any(isinstance(s, (tuple, list)) for s in seed):
            raise TypeError("SeedSequence does not accept nested sequences.")
        return default_rng(seed)

    monkeypatch.setattr(np.random, "default_rng", flat_only)
    params, x, y = verify.random_problem(NET, seed=0, n=5)
    report = jaxnet.assert_grads_match(_loss, _grads, params, x, y, fd_max_elements=16)  # random directions
    assert {r.witness for r in report.leaves} >= {"finite diff", "jvp vs jax.grad"}
    assert not any("skipped" in n for n in report.notes)  # the last note only says where the references ran
    assert report.notes[-1].startswith("references computed on ")


def test_one_wrong_element_is_located():
    params, x, y = verify.random_problem(NET, seed=1, n=5)

    def wrong(p, x, y):
        g = _grads(p, x, y)
        g[1]["W"] = g[1]["W"].at[7, 2].multiply(1.5)
        return g

    report = jaxnet.check_grads(_loss, wrong, params, x, y)
    bad = report.failures()
    assert {r.path for r in bad} == {"[1]['W']"} and {r.witness for r in bad} == {
        "jax.grad",
        "finite diff",
        "hessian-vector",
    }
    autodiff = next(r for r in bad if r.witness == "jax.grad")
    assert autodiff.worst == "(7, 2)" and autodiff.frac_bad == pytest.approx(1 / 120)
    assert autodiff.yours == pytest.approx(1.5 * autodiff.reference)
    with pytest.raises(
        AssertionError,
        match=r"gradient mismatch in \[1\]\['W'\] \(finite diff\), \[1\]\['W'\] \(hessian-vector\), "
        r"\[1\]\['W'\] \(jax\.grad\)",
    ):
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


RELU = jaxnet.mlp([3, 8, 3], "relu")


@pytest.mark.parametrize("dtype", lean([jnp.float32, jnp.float64], lambda i, d: d == jnp.float64))
def test_kinks_are_counted_and_excluded_or_nudged(dtype):
    """Zero biases and all-zero input rows put every hidden ReLU exactly at its kink: finite
    differences of b0 then see half a slope. Counted only, that fails; excluded or nudged, it passes."""
    params = jaxnet.init_params(jax.random.key(0), RELU, dtype)  # zero biases
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), dtype).at[:2].set(0.0)
    y = jnp.arange(6) % 3
    run = lambda kinks: jaxnet.check_grads(
        lambda p, x, y: jaxnet.loss(p, RELU, x, y),
        lambda p, x, y: jaxnet.manual_grads(p, RELU, x, y),
        params,
        x,
        y,
        net=RELU,
        kinks=kinks,
        hvp_directions=0,
    )
    counted = run("count")
    assert {(r.path, r.witness) for r in counted.failures()} >= {("[0]['b']", "finite diff")}
    assert counted.notes[:-1] == (
        "16 pre-activation(s)/pooling window(s) within 0.0001 of a kink in 2 of 6 example(s); "
        "counted only, not excluded",
    )
    excluded = run("exclude")
    assert excluded.ok and "those 2 excluded, checked on the other 4" in excluded.notes[0]
    nudged = run("nudge")
    assert nudged.ok and "their inputs nudged" in nudged.notes[0] and "note: 16 pre-activation" in str(nudged)
    with pytest.raises(ValueError, match="every example has a kink"):
        jaxnet.check_grads(
            lambda p, x, y: jaxnet.loss(p, RELU, x, y),
            lambda p, x, y: jaxnet.manual_grads(p, RELU, x, y),
            params,
            x[:2],
            y[:2],
            net=RELU,
        )
    with pytest.raises(ValueError, match="kinks must be"):
        jaxnet.check_grads(jaxnet.loss, jaxnet.manual_grads, params, x, y, net=RELU, kinks="skip")


def test_count_kinks_sees_relu_and_max_pool_near_ties():
    net = jaxnet.sequential(
        (2, 2, 1), [jaxnet.Activation("relu"), jaxnet.MaxPool2D(2), jaxnet.Flatten(), jaxnet.Dense(2)]
    )
    params = jaxnet.init_params(jax.random.key(0), net, jnp.float64)
    x = jnp.asarray([[[1.0, 3.0], [2.99999, -1e-5]], [[1.0, 3.0], [3.0, 0.5]]])[..., None]  # [2, 2, 2, 1]
    found, near = gradcheck.count_kinks(params, net, x, margin=1e-4)
    # example 0: the ReLU input −1e-5 and the near tie 3 vs 2.99999; example 1: an exact tie, not a kink
    assert (found.elements, found.examples, list(near)) == (2, 1, [True, False])


def _tanh_loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"]) ** 2)


def _tanh_grads(p, x, frozen=False):
    """d/dW Σ tanh(xW)² = xᵀ (2 a (1 − a²)); frozen: the same numbers, but the derivative factor
    (1 − a²) is taken as a constant, so the gradient is right here and wrong as a function."""
    a = jnp.tanh(x @ p["W"])
    slope = 1 - (jax.lax.stop_gradient(a) if frozen else a) ** 2
    return {"W": x.T @ (2 * a * slope)}


def test_hessian_vector_products_catch_a_second_order_mistake():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    w = {"W": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)))}
    assert jaxnet.check_grads(_tanh_loss, _tanh_grads, w, x).ok
    report = jaxnet.check_grads(_tanh_loss, lambda p, x: _tanh_grads(p, x, frozen=True), w, x, hvp_directions=3)
    assert [(r.witness, r.path) for r in report.failures()] == [("hessian-vector", "['W']")]
    assert report.failures()[0].shape == (3, 3, 2)  # three directions, stacked


def test_a_numpy_gradient_is_checked_and_the_hessian_check_skipped_with_a_note():
    x = np.random.default_rng(0).normal(size=(4, 3))
    w = {"W": np.random.default_rng(1).normal(size=(3, 2))}

    def numpy_grads(p, x):
        a = np.tanh(np.asarray(x) @ np.asarray(p["W"]))
        return {"W": np.asarray(x).T @ (2 * a * (1 - a**2))}

    report = jaxnet.check_grads(_tanh_loss, numpy_grads, w, x)
    assert report.ok and "hessian-vector check skipped" in report.notes[0]
    assert not any(r.witness == "hessian-vector" for r in report.leaves)


def test_forward_vs_reverse_goes_red_on_an_inconsistent_reference():
    params = {"W": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)))}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    loss = lambda p: _tanh_loss(p, x)
    right = jax.grad(loss)(params)
    assert all(r.ok for r in gradcheck._forward_vs_reverse(loss, params, right, 4, (0, 1), 1e-10))
    bent = {"W": right["W"].at[0, 1].add(1e-6)}
    rows = gradcheck._forward_vs_reverse(loss, params, bent, 4, (0, 1), 1e-10)
    assert [r.ok for r in rows] == [False] and rows[0].witness == "jvp vs jax.grad"


def test_finite_differences_allow_for_their_own_round_off():
    """Near an optimum (all |g| ≤ 1e-4) a fixed step cannot resolve the gradient to 1e-6; the
    allowance 100 ε |L| / eps keeps a right gradient passing, while a wrong one still fails."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=40)
    w_star = np.linalg.lstsq(a, b, rcond=None)[0]
    params = {"w": jnp.asarray(w_star + 1e-5 * rng.normal(size=5))}
    loss = lambda p, a, b: jnp.sum((a @ p["w"] - b) ** 2)
    right = lambda p, a, b: {"w": 2 * a.T @ (a @ p["w"] - b)}
    report = jaxnet.check_grads(loss, right, params, jnp.asarray(a), jnp.asarray(b))
    assert report.ok, str(report)
    assert not jaxnet.check_grads(
        loss, lambda p, a, b: {"w": 1.5 * right(p, a, b)["w"]}, params, jnp.asarray(a), jnp.asarray(b)
    ).ok


def test_a_zero_gradient_leaf_beside_a_big_leaf_passes():
    """The floor of the error's denominator is the whole gradient's scale, also for probed leaves."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(6, 30)))
    params = {"W": jnp.asarray(rng.normal(size=(30, 20)) / 5), "c": jnp.asarray(rng.normal(size=20))}
    loss = lambda p, x: jnp.sum(jax.nn.log_softmax(x @ p["W"] + p["c"][None] * 0.0 + 0.0, axis=1)[:, 0])
    grads = lambda p, x: {
        "W": x.T @ (jax.nn.one_hot(jnp.zeros(6, int), 20) - jax.nn.softmax(x @ p["W"], axis=1)),
        "c": jnp.zeros(20),
    }
    assert jaxnet.check_grads(loss, grads, params, x, fd_max_elements=64).ok


def test_losses_the_checker_cannot_compile_or_run_forward_mode_on():
    """A Python int used as a shape, a string argument, and a custom_vjp in the loss."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    w = {"W": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)))}

    def loss(p, x, k, mode):
        assert mode == "sum"
        return jnp.sum(jax.nn.one_hot(jnp.arange(4) % k, k) * jnp.tanh(x @ p["W"]))

    def grads(p, x, k, mode):
        return {"W": x.T @ (jax.nn.one_hot(jnp.arange(4) % k, k) * (1 - jnp.tanh(x @ p["W"]) ** 2))}

    assert jaxnet.check_grads(loss, grads, w, x, 2, "sum").ok

    @jax.custom_vjp
    def square(v):
        return v**2

    square.defvjp(lambda v: (v**2, v), lambda v, g: (2 * v * g,))
    report = jaxnet.check_grads(
        lambda p, x: jnp.sum(square(x @ p["W"])), lambda p, x: {"W": x.T @ (2 * (x @ p["W"]))}, w, x
    )
    assert report.ok and any("forward-vs-reverse check skipped" in n for n in report.notes)


def test_kinks_with_a_single_example_integer_inputs_and_extra_arguments():
    params = jaxnet.init_params(jax.random.key(0), RELU, jnp.float64)
    loss = lambda p, x, y, w: jaxnet.loss(p, RELU, x, y) * w[0]
    grads = lambda p, x, y, w: jax.tree.map(lambda g: g * w[0], jaxnet.manual_grads(p, RELU, x, y))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3))).at[0].set(0.0)  # example 0 at every kink
    weights = jnp.asarray([2.0, 1.0, 1.0])  # as long as the batch, but not batch-first data: never sliced
    report = jaxnet.check_grads(loss, grads, params, x, jnp.arange(3), weights, net=RELU)
    assert report.ok and "those 1 excluded" in report.notes[0]
    one = jaxnet.check_grads(
        lambda p, x, y: jaxnet.loss(p, RELU, x, y),
        lambda p, x, y: jaxnet.manual_grads(p, RELU, x, y),
        params,
        x[1],
        1,
        net=RELU,
    )  # a single example goes to your functions as it is
    assert one.ok
    with pytest.raises(ValueError, match="must be floating point"):
        jaxnet.check_grads(
            jaxnet.loss, jaxnet.manual_grads, params, jnp.zeros((2, 3), int), jnp.arange(2), net=RELU, kinks="nudge"
        )


def test_shape_mistakes_are_reported_not_raised():
    """A bias gradient left per example ([batch, n] instead of [n]) is a failing row naming the shapes."""
    params, x, y = verify.random_problem(NET, seed=5, n=5)

    def unsummed(p, x, y):
        g = _grads(p, x, y)
        g[1]["b"] = jnp.broadcast_to(g[1]["b"] / 5, (5, 3))
        return g

    report = jaxnet.check_grads(_loss, unsummed, params, x, y, hvp_directions=0)
    bad = {(r.path, r.witness): r.worst for r in report.failures()}
    assert bad == {
        ("[1]['b']", "jax.grad"): "shape (5, 3) != (3,)",
        ("[1]['b']", "finite diff"): "shape (5, 3) != (3,)",
    }


def test_check_per_example_takes_a_single_example():
    params, x, y = verify.random_problem(NET, seed=6, n=2)
    assert gradcheck.check_per_example(params, NET, x[0], y[0]).ok
