"""Sweeps (issue 8): every replica equals its configuration trained alone with fit."""

import dataclasses

import chex
import jax
import numpy as np
import optax
import pytest
from jax.extend import core as jex_core

import jaxnet
from jaxnet import contractions, data, sweep, train

from .helpers import lean

NET = jaxnet.mlp([2, 8, 3], "tanh")
X, Y = data.spiral(20, 3, seed=0)  # 60 examples


def _alone(replica, optimizer, epochs, batch, grads):
    key_init, key_train = jax.random.split(jax.random.key(replica.seed))
    net = dataclasses.replace(replica.net, l2=replica.l2_value)
    opt = optax.adam(replica.lr) if optimizer == "adam" else optax.sgd(replica.lr, momentum=replica.momentum or None)
    return train.fit(net, jaxnet.init_params(key_init, net), X, Y, opt, epochs, batch, key_train, grads=grads)


@pytest.mark.parametrize(
    "optimizer,grads", [("sgd", "manual"), pytest.param("adam", "autodiff", marks=pytest.mark.slow)]
)
def test_each_replica_equals_its_configuration_trained_alone(optimizer, grads):
    replicas = sweep.grid(
        NET, seeds=(0, 1), lr=(0.05, 0.2), l2=(0.0, 1e-2), momentum=(0.0, 0.9) if optimizer == "sgd" else (0.0,)
    )
    result = sweep.run(replicas, X, Y, optimizer, 3, 16, grads=grads, val=(X[:20], Y[:20]))
    assert len(result.params) == len(replicas) == (16 if optimizer == "sgd" else 8)
    for i in (0, 5, len(replicas) - 1):  # a few, each against its own fit
        alone = _alone(replicas[i], optimizer, 3, 16, grads)
        chex.assert_trees_all_close(result.params[i], alone.params, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(result.history[i]["train_loss"], alone.history["train_loss"], rtol=2e-5)


@pytest.mark.slow  # the main run: test_each_replica_equals_its_configuration_trained_alone
def test_groups_chunks_summary_and_memory_errors():
    nets = [NET, jaxnet.mlp([2, 4, 3], "relu")]
    replicas = sweep.grid(nets, seeds=(0, 1, 2), lr=(0.1, 0.3))
    whole = sweep.run(replicas, X, Y, "sgd", 2, 20)
    one_replica = sweep.estimate_bytes(NET, 20, 60, 1, "sgd")
    chunked = sweep.run(replicas, X, Y, "sgd", 2, 20, max_bytes=2 * one_replica)  # two replicas at a time
    # float rounding: 5e-6 apart on an H200 (likely its batched products of 6 and of 2 replicas rounding differently)
    chex.assert_trees_all_close(whole.params, chunked.params, rtol=2e-5, atol=1e-6)
    s = sweep.summary(whole)
    assert s["metric"] == "train_loss" and len(s["configs"]) == 4 and all(c["seeds"] == 3 for c in s["configs"])
    assert s["best"]["final"]["train_loss"][0] == min(c["final"]["train_loss"][0] for c in s["configs"])
    with pytest.raises(ValueError, match=r"one replica of .* needs about"):
        sweep.run(replicas, X, Y, "sgd", 1, 20, max_bytes=100)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        sweep.run(replicas, X, Y, "rmsprop", 1, 20)


@pytest.mark.slow
def test_cli_seeds_and_sweep(tmp_path, capsys):
    import json

    from jaxnet import cli

    args = [
        "train",
        "--preset",
        "000-spiral",
        "--epochs",
        "3",
        "--out",
        str(tmp_path),
        "--seeds",
        "2",
        "--sweep",
        "lr=0.1,1 hidden=8;4,4",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert (
        "sweep of 8 replicas (2 network group(s))" in out
        and "mean ± std over seeds:" in out
        and "best by mean val_loss" in out
    )
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert (
        len(saved["replicas"]) == 8 and saved["summary"]["metric"] == "val_loss" and (tmp_path / "sweep.png").exists()
    )
    assert {r["network"].split(" ")[0] for r in saved["replicas"]} == {"2-8-3", "2-4-4-3"}
    with pytest.raises(SystemExit):
        cli.main(["train", "--sweep", "batch=1,2"])
    assert cli.main(["train", "--preset", "cnn", "--seeds", "2", "--optimizer", "adamw", "--out", str(tmp_path)]) == 2


def _eqns(jaxpr, *names):
    """Equations of these primitives in a jaxpr, nested jaxprs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's Jaxpr
    return sum(
        (eqn.primitive.name in names) + sum(_eqns(sub, *names) for sub in jex_core.jaxprs_in_params(eqn.params))
        for eqn in jaxpr.eqns
    )


def _dots(jaxpr):
    """dot_general equations in a jaxpr, nested jaxprs included."""
    return _eqns(jaxpr, "dot_general")


_mT = jax.numpy.matrix_transpose
_PRODUCTS = {  # name: (function, lhs shape, rhs shape, rewritten)
    "x W, 2 inputs": (lambda a, b: a @ b, (4, 5, 2), (4, 2, 7), True),  # K = 2: unrolled outer products
    "δ Wᵀ, 3 outputs": (lambda a, b: a @ _mT(b), (4, 12, 3), (4, 20, 3), True),  # K = 3
    "xᵀ δ, 3 outputs": (lambda a, b: _mT(a) @ b, (4, 32, 20), (4, 32, 3), True),  # the example axis outer in both
    "δᵀ x, 3 outputs": (lambda a, b: jax.numpy.einsum("rbn,rbm->rnm", a, b), (4, 32, 3), (4, 32, 20), True),
    "xᵀ δ, two batch axes": (lambda a, b: _mT(a) @ b, (2, 3, 16, 4), (2, 3, 16, 9), True),
    "batch axis not leading": (lambda a, b: jax.numpy.einsum("mrk,krn->rmn", a, b), (5, 4, 2), (2, 4, 7), True),
    "xᵀ δ, batch axis last": (lambda a, b: jax.numpy.einsum("bmr,bnr->rmn", a, b), (32, 20, 4), (32, 3, 4), True),
    "x W, 3 outputs": (lambda a, b: a @ b, (4, 12, 20), (4, 20, 3), False),  # K inner in x: left a product
    "no small side": (lambda a, b: a @ b, (4, 12, 16), (4, 16, 20), False),
    "unbatched": (lambda a, b: a @ b, (5, 2), (2, 3), False),
}


_MAIN_PRODUCTS = ("xᵀ δ, 3 outputs", "x W, 3 outputs")


@pytest.mark.parametrize("name", lean(list(_PRODUCTS), lambda i, name: name in _MAIN_PRODUCTS))
def test_small_contractions_equal_the_products(name):
    """Each product written elementwise equals XLA's (float64), or is left a product."""
    product, lhs_shape, rhs_shape, rewritten = _PRODUCTS[name]
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, lhs_shape, np.float64)
    b = jax.random.normal(k2, rhs_shape, np.float64)
    f = jax.jit(lambda a, b: {"out": product(a, b) + 1.0})  # the product inside a jitted helper, as in jnp functions
    g = contractions.small_contractions(f)
    np.testing.assert_allclose(jax.jit(g)(a, b)["out"], f(a, b)["out"], rtol=1e-12)
    assert (_dots(jax.make_jaxpr(g)(a, b)) == 0) == rewritten


def test_mixed_precision_products_are_left_alone():
    a = jax.numpy.ones((4, 5, 3), jax.numpy.bfloat16)
    f = lambda a, b: jax.lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,))), preferred_element_type=np.float32)
    assert _dots(jax.make_jaxpr(contractions.small_contractions(f))(a, a.mT)) == 1


_REDUCTIONS = {  # name: (function, operand shape, dtype, rewritten); ≥ 1024 outputs unless said
    "max over 3 classes": (lambda a: jax.numpy.max(a, -1), (64, 16, 3), np.float64, True),  # softmax
    "sum over 3 classes": (lambda a: jax.numpy.sum(a, -1), (64, 16, 3), np.float64, True),
    "min over 2 × 3, minor axis included": (lambda a: jax.numpy.min(a, (1, 2)), (1024, 2, 3), np.float64, True),
    "max over an outer 2 × 4": (lambda a: jax.numpy.max(a, (0, 2)), (2, 32, 4, 32), np.float64, True),
    "float32 sum over 7": (lambda a: jax.numpy.sum(a, 1), (32, 7, 32), np.float32, True),
    "sum over 9": (lambda a: jax.numpy.sum(a, 1), (32, 9, 32), np.float64, False),
    "sum over a batch of 32": (lambda a: jax.numpy.sum(a, 1), (4, 32, 256), np.float64, False),
    "1023 outputs": (lambda a: jax.numpy.sum(a, -1), (31, 33, 3), np.float64, False),
    "1023 outputs of 2 × 3": (lambda a: jax.numpy.max(a, (1, 2)), (1023, 2, 3), np.float64, False),
    "integer sum": (lambda a: jax.numpy.sum(a, -1), (64, 16, 3), np.int32, False),
    "bfloat16 max": (lambda a: jax.numpy.max(a, -1), (64, 16, 3), jax.numpy.bfloat16, False),
    "one element": (lambda a: jax.numpy.sum(a, 1), (64, 1, 16), np.float64, False),
    "nothing to reduce": (lambda a: jax.numpy.sum(a, 1), (64, 0, 16), np.float64, False),
}


_MAIN_REDUCTIONS = ("max over 3 classes", "sum over 9", "1023 outputs")


@pytest.mark.parametrize("name", lean(list(_REDUCTIONS), lambda i, name: name in _MAIN_REDUCTIONS))
def test_small_reductions_equal_the_reductions(name):
    """Each small reduction written as pairwise elementwise operations equals XLA's, or is left alone."""
    reduce, shape, dtype, rewritten = _REDUCTIONS[name]
    a = (jax.random.normal(jax.random.key(1), shape, np.float64) * 10).astype(dtype)
    f = jax.jit(lambda a: reduce(a) * 2)  # inside a jitted helper, as in jnp functions
    g = contractions.small_contractions(f)
    tol = {"rtol": 1e-12} if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-5}  # float32: sums of ~±30
    np.testing.assert_allclose(np.asarray(jax.jit(g)(a), np.float64), np.asarray(f(a), np.float64), **tol)
    assert (_eqns(jax.make_jaxpr(g)(a), "reduce_sum", "reduce_max", "reduce_min") == 0) == rewritten
    assert (
        _eqns(
            jax.make_jaxpr(contractions.small_contractions(f, reductions=False))(a),
            "reduce_sum",
            "reduce_max",
            "reduce_min",
        )
        == 1
    )  # switched off: the reduction stays


@pytest.mark.parametrize("name", ["max", "min", "sum"])
def test_small_reductions_propagate_nans(name):
    """As NumPy's reductions do. (XLA:CPU's own max and min reductions of this size drop the
    NaNs in jax 0.10.2; the unrolled ones keep them.)"""
    a = np.arange(512 * 7 * 3, dtype=np.float64).reshape(512, 7, 3)  # ≥ 1024 outputs either way
    a[1, 6, 0] = a[2, 0, 2] = np.nan  # the last of an odd pairing, and the first
    reduce = getattr(jax.numpy, name)
    g = jax.jit(contractions.small_contractions(lambda a: (reduce(a, -1), reduce(a, 1))))
    for got, want in zip(g(a), (getattr(np, name)(a, -1), getattr(np, name)(a, 1))):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_small_sums_of_negative_zeros_are_positive_zero_as_in_xla():
    a = np.tile([[-0.0, -0.0, -0.0], [-0.0, 0.0, -0.0], [1.0, -1.0, -0.0], [-2.0, -0.0, 0.0]], (256, 1))
    got = jax.jit(contractions.small_contractions(lambda a: jax.numpy.sum(a, -1)))(a)  # 1024 sums
    np.testing.assert_array_equal(np.signbit(got), np.signbit(jax.jit(lambda a: jax.numpy.sum(a, -1))(a)))
    np.testing.assert_array_equal(got, np.tile([0.0, 0.0, 0.0, -2.0], 256))


def test_sharded_reductions_are_left_alone():
    """An explicit output sharding, or a reduced axis sharded over an explicit mesh (1 device here)."""
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((1,), ("r",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(mesh):
        rows = jax.device_put(np.ones((1024, 3)), NamedSharding(mesh, P("r", None)))  # 1024 rows over "r"
        cols = jax.device_put(np.ones((8, 1024)), NamedSharding(mesh, P("r", None)))  # 8 rows over "r"
        for f, a, left in [
            (lambda a: jax.lax.reduce_sum(a, (1,), out_sharding=P("r")), rows, True),
            (lambda a: jax.numpy.max(a, 0), cols, True),  # the sharded axis reduced
            (lambda a: jax.numpy.sum(a, 1), rows, False),
        ]:  # the sharded axis kept: rewritten
            g = contractions.small_contractions(f)
            assert (_eqns(jax.make_jaxpr(g)(a), "reduce_sum", "reduce_max") == 1) == left
            np.testing.assert_allclose(jax.jit(g)(a), jax.jit(f)(a))


def test_a_reduction_of_a_python_scalar_is_left_alone():
    g = contractions.small_contractions(lambda x: jax.lax.reduce_max(2.0, ()) + x)  # a scalar literal operand
    assert float(g(1.0)) == 3.0


def test_the_notes_small_network_has_its_small_products_rewritten():
    net = jaxnet.mlp([2, 20, 3], "relu", l2=1e-3)  # 2 inputs, 3 classes: every product has a small side
    params = jax.tree.map(
        lambda *a: np.stack(a), *[jaxnet.init_params(jax.random.key(s), net, np.float64) for s in range(4)]
    )
    idx = np.arange(4 * 256).reshape(4, 256) % len(X)  # 4 replicas × 256 examples: softmaxes of 1024 rows
    x, y = jax.numpy.asarray(X, np.float64), jax.numpy.asarray(Y)
    plain = jax.vmap(lambda p, i: jaxnet.value_and_manual_grads(p, net, x[i], y[i]))
    rewritten = contractions.small_contractions(plain)
    # six products; x W into the 3 outputs and the unused δ W₁ᵀ (K = 20, inner in δ) stay products
    assert _dots(jax.make_jaxpr(plain)(params, idx)) == 6 and _dots(jax.make_jaxpr(rewritten)(params, idx)) == 2
    # the softmaxes' max and sum over 3 classes (of the loss and of its delta) are unrolled; the
    # loss's mean, the L2 sums, the bias gradients over 256 examples stay reductions, and the two
    # weight gradients' broadcast sums are new ones
    reductions = [_eqns(jax.make_jaxpr(f)(params, idx), "reduce_sum", "reduce_max") for f in (plain, rewritten)]
    assert reductions == [9, 7]
    chex.assert_trees_all_close(jax.jit(rewritten)(params, idx), jax.jit(plain)(params, idx), rtol=1e-12)


@pytest.mark.parametrize("backend,rewritten", [("cpu", True), ("gpu", False)])
def test_the_rewrite_is_on_by_default_on_the_cpu_only(monkeypatch, backend, rewritten):
    """On a GPU the rewrite gained nothing, and without it the products are computed as fit's are (TF32 or not)."""
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    net, r = jaxnet.mlp([2, 8, 3], "relu"), 2
    params = jax.tree.map(lambda *a: np.stack(a), *[jaxnet.init_params(jax.random.key(s), net) for s in range(r)])
    state = jax.vmap(lambda p, h: optax.inject_hyperparams(optax.sgd)(**h).init(p))(
        params, {"learning_rate": np.ones(r, np.float32), "momentum": np.zeros(r, np.float32)}
    )
    keys = jax.random.split(jax.random.key(0), r)
    args = (params, state, keys, 1, np.arange(r), np.zeros(r, np.float32), X.astype(np.float32), Y, [])
    epoch = sweep.group_epoch(net, sweep.replica_optimizer("sgd"), 20, len(X), "manual")
    dots = _dots(jax.make_jaxpr(epoch)(*args))
    # the step's six products (forward 2, backward 4 with the unused δ₁ W₁ᵀ) all have a side ≤ 8
    assert dots == (0 if rewritten else 6)
