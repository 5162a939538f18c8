"""SimpleRNN and LSTM (jaxnet.recurrent): hand-written backpropagation through time against
autodiff and finite differences, alone and in networks, and red on classic BPTT mistakes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import checkpoint, layers, verify
from jaxnet.recurrent import LSTM, SimpleRNN
from tests.helpers import check_network_grads, lean

D = 3  # input features per step
ALL = {"x", "params['Wx']", "params['Wh']", "params['b']"}


def draw(layer, t, n=2, seed=0, dtype=jnp.float64):
    """Params and inputs for ``layer`` alone, chosen so that the state neither vanishes nor saturates:

    - ``Wx ~ N(0, 1/D)`` and ``x ~ N(0, 1)``: the input term of each pre-activation has unit variance;
    - ``Wh = 0.9 [Q_1 … Q_G]``, each ``Q`` a random orthogonal H × H block: every singular value of
      each gate's recurrent map is 0.9, so the recurrent term neither grows step after step (no
      saturation) nor collapses (``h_{t−1} Wh`` keeps 0.9 of the state's norm);
    - ``b ~ N(0, 1/4)``, no bias zero; the LSTM's forget block + 1, as :meth:`LSTM.init` starts it,
      so the cell path carries over many steps.

    :func:`test_the_drawn_state_neither_vanishes_nor_saturates` measures it over T = 64."""
    rng = np.random.default_rng(seed)
    shapes = layer.param_shapes((t, D))
    h, width = shapes["Wh"]
    blocks = [np.linalg.qr(rng.normal(size=(h, h)))[0] for _ in range(width // h)]
    b = 0.5 * rng.normal(size=width)
    if isinstance(layer, LSTM):
        b[h : 2 * h] += 1.0
    params = {
        "Wx": rng.normal(size=(D, width)) / np.sqrt(D),
        "Wh": 0.9 * np.concatenate(blocks, axis=1),
        "b": b,
    }
    x = rng.normal(size=(n, t, D))
    return {k: jnp.asarray(v, dtype) for k, v in params.items()}, jnp.asarray(x, dtype)


def paths(report):
    return {row.path for row in report.failures()}


# --- each layer alone ----------------------------------------------------------------------------

KINDS = {"rnn": SimpleRNN, "lstm": LSTM}
GRID = [(kind, sequences, t) for kind in KINDS for sequences in (False, True) for t in (1, 4, 64)]
MAIN_CHECK = ("lstm", False, 4)  # the main run's case, without the Hessian-vector witness


@pytest.mark.parametrize(
    "kind, sequences, t",
    lean(GRID, lambda i, case: case == MAIN_CHECK),
    ids=[f"{k}-{'seq' if s else 'last'}-T{t}" for k, s, t in GRID],
)
def test_check_layer_float64(kind, sequences, t):
    """Float64: every output against the autodiff VJP (rtol 1e-10), finite differences, the
    forward-mode dot-product test and (but in the main run's case, where compiling it would
    double the time) the Hessian-vector witness, for one random cotangent."""
    layer = KINDS[kind](4, return_sequences=sequences)
    params, x = draw(layer, t, seed=t)
    hvp = 0 if (kind, sequences, t) == MAIN_CHECK else 1
    report = jaxnet.check_layer(layer, params, x, cotangents=1, hvp_directions=hvp)
    assert report.ok, str(report)
    assert {row.path for row in report.leaves} == ALL
    assert {"jax.vjp", "finite diff", "jvp vs yours"} <= {row.witness.split(" · ")[0] for row in report.leaves}
    assert report.leaves[0].rtol == 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_check_layer_float64_three_cotangents_at_t64(kind):
    """The check_layer defaults (three cotangents, Hessian-vector) over 64 steps, every state out."""
    layer = KINDS[kind](5, return_sequences=True)
    params, x = draw(layer, 64, n=3, seed=5)
    report = jaxnet.check_layer(layer, params, x)
    assert report.ok, str(report)


F32 = [(kind, sequences) for kind in KINDS for sequences in (False, True)]


@pytest.mark.parametrize("kind, sequences", lean(F32, lambda i, case: False), ids=[f"{k}-{s}" for k, s in F32])
def test_check_layer_float32(kind, sequences):
    """Float32 on a smaller grid (T = 5): the float32 tolerances (1e-4 vs autodiff)."""
    layer = KINDS[kind](3, return_sequences=sequences)
    params, x = draw(layer, 5, seed=7, dtype=jnp.float32)
    report = jaxnet.check_layer(layer, params, x, cotangents=1)
    assert report.ok, str(report)
    assert report.leaves[0].rtol == 1e-4


@pytest.mark.parametrize("kind", lean(list(KINDS), lambda i, kind: kind == "lstm"))
def test_jit_and_eager_agree(kind):
    """The forward pass (output and residuals) and the backward pass, jitted and eager."""
    layer = KINDS[kind](4, return_sequences=True)
    params, x = draw(layer, 4, seed=1)
    eager = layer.fwd(params, x)
    jitted = jax.jit(layer.fwd)(params, x)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    dy = jnp.asarray(np.random.default_rng(2).normal(size=eager[0].shape))
    for a, b in zip(
        jax.tree.leaves(layer.bwd(params, eager[1], dy)), jax.tree.leaves(jax.jit(layer.bwd)(*[params, eager[1], dy]))
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.slow  # a statement about the test data, not the layers
@pytest.mark.parametrize("kind", KINDS)
def test_the_drawn_state_neither_vanishes_nor_saturates(kind):
    """The test problem of :func:`draw` over T = 64 measured: the state stays away from 0 at every
    step, and the tanh and σ units mostly away from saturation (their derivatives not ~0)."""
    layer = KINDS[kind](8, return_sequences=True)
    params, x = draw(layer, 64, n=4, seed=3)
    h, residuals = layer.fwd(params, x)  # [4, 64, 8]
    typical = jnp.mean(jnp.abs(h), axis=(0, 2))  # mean |h_t| per step: [T]
    assert float(jnp.min(typical)) > 0.1 and float(jnp.max(typical)) < 0.8, typical
    if kind == "rnn":
        assert 0.3 < float(jnp.mean(1 - h**2)) < 0.9  # tanh' of the state: RNN measured 0.5
        assert float(jnp.mean(jnp.abs(h) > 0.99)) < 0.1  # tanh' < 0.02: measured 4 %
    else:
        i, f, g, o = jnp.split(residuals.gates, 4, axis=-1)  # each [4, 64, 8]
        sigmoids = jnp.stack([i, f, o])
        assert float(jnp.mean((sigmoids < 0.02) | (sigmoids > 0.98))) < 0.05  # measured 1 %
        assert float(jnp.mean(1 - g**2)) > 0.3 and float(jnp.mean(1 - jnp.tanh(residuals.c) ** 2)) > 0.3
        assert 0.2 < float(jnp.mean(jnp.abs(residuals.c))) < 1.5  # the cell neither empties nor runs away


def test_shapes_registry_and_a_checkpoint_round_trip(tmp_path):
    rnn, lstm = SimpleRNN(5), LSTM(4, return_sequences=True)
    assert rnn.output_shape((7, 3)) == (5,) and lstm.output_shape((7, 3)) == (7, 4)
    assert rnn.param_shapes((7, 3)) == {"Wx": (3, 5), "Wh": (5, 5), "b": (5,)}
    assert lstm.param_shapes((7, 3)) == {"Wx": (3, 16), "Wh": (4, 16), "b": (16,)}
    assert lstm.weights((7, 3)) == ("Wx", "Wh") and lstm.kink_gaps(None) is None
    assert layers.layer_kind("SimpleRNN") is SimpleRNN and layers.layer_kind("LSTM") is LSTM
    net = jaxnet.sequential((6, 3), [SimpleRNN(5, True), lstm, jaxnet.Flatten(), jaxnet.Dense(2)])
    params = verify.draw_params(net, np.random.default_rng(0), jnp.float32)
    checkpoint.save(tmp_path / "rnn.npz", net=net, params=params)
    assert checkpoint.load(tmp_path / "rnn.npz").net == net


@pytest.mark.parametrize("kind", lean(list(KINDS), lambda i, kind: kind == "lstm"))
def test_init_glorot_weights_and_the_lstm_forget_bias(kind):
    """Glorot-normal Wx and Wh from two keys split from the layer's; zero biases but the LSTM's
    forget gate (b[H:2H] = 1)."""
    k_x, k_h = jax.random.split(jax.random.key(0))
    glorot = jax.nn.initializers.glorot_normal()
    width = 16 if kind == "lstm" else 4
    params = KINDS[kind](4).init(jax.random.key(0), (5, 3), jnp.float32)
    np.testing.assert_array_equal(params["Wx"], glorot(k_x, (3, width), jnp.float32))
    np.testing.assert_array_equal(params["Wh"], glorot(k_h, (4, width), jnp.float32))
    forget = np.r_[np.zeros(4), np.ones(4), np.zeros(8)] if kind == "lstm" else np.zeros(4)
    np.testing.assert_array_equal(params["b"], forget)


# --- in networks ----------------------------------------------------------------------------------

NETS = {
    "lstm-dense": lambda: jaxnet.sequential((5, D), [LSTM(8), jaxnet.Dense(3)]),
    "lstm-seq-flatten": lambda: jaxnet.sequential(
        (5, D), [LSTM(6, return_sequences=True), jaxnet.Flatten(), jaxnet.Dense(3)]
    ),
    "rnn-seq-lstm": lambda: jaxnet.sequential(
        (5, D), [SimpleRNN(5, return_sequences=True), LSTM(4), jaxnet.Dense(3)], l2=0.01
    ),
    "rnn-seq-flatten-mse": lambda: jaxnet.sequential(
        (5, D), [SimpleRNN(4, return_sequences=True), jaxnet.Flatten(), jaxnet.Dense(2)], "squared_error", "sum"
    ),
}


@pytest.mark.slow  # 3-6 s each, compiling; the main run's network check is find_wrong_layer's, below
@pytest.mark.parametrize("name", NETS)
def test_check_grads_in_a_network(name):
    """manual_grads of a network with recurrent layers against every witness of check_grads
    (autodiff, finite differences, forward mode, Hessian-vector)."""
    net = NETS[name]()
    params, x, y = verify.random_problem(net, seed=1, n=4)
    report = check_network_grads(
        params,
        net,
        x,
        y,
    )
    assert report.ok, str(report)


@pytest.mark.parametrize("name", lean(list(NETS), lambda i, name: name == "rnn-seq-lstm"))
def test_find_wrong_layer_passes_right_networks(name):
    """Every layer's bwd, given autodiff's upstream dy, agrees with the autodiff VJP of its fwd."""
    net = NETS[name]()
    params, x, y = verify.random_problem(net, seed=4, n=4)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.ok and len(report.verdicts) == len(net.layers) + 1, str(report)


@pytest.mark.slow
def test_per_example_gradient_norms_of_a_recurrent_network():
    """The default grad_sq_norms (bwd on each example alone, through the scans) against autodiff per example."""
    net = NETS["rnn-seq-lstm"]()
    params, x, y = verify.random_problem(net, seed=2, n=4)
    assert jaxnet.check_per_example(params, net, x, y).ok


# --- classic mistakes -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LSTMForgetsCellPath(LSTM):
    """dc_{t−1} = 0 instead of dc_t ∘ f_t: the cell state's gradient never reaches the step before."""

    def _bwd_step(self, wh, carry, step):
        (dh_rec, dc_rec), dz = super()._bwd_step(wh, carry, step)
        return (dh_rec, jnp.zeros_like(dc_rec)), dz


@dataclasses.dataclass(frozen=True)
class RNNForgetsRecurrentTanh(SimpleRNN):
    """The recurrent path sends ∂L/∂h_t Whᵀ back instead of δ_t Whᵀ: tanh' forgotten there
    (the step's own δ_t, and so ∂Wx, ∂b, ∂x of step t itself, keep it)."""

    def _bwd_step(self, wh, carry, step):
        (dh_rec,) = carry
        dy_t, h_t = step
        dh = dy_t + dh_rec
        dz = dh * (1 - h_t**2)
        return (dh @ wh.T,), dz  # dh, not dz, through Whᵀ


class _TruncatedAtFirstStep:
    """BPTT truncated by one step, at the FIRST step: step 2 sends nothing back to step 1 (both
    dh and, for the LSTM, dc), which sees only its own output gradient. The later steps are right.
    Since h_0 = 0, step 1 adds h_0ᵀ δ_1 = 0 to ∂Wh, so ∂Wh stays right; ∂x (at t = 1), ∂Wx and
    ∂b go wrong."""

    def _bptt(self, wh, steps, h_prev):
        first = jax.tree.map(lambda a: a[:1], (steps, h_prev))
        later = jax.tree.map(lambda a: a[1:], (steps, h_prev))
        dz_later, dwh_later = super()._bptt(wh, *later)
        dz_first, dwh_first = super()._bptt(wh, *first)  # from a zero carry: truncated
        return jnp.concatenate([dz_first, dz_later]), dwh_first + dwh_later


@dataclasses.dataclass(frozen=True)
class RNNTruncatedAtFirstStep(_TruncatedAtFirstStep, SimpleRNN):
    pass


@dataclasses.dataclass(frozen=True)
class LSTMTruncatedAtFirstStep(_TruncatedAtFirstStep, LSTM):
    pass


TRUNCATED = {"x", "params['Wx']", "params['b']"}
MUTANTS = [
    (LSTMForgetsCellPath(4), ALL),
    (LSTMForgetsCellPath(4, return_sequences=True), ALL),
    (RNNForgetsRecurrentTanh(4), ALL),
    (RNNTruncatedAtFirstStep(4, return_sequences=True), TRUNCATED),
    (LSTMTruncatedAtFirstStep(4), TRUNCATED),
]


@pytest.mark.parametrize(
    "layer, wrong",
    lean(MUTANTS, lambda i, case: i == 0),
    ids=["lstm-cell-path", "lstm-seq-cell-path", "rnn-recurrent-tanh", "rnn-seq-truncated", "lstm-truncated"],
)
def test_check_layer_goes_red_in_exactly_the_wrong_outputs(layer, wrong):
    params, x = draw(layer, 4, seed=11)
    report = jaxnet.check_layer(layer, params, x, cotangents=1, hvp_directions=0)
    assert paths(report) == wrong, str(report)
    assert {row.witness.split(" · ")[0] for row in report.failures()} >= {"jax.vjp", "finite diff", "jvp vs yours"}


WRONG_IN_NET = [
    (0, RNNForgetsRecurrentTanh(5, return_sequences=True), {"dx", "dparams['Wx']", "dparams['Wh']", "dparams['b']"}),
    (0, RNNTruncatedAtFirstStep(5, return_sequences=True), {"dx", "dparams['Wx']", "dparams['b']"}),
    (1, LSTMForgetsCellPath(4), {"dx", "dparams['Wx']", "dparams['Wh']", "dparams['b']"}),
    (1, LSTMTruncatedAtFirstStep(4), {"dx", "dparams['Wx']", "dparams['b']"}),
]


@pytest.mark.parametrize(
    "i, broken, wrong",
    lean(WRONG_IN_NET, lambda i, case: i == 3),
    ids=["rnn-recurrent-tanh", "rnn-truncated", "lstm-cell-path", "lstm-truncated"],
)
def test_find_wrong_layer_names_the_broken_recurrent_layer(i, broken, wrong):
    """SimpleRNN(5, seq) > LSTM(4) > Dense(3) (the network "rnn-seq-lstm") with layer i broken:
    that layer and no other is named."""
    net = NETS["rnn-seq-lstm"]()
    net = dataclasses.replace(net, layers=tuple(broken if j == i else layer for j, layer in enumerate(net.layers)))
    params, x, y = verify.random_problem(net, seed=4, n=4)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.culprit is not None and (report.culprit.index, report.culprit.kind) == (i, type(broken).__name__)
    assert set(report.culprit.wrong) == wrong, str(report)
    assert [v.index for v in report.verdicts if not v.ok] == [i], str(report)


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_rank_is_a_clear_error(kind):
    cls = KINDS[kind]
    name = cls.__name__
    with pytest.raises(
        ValueError, match=rf"{name} expects per-example sequences \(T, D\).*got per-example shape \(6,\)"
    ):
        jaxnet.sequential((6,), [cls(4), jaxnet.Dense(2)])
    with pytest.raises(ValueError, match=rf"{name} expects per-example sequences \(T, D\).*\(2, 3, 4\)"):
        cls(4).param_shapes((2, 3, 4))
    layer = cls(3)
    params, _ = draw(layer, 2)
    with pytest.raises(ValueError, match=rf"{name} expects per-example sequences \(T, D\).*\(3,\)"):
        layer.fwd(params, jnp.ones((2, 3)))  # one step per example, no time axis
    with pytest.raises(ValueError, match=r"\(T, D\) with T, D ≥ 1.*\(0, 3\)"):
        layer.output_shape((0, 3))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("features", [0, -2, 2.5, True, "4", None])
def test_bad_features_are_refused(kind, features):
    name = KINDS[kind].__name__
    with pytest.raises(ValueError, match=rf"{name}.features must be a positive integer"):
        KINDS[kind](features)


def test_bad_return_sequences_is_refused():
    with pytest.raises(ValueError, match=r"LSTM.return_sequences must be True or False, got 1"):
        LSTM(4, return_sequences=1)
    layer = SimpleRNN(np.int64(3), return_sequences=np.True_)  # NumPy scalars become plain int and bool
    assert (layer.features, layer.return_sequences) == (3, True)
    assert type(layer.features) is int and type(layer.return_sequences) is bool
