"""Several epochs per compiled call (``fit(..., epochs_per_call=...)``): the same training, history,
divergence and early stopping as one epoch per call, bit for bit; ``on_epoch`` at the calls' ends."""

import chex
import jax
import jax.monitoring
import numpy as np
import optax
import pytest

import jaxnet
from jaxnet import data, train

NET = jaxnet.mlp([2, 8, 3], "tanh", l2=1e-3)
X, Y = data.spiral(20, 3, seed=0)  # 60 examples
VAL = data.spiral(10, 3, seed=1)
BN_NET = jaxnet.sequential(
    (2,), [jaxnet.Dense(8), jaxnet.BatchNorm(), jaxnet.Activation("relu"), jaxnet.Dropout(0.2), jaxnet.Dense(3)]
)
REG_NET = jaxnet.mlp([1, 6, 1], "sigmoid", "squared_error", "sum")
XR, YR = data.regression_1d(n=40, seed=0)

_LOWERED = [0]  # programs lowered so far in this process
jax.monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: _LOWERED.__setitem__(
        0, _LOWERED[0] + (name == "/jax/core/compile/jaxpr_to_mlir_module_duration")
    )
)
OPT = optax.adam(1e-2)  # one optimizer object: every fit below shares its compiled program
CASES = {
    "mlp+val+eval_every+check": (NET, X, Y, dict(batch_size=16, val=VAL, eval_every=3, check_every=2)),
    "batchnorm+dropout": (BN_NET, X, Y, dict(batch_size=20, val=VAL)),
    "full-batch regression": (REG_NET, XR, YR, dict(batch_size=40)),
}


def _fit(case, epochs_per_call, epochs=9, params=None, **extra):
    net, x, y, kwargs = CASES[case]
    params = jaxnet.init_params(jax.random.key(0), net) if params is None else params
    return train.fit(
        net, params, x, y, OPT, epochs, key=jax.random.key(1), epochs_per_call=epochs_per_call, **kwargs, **extra
    )


def _assert_same_run(got, want, resumed=False):
    chex.assert_trees_all_equal((got.params, got.opt_state, got.state), (want.params, want.opt_state, want.state))
    assert (got.epoch, got.step, got.stopped_early) == (want.epoch, want.step, False)
    assert resumed or got.worst_gap == want.worst_gap  # the largest gap of this call's epochs
    assert got.history.keys() == want.history.keys()
    for name in want.history:
        np.testing.assert_array_equal(got.history[name], want.history[name], err_msg=name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("epochs_per_call", [4, "auto", 100])
def test_several_epochs_a_call_train_exactly_as_one(case, epochs_per_call):
    one = _fit(case, 1)
    _assert_same_run(_fit(case, epochs_per_call), one)
    assert len(one.history["train_step_loss"]) == 9
    other_key = train.fit(
        *CASES[case][:1], one.params, *CASES[case][1:3], OPT, 1, key=jax.random.key(9), **CASES[case][3]
    )
    assert not np.array_equal(jax.tree.leaves(other_key.params)[0], jax.tree.leaves(one.params)[0])


def test_on_epoch_runs_at_the_ends_of_calls_aligned_to_multiples():
    """k = 4 over 10 epochs: calls end at 4, 8 and 10; resumed at 5 they end at 8 and 10 (the
    same boundaries), and on_epoch sees the params, step and metrics of that epoch."""
    calls = []
    on_epoch = lambda epoch, params, opt_state, step, metrics, state=None: calls.append((epoch, step, params, metrics))
    full = _fit("mlp+val+eval_every+check", 4, epochs=10, on_epoch=on_epoch)
    assert [c[:2] for c in calls] == [(4, 12), (8, 24), (10, 30)]
    per_epoch = []
    _fit("mlp+val+eval_every+check", 1, epochs=8, on_epoch=lambda e, p, *rest, **kw: per_epoch.append((e, p)))
    chex.assert_trees_all_equal(calls[1][2], per_epoch[7][1])  # epoch 8's params
    assert calls[2][3]["train_step_loss"] == full.history["train_step_loss"][-1]
    calls.clear()
    history = {k: v[:5] for k, v in full.history.items()}
    five = _fit("mlp+val+eval_every+check", 1, epochs=5)
    rest = _fit(
        "mlp+val+eval_every+check",
        4,
        epochs=10,
        on_epoch=on_epoch,
        history=history,
        params=five.params,
        opt_state=five.opt_state,
        start_epoch=5,
        start_step=five.step,
    )
    assert [c[0] for c in calls] == [8, 10]
    assert rest.history is history
    _assert_same_run(rest, full, resumed=True)


def test_by_default_on_epoch_runs_after_every_epoch():
    epochs = []
    _fit("full-batch regression", None, epochs=5, on_epoch=lambda e, *rest, **kw: epochs.append(e))
    assert epochs == [1, 2, 3, 4, 5]


def _diverging(epochs_per_call):
    net = jaxnet.mlp([2, 8, 3], "relu")
    params = jaxnet.init_params(jax.random.key(0), net)
    seen = []
    with pytest.raises(train.TrainingDiverged) as info:
        train.fit(
            net,
            params,
            X * 1e2,
            Y,
            train.sgd(30.0),
            40,
            10,
            jax.random.key(5),
            epochs_per_call=epochs_per_call,
            on_epoch=lambda e, *rest, **kw: seen.append(e),
        )
    return info.value, seen


def test_a_divergence_inside_a_call_is_reported_as_one_epoch_at_a_time():
    """The same epoch, step and last good state as one epoch per call; on_epoch ran up to the
    epoch before it."""
    one, seen_one = _diverging(1)
    many, seen_many = _diverging(50)
    assert 1 < one.epoch < 40, "the setting must diverge inside the call, after its first epoch"
    assert (many.epoch, many.step) == (one.epoch, one.step)
    chex.assert_trees_all_equal((many.params, many.opt_state), (one.params, one.opt_state))
    assert seen_many == [one.epoch - 1] and seen_one == list(range(1, one.epoch))


def test_early_stopping_inside_a_call_stops_where_one_epoch_a_call_does():
    flipped = (Y + 1) % 3  # a validation set that training can only get worse on
    runs = [
        train.fit(NET, jaxnet.init_params(jax.random.key(0), NET), X, Y, OPT, 50, 20, jax.random.key(4),
                  val=(X, flipped), patience=2, epochs_per_call=k)
        for k in (1, 50)
    ]  # fmt: skip
    assert runs[0].stopped_early and runs[0].epoch < 50
    for got in runs[1:]:
        assert (got.epoch, got.step, got.stopped_early) == (runs[0].epoch, runs[0].step, True)
        chex.assert_trees_all_equal((got.params, got.opt_state), (runs[0].params, runs[0].opt_state))
        assert got.history == runs[0].history


def test_the_auto_pacer_aims_at_a_second_a_call():
    pacer = train._Pacer("auto")
    assert pacer.count(0, 1000) == 1
    pacer.took(2.5, 1)  # the first call compiled: still one epoch
    assert pacer.count(1, 1000) == 1
    pacer.took(0.004, 1)
    assert pacer.count(2, 1000) == int(train.CALL_SECONDS / 0.004)
    assert pacer.count(990, 1000) == 10  # never past the last epoch
    pacer.took(1e-7, 1)
    assert pacer.count(0, 10**6) == train.MAX_EPOCHS_PER_CALL
    fixed = train._Pacer(4)
    assert [fixed.count(e, 10) for e in (0, 3, 4, 8)] == [4, 1, 4, 2]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "fast"])
def test_epochs_per_call_is_checked(bad):
    with pytest.raises(ValueError, match=f"epochs_per_call must be a positive integer or 'auto', got {bad!r}"):
        _fit("full-batch regression", bad, epochs=2)


@pytest.mark.slow  # the Python loop is the CPU's path for convolutional nets only
def test_the_python_loop_of_a_conv_net_runs_several_epochs_a_call_alike():
    cnn = jaxnet.sequential(
        (4, 4, 1), [jaxnet.Conv2D(2, 3, padding="SAME", activation="tanh"), jaxnet.Flatten(), jaxnet.Dense(3)]
    )
    x = np.random.default_rng(0).normal(size=(24, 4, 4, 1)).astype(np.float32)
    y = np.arange(24) % 3
    params = jaxnet.init_params(jax.random.key(0), cnn)
    run = lambda k: train.fit(
        cnn, params, x, y, OPT, 5, 8, jax.random.key(1), val=(x, y), eval_every=2, epochs_per_call=k
    )
    runs = [run(1)]
    lowered = _LOWERED[0]
    runs += [run(3), run("auto")]
    assert _LOWERED[0] == lowered  # every count the same programs (the reports stacked on the host)
    for got in runs[1:]:
        _assert_same_run(got, runs[0])


def test_the_python_loop_epoch_refuses_to_be_traced():
    """Under jit, make_epoch's Python loop would unroll into one program of every step (a conv net's
    epoch compiled whole, minutes for long epochs): it says so instead."""
    cnn = jaxnet.sequential((4, 4, 1), [jaxnet.Conv2D(2, 3, padding="SAME"), jaxnet.Flatten(), jaxnet.Dense(3)])
    params = jaxnet.init_params(jax.random.key(0), cnn)
    epoch = train.make_epoch(cnn, OPT, 8, 24, loop="python", donate=False)
    x, y = np.zeros((24, 4, 4, 1), np.float32), np.arange(24) % 3
    with pytest.raises(TypeError, match="Python loop of jitted steps, and under jit it would unroll"):
        jax.jit(epoch)(params, OPT.init(params), 0, jax.random.key(1), x, y)
