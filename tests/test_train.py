"""Training: steps, scanned epochs, optimizers, metrics, spot checks, divergence, resume."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnet
from jaxnet import checkpoint, data, train
from jaxnet.activations import ACTIVATIONS

from .helpers import assert_grads_close, lean

NET = jaxnet.mlp([2, 8, 3], "tanh", l2=1e-3)
X, Y = data.spiral(20, 3, seed=0)  # 60 examples


def _params(dtype=jnp.float32):
    return jaxnet.init_params(jax.random.key(0), NET, dtype)


def test_sgd_step_is_p_minus_lr_g():
    params = _params(jnp.float64)
    g = jaxnet.manual_grads(params, NET, X, Y)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, g)
    step = train.make_step(NET, train.sgd(0.5))
    opt = train.sgd(0.5)
    new, _, value = step(jax.tree.map(jnp.array, params), opt.init(params), jnp.asarray(X), jnp.asarray(Y))
    chex.assert_trees_all_close(new, expected, rtol=1e-13)
    assert float(value) == pytest.approx(float(jaxnet.loss(params, NET, X, Y)), rel=1e-13)


@pytest.mark.parametrize(
    "optimizer",
    lean([train.sgd(0.3), optax.sgd(0.1, momentum=0.9), optax.adam(1e-2)], lambda i, o: i == 0),
    ids=["sgd", "momentum", "adam"],
)
def test_manual_and_autodiff_training_agree(optimizer):
    runs = [
        train.fit(NET, _params(), X, Y, optimizer, 3, 16, jax.random.key(1), grads=g) for g in ("manual", "autodiff")
    ]
    np.testing.assert_allclose(runs[0].history["train_loss"], runs[1].history["train_loss"], rtol=1e-5)
    assert_grads_close(runs[0].params, runs[1].params, 1e-5, "autodiff-trained params")
    assert runs[0].history["train_loss"][-1] < runs[0].history["train_loss"][0]


def test_full_batch_gradient_descent_is_the_plain_loop():
    """batch_size = N is note 001's full-batch GD: p ← p − γ ∂L/∂p, once per epoch."""
    params = _params(jnp.float64)
    result = train.fit(NET, params, X, Y, train.sgd(0.2), 4, len(X), jax.random.key(2))
    for _ in range(4):
        params = jax.tree.map(lambda p, g: p - 0.2 * g, params, jaxnet.manual_grads(params, NET, X, Y))
    assert result.step == 4
    chex.assert_trees_all_close(result.params, params, rtol=1e-12)


def test_partial_batch_is_dropped_and_nothing_retraces():
    result = train.fit(NET, _params(), X, Y, optax.adam(1e-2), 3, 25, jax.random.key(3), val=(X, Y), max_traces=1)
    assert result.step == 3 * (60 // 25)  # 2 steps an epoch, the 10 left over dropped
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 60\]"):
        train.make_epoch(NET, optax.adam(1e-2), 61, 60)


def test_retrace_is_caught():
    run_epoch = train.make_epoch(NET, train.sgd(0.1), 10, 60, max_traces=1)
    opt = train.sgd(0.1)
    args = lambda p, x: (p, opt.init(p), jnp.int32(0), jax.random.key(0), x, jnp.asarray(Y))
    run_epoch(*args(_params(), jnp.asarray(X, jnp.float32)))
    with pytest.raises(AssertionError, match=r"retrac|trace"):
        run_epoch(*args(_params(jnp.float64), jnp.asarray(X, jnp.float64)))  # a new dtype: a second trace


def test_metrics():
    params = _params()
    m = train.evaluate(params, NET, X, Y)
    out = np.asarray(jaxnet.forward(params, NET, X))
    assert m["accuracy"] == pytest.approx(np.mean(out.argmax(1) == Y))
    reg = jaxnet.mlp([2, 4, 2], "tanh", "squared_error")
    p = jaxnet.init_params(jax.random.key(0), reg, jnp.float64)
    y = np.random.default_rng(0).normal(size=(60, 2))
    f = np.asarray(jaxnet.forward(p, reg, X))
    m = train.evaluate(p, reg, X, y)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((f - y) ** 2)))
    assert m["r2"] == pytest.approx(1 - np.sum((f - y) ** 2) / np.sum((y - y.mean(0)) ** 2))


def test_early_stopping_returns_the_best_params():
    flipped = (Y + 1) % 3  # a validation set that training can only get worse on
    result = train.fit(NET, _params(), X, Y, optax.adam(3e-2), 50, 20, jax.random.key(4), val=(X, flipped), patience=2)
    assert result.stopped_early and result.epoch < 50
    best = int(np.argmin(result.history["val_loss"]))
    assert train.evaluate(result.params, NET, X, flipped)["loss"] == pytest.approx(
        result.history["val_loss"][best], rel=1e-6
    )


def test_divergence_names_epoch_and_step():
    with pytest.raises(train.TrainingDiverged, match=r"not finite at epoch \d+, step \d+") as info:
        train.fit(
            jaxnet.mlp([2, 8, 3], "relu"),
            jaxnet.init_params(jax.random.key(0), jaxnet.mlp([2, 8, 3], "relu")),
            X * 1e3,
            Y,
            train.sgd(1e6),
            20,
            10,
            jax.random.key(5),
        )
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(info.value.params))


def test_divergence_in_the_last_update_of_an_epoch_keeps_the_state_before_it():
    """Full batch: each epoch is one step, so the blow-up shows only in the next evaluation."""
    net = jaxnet.mlp([2, 8, 3], "relu")
    p0 = jaxnet.init_params(jax.random.key(0), net)
    with pytest.raises(train.TrainingDiverged, match=r"at epoch (\d+), step \1\b") as info:
        train.fit(net, p0, X * 1e3, Y, train.sgd(1e6), 20, len(X), jax.random.key(5))
    assert np.isfinite(float(jaxnet.loss(info.value.params, net, X * 1e3, Y)))


def test_spot_check_catches_a_wrong_derivation(monkeypatch):
    with jax.default_matmul_precision("highest"):  # float32 products in float32 (a GPU's default TF32 alone gave 1e-3)
        good = train.fit(NET, _params(), X, Y, train.sgd(0.1), 2, 20, jax.random.key(6), check_every=1)
    assert good.worst_gap < 1e-4
    act = ACTIVATIONS["tanh"]
    monkeypatch.setitem(ACTIVATIONS, "tanh", dataclasses.replace(act, deriv=lambda z, a: jnp.ones_like(z)))
    # fit jits new closures on every call: they trace afresh, through the mutated derivative
    bad = train.fit(NET, _params(), X, Y, train.sgd(0.1), 2, 20, jax.random.key(6), check_every=1)
    monkeypatch.undo()
    assert bad.worst_gap > 1e-2
    assert "grad_gap" in bad.history


def test_resume_is_bitwise_identical(tmp_path):
    opt, key, p0 = optax.adam(1e-2), jax.random.key(7), _params()
    full = train.fit(NET, p0, X, Y, opt, 4, 16, key)
    half = train.fit(NET, p0, X, Y, opt, 2, 16, key)
    path = tmp_path / "ck.npz"
    checkpoint.save(
        path, net=NET, params=half.params, opt_state=half.opt_state, epoch=half.epoch, step=half.step, key=key
    )
    ck = checkpoint.load(path, NET, opt.init(p0))
    rest = train.fit(
        NET, ck.params, X, Y, opt, 4, 16, ck.key, opt_state=ck.opt_state, start_epoch=ck.epoch, start_step=ck.step
    )
    chex.assert_trees_all_equal(full.params, rest.params)
    assert rest.step == full.step and rest.history["train_loss"] == full.history["train_loss"][2:]


CNN = jaxnet.sequential(
    (4, 4, 1), [jaxnet.Conv2D(2, 3, padding="SAME", activation="tanh"), jaxnet.Flatten(), jaxnet.Dense(3)]
)


@pytest.mark.slow  # the python loop is the CPU's path for conv nets only; -m slow checks both
@pytest.mark.parametrize("net", [NET, CNN], ids=["mlp", "cnn"])
def test_python_loop_epoch_equals_the_scan(net):
    """loop="python" (the default for convolutions on the CPU) runs the scan's steps one jitted call each."""
    x = np.random.default_rng(0).normal(size=(60, *net.input_shape))
    params = jaxnet.init_params(jax.random.key(0), net, jnp.float64)
    opt = optax.adam(1e-2)
    out = {}
    for loop in ("scan", "python"):
        chex.clear_trace_counter()  # chex counts traces per function definition, across make_epoch calls
        run_epoch = train.make_epoch(net, opt, 16, 60, check_every=2, max_traces=1, loop=loop)
        p, s, step = jax.tree.map(jnp.array, params), opt.init(params), 0
        for epoch in range(2):
            p, s, step, losses, gaps, _ = run_epoch(p, s, step, jax.random.key(epoch), jnp.asarray(x), jnp.asarray(Y))
        out[loop] = (p, losses, gaps, int(step))
    assert out["scan"][3] == out["python"][3] == 6
    chex.assert_trees_all_close(out["scan"][:2], out["python"][:2], rtol=1e-12)
    assert np.count_nonzero(np.asarray(out["python"][2])) == np.count_nonzero(np.asarray(out["scan"][2])) > 0
    with pytest.raises(ValueError, match="loop must be"):
        train.make_epoch(net, opt, 16, 60, loop="while")
    auto = train.make_epoch(net, opt, 16, 60)  # a Python loop exactly for convolutional nets on the CPU
    assert (getattr(auto, "__name__", "") == "python_epoch") == (net is CNN and jax.default_backend() == "cpu")
    step = jnp.asarray(0)
    p = jax.tree.map(jnp.array, params)
    auto(p, opt.init(p), step, jax.random.key(0), jnp.asarray(x), jnp.asarray(Y))
    assert int(step) == 0  # the caller's step array is not donated


@pytest.mark.parametrize(
    "n", lean([0, 1, 2, 300, 1024, 1626, 65536], lambda i, n: n != 1024 and n != 65536)
)  # 1626: two sort rounds; 2¹⁶: 16-bit positions
def test_permutation_is_jax_random_permutation(n):
    keys = jax.random.split(jax.random.key(n), 3)
    ours = jax.jit(jax.vmap(lambda k: train.permutation(k, n)))(keys)
    theirs = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_stable_argsort_keeps_ties_in_order():
    u = jnp.array([5, 3, 5, 3, 1, 5, 0, 2**32 - 1, 2**32 - 1, 3, 2**31, 2**31 - 1], jnp.uint32)
    np.testing.assert_array_equal(train._stable_argsort_u32(u), np.argsort(np.asarray(u), kind="stable"))
    np.testing.assert_array_equal(train._stable_argsort_u32(u[:2]), [1, 0])


def test_each_epoch_is_shuffled_by_its_own_documented_key():
    """Epoch e (1, 2, ...) orders the examples by ``jax.random.permutation(k, n)`` with
    ``k = split(fold_in(key, e))[0]`` (``epoch_key``, ``make_epoch``): ``fit`` equals plain SGD
    steps over those batches, the remainder dropped. With the same key every epoch (no
    ``fold_in``) the orders, the dropped examples and so the params would differ."""
    key, lr, batch, epochs = jax.random.key(8), 0.2, 25, 3  # 2 steps an epoch, 10 examples dropped
    params = _params(jnp.float64)
    result = train.fit(NET, params, X, Y, train.sgd(lr), epochs, batch, key)
    step, opt = train.make_step(NET, train.sgd(lr)), train.sgd(lr)  # p ← p − lr ∂L/∂p (test_sgd_step_is_p_minus_lr_g)
    params, state, x = jax.tree.map(jnp.array, params), opt.init(params), np.asarray(X, np.float64)
    orders = []
    for epoch in range(1, epochs + 1):
        k_perm, _ = jax.random.split(jax.random.fold_in(key, epoch))
        orders.append(np.asarray(jax.random.permutation(k_perm, len(X))))
        for i in range(len(X) // batch):
            idx = orders[-1][i * batch : (i + 1) * batch]
            params, state, _ = step(params, state, x[idx], Y[idx])
    assert len({tuple(o) for o in orders}) == epochs  # a new shuffle every epoch
    assert result.step == epochs * 2
    chex.assert_trees_all_close(result.params, params, rtol=1e-12, atol=0)


def test_eval_every_changes_what_is_evaluated_not_the_training(tmp_path):
    """eval_every=3 over 7 epochs: the same params, optimizer state and step losses as evaluating
    every epoch; the metrics only at epochs 3, 6 and the last (NaN elsewhere, one entry per epoch)."""
    params = jaxnet.init_params(jax.random.key(0), NET)
    val = data.spiral(10, 3, seed=1)
    kwargs = dict(optimizer=optax.adam(1e-2), epochs=7, batch_size=16, key=jax.random.key(1), val=val)
    every = train.fit(NET, params, X, Y, **kwargs)
    sparse = train.fit(NET, params, X, Y, eval_every=3, **kwargs)
    chex.assert_trees_all_equal((sparse.params, sparse.opt_state), (every.params, every.opt_state))
    np.testing.assert_array_equal(sparse.history["train_step_loss"], every.history["train_step_loss"])
    assert set(sparse.history) == set(every.history)
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        got, want = np.asarray(sparse.history[name]), np.asarray(every.history[name])
        assert len(got) == 7 and list(np.flatnonzero(np.isfinite(got)) + 1) == [3, 6, 7], name
        np.testing.assert_array_equal(got[[2, 5, 6]], want[[2, 5, 6]])
    from jaxnet import plots

    plots.curves(sparse.history, str(tmp_path / "curves.png"))  # the evaluated epochs only
    with pytest.raises(ValueError, match="eval_every must be a positive integer"):
        train.fit(NET, params, X, Y, eval_every=0, **kwargs)


def test_eval_every_from_the_command_line(tmp_path):
    import json

    from jaxnet import cli

    args = ["train", "--preset", "000-spiral", "--epochs", "5", "--eval-every", "2", "--quiet", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert [v is not None and np.isfinite(v) for v in m["history"]["val_loss"]] == [False, True, False, True, True]
    assert all(np.isfinite(m["history"]["train_step_loss"]))


@pytest.mark.parametrize("n", [1, 45, 512, 1257])
def test_evaluate_in_chunks_is_the_whole_batch_metrics(n, monkeypatch):
    """evaluate's chunked sums (EVAL_CHUNK rows at a time, the last padded and masked) give the
    metrics of the whole batch at once (metric_arrays): classification and regression."""
    monkeypatch.setattr(train, "EVAL_CHUNK", 64)  # several chunks and a padded one, small programs
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 2))
    for net, y in [
        (NET, rng.integers(0, 3, size=n)),
        (jaxnet.mlp([2, 8, 2], "tanh", "squared_error", "sum", l2=1e-2, l2_bias=True), rng.normal(size=(n, 2))),
        (jaxnet.mlp([2, 8, 3], "tanh", "sigmoid_cross_entropy"), rng.uniform(size=(n, 3))),
    ]:
        params = jaxnet.init_params(jax.random.key(n), net, jnp.float64)
        whole = train.metric_arrays(params, net, jnp.asarray(x), jnp.asarray(y))
        chunked = train.evaluate(params, net, x, y)
        assert set(chunked) == set(whole)
        for k in whole:
            if n == 1 and k == "r2":
                continue  # one target: no spread, R² undefined both ways
            np.testing.assert_allclose(chunked[k], float(whole[k]), rtol=1e-12, err_msg=k)
        # and both are the metrics' definitions, computed here independently
        f = np.asarray(jaxnet.forward(params, net, x))
        np.testing.assert_allclose(chunked["loss"], float(jaxnet.loss(params, net, x, y, train=False)), rtol=1e-12)
        if net.loss == "softmax_cross_entropy":
            assert chunked["accuracy"] == np.mean(f.argmax(axis=1) == y)
        elif net.loss == "sigmoid_cross_entropy":
            assert chunked["accuracy"] == np.mean((f > 0) == (y > 0.5))  # every output counted
        else:
            np.testing.assert_allclose(chunked["rmse"], np.sqrt(np.mean((f - y) ** 2)), rtol=1e-12)
            if n > 1:
                r2 = 1 - np.sum((f - y) ** 2) / np.sum((y - y.mean(axis=0)) ** 2)
                np.testing.assert_allclose(chunked["r2"], r2, rtol=1e-12)
