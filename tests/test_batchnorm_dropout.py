"""BatchNorm and Dropout (jaxnet.normalization, jaxnet.dropout): explicit state and keys.

Each kind alone with check_layer (float64 at 1e-10 against jax.vjp, finite differences, the jvp
witness) in training and in evaluation mode; inside networks with check_grads and find_wrong_layer;
the classic mistakes (batch norm's backward without the mean-of-gradient terms, dropout's backward
without the 1/(1 − p) scale) caught in exactly the right output and named; the state's update; the
mode errors; per-example gradients refused. Training with them (fit, resume, checkpoints) is in
test_batchnorm_dropout_training.py.

The main run checks one case per kind and mode; ``-m slow`` runs the rest of the grids."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import verify
from jaxnet.dropout import Dropout
from jaxnet.normalization import BatchNorm
from tests.helpers import lean

KEY = jax.random.key(7)


def _params(layer, in_shape, seed=0, dtype=jnp.float64):
    """Non-trivial params of ``layer``: scale and shift ~ N(0, 1/4) (never ones or zeros)."""
    net = jaxnet.sequential(in_shape, [layer, jaxnet.Flatten(), jaxnet.Dense(2)])
    return verify.draw_params(net, np.random.default_rng(seed), dtype)[0]


def _inputs(n, in_shape, seed=0, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed + 100).normal(size=(n, *in_shape)), dtype)


def _state(layer, in_shape, seed=0, dtype=jnp.float64):
    """A running state that is not the initial one: mean ~ N(0, 1/4), var ~ U(0.5, 2)."""
    rng = np.random.default_rng(seed + 200)
    d = in_shape[-1]
    return {"mean": jnp.asarray(0.5 * rng.normal(size=d), dtype), "var": jnp.asarray(rng.uniform(0.5, 2, d), dtype)}


# --- each kind alone -------------------------------------------------------------------------------------

BATCHNORM = [  # (batch, per-example shape, train)
    (5, (4,), True),
    (5, (4,), False),
    (2, (4,), True),
    (3, (2, 4), True),  # a sequence: statistics over batch and positions
    (2, (3, 3, 2), True),  # images: over batch, height and width
    (1, (4,), False),  # a batch of one is fine in evaluation
    (1, (3, 4), True),  # a batch of one sequence: m = 3 values per feature
    (4, (3, 3, 2), False),
]


@pytest.mark.parametrize(
    "n, in_shape, train",
    lean(BATCHNORM, lambda i, case: i < 2),
    ids=[f"n{n}-{'x'.join(map(str, s))}-{'train' if t else 'eval'}" for n, s, t in BATCHNORM],
)
def test_check_layer_passes_batchnorm_in_float64(n, in_shape, train):
    layer = BatchNorm()
    params, x = _params(layer, in_shape, seed=n), _inputs(n, in_shape, seed=n)
    state = None if train else _state(layer, in_shape)
    report = jaxnet.check_layer(layer, params, x, state=state, train=train)
    assert report.ok, str(report)
    assert report.leaves[0].rtol == 1e-10
    assert {row.path for row in report.leaves} == {"x", "params['scale']", "params['shift']"}
    assert {"jax.vjp", "finite diff", "jvp vs yours"} <= {row.witness.split(" · ")[0] for row in report.leaves}


DROPOUT = [(0.5, True), (0.5, False), (0.0, True), (0.95, True), (0.2, True)]


@pytest.mark.parametrize(
    "rate, train", lean(DROPOUT, lambda i, case: i < 2), ids=[f"p{p}-{'train' if t else 'eval'}" for p, t in DROPOUT]
)
def test_check_layer_passes_dropout_in_float64(rate, train):
    layer, x = Dropout(rate), _inputs(6, (5,), seed=1)
    report = jaxnet.check_layer(layer, {}, x, key=KEY, train=train)
    assert report.ok, str(report)
    assert {row.path for row in report.leaves} == {"x"}  # no parameters


@pytest.mark.slow
@pytest.mark.parametrize("layer", [BatchNorm(), Dropout(0.3)], ids=["batchnorm", "dropout"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_check_layer_passes_in_float32(layer, train):
    in_shape = (2, 4)
    params = _params(layer, in_shape, dtype=jnp.float32) if isinstance(layer, BatchNorm) else {}
    state = _state(layer, in_shape, dtype=jnp.float32) if isinstance(layer, BatchNorm) and not train else None
    x = _inputs(5, in_shape, dtype=jnp.float32)
    report = jaxnet.check_layer(layer, params, x, key=KEY, state=state, train=train)
    assert report.ok, str(report)
    assert report.leaves[0].rtol == 1e-4


def test_batchnorm_forward_and_state_are_the_formulas():
    layer, in_shape = BatchNorm(momentum=0.8, eps=1e-3), (2, 4)
    params, x, state = _params(layer, in_shape), _inputs(5, in_shape), _state(layer, in_shape)
    y, _, new = layer.apply(params, x, state=state, key=None, train=True)
    flat = np.asarray(x).reshape(-1, 4)  # the 10 values of each feature
    mu, var = flat.mean(axis=0), flat.var(axis=0)  # the biased variance
    expected = np.asarray(params["scale"]) * (np.asarray(x) - mu) / np.sqrt(var + 1e-3) + np.asarray(params["shift"])
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(new["mean"], 0.8 * np.asarray(state["mean"]) + 0.2 * mu, rtol=1e-14)
    np.testing.assert_allclose(new["var"], 0.8 * np.asarray(state["var"]) + 0.2 * var, rtol=1e-14)
    y_eval, _, same = layer.apply(params, x, state=state, key=None, train=False)
    run = (np.asarray(x) - np.asarray(state["mean"])) / np.sqrt(np.asarray(state["var"]) + 1e-3)
    np.testing.assert_allclose(y_eval, np.asarray(params["scale"]) * run + np.asarray(params["shift"]), rtol=1e-13)
    assert same is state  # evaluation leaves the state as it came


def test_dropout_mask_is_inverted_and_follows_the_key():
    layer, x = Dropout(0.25), jnp.ones((400, 50), jnp.float64)
    y, res, _ = layer.apply({}, x, state=None, key=KEY, train=True)
    kept = np.asarray(y) != 0
    assert abs(kept.mean() - 0.75) < 0.01  # 20 000 draws: 4.4 standard deviations
    np.testing.assert_array_equal(np.asarray(y)[kept], 1 / 0.75)  # the kept entries scaled by 1/(1 − p)
    np.testing.assert_array_equal(res.mask, y)
    again, _, _ = layer.apply({}, x, state=None, key=KEY, train=True)
    other, _, _ = layer.apply({}, x, state=None, key=jax.random.key(8), train=True)
    np.testing.assert_array_equal(again, y)  # the same key, the same mask
    assert not np.array_equal(other, y)
    ident, _, _ = layer.apply({}, x, state=None, key=None, train=False)
    np.testing.assert_array_equal(ident, x)  # evaluation: the identity, no key needed


# --- inside networks -------------------------------------------------------------------------------------


def _mlp(*swap, **options):
    """Dense(6, tanh) > BatchNorm > Dropout(0.3) > Dense(5, relu) > BatchNorm > Dense(3), any layer replaced."""
    default = [jaxnet.Dense(6, "tanh"), BatchNorm(), Dropout(0.3), jaxnet.Dense(5, "relu"), BatchNorm()]
    default.append(jaxnet.Dense(3))
    chosen = [*swap, *[None] * (len(default) - len(swap))]
    return jaxnet.sequential((4,), [s or d for s, d in zip(chosen, default)], **options)


def _check(params, net, x, y, state, key, train, **options):
    mode = {"state": state, "key": key, "train": train}
    return jaxnet.check_grads(
        lambda p, x, y: jaxnet.loss(p, net, x, y, **mode),
        lambda p, x, y: jaxnet.manual_grads(p, net, x, y, **mode),
        params,
        x,
        y,
        net=net,
        mode=mode,
        **options,
    )


NETWORKS = [  # (train, with state, batch, l2)
    (True, True, 7, 1e-2),
    (False, True, 6, 0.0),
    (True, False, 2, 0.0),
    (False, True, 1, 1e-2),
]


@pytest.mark.parametrize(
    "train, with_state, n, l2",
    lean(NETWORKS, lambda i, case: i < 2),
    ids=[f"{'train' if t else 'eval'}-{'state' if s else 'nostate'}-n{n}-l2{l2}" for t, s, n, l2 in NETWORKS],
)
def test_a_network_with_batchnorm_and_dropout_checks_out(train, with_state, n, l2):
    """manual_grads against jax.grad(loss) at 1e-10, finite differences and the Hessian-vector
    witness, with the same key (the same dropout masks) on every side."""
    net = _mlp(l2=l2, l2_bias=True)
    state = jaxnet.init_state(net, jnp.float64) if with_state else None
    if with_state:
        state[1], state[4] = _state(BatchNorm(), (6,)), _state(BatchNorm(), (5,), seed=1)
    params, x, y = verify.random_problem(net, seed=n, n=n, key=KEY, state=state, train=train)
    report = _check(params, net, x, y, state, KEY, train)
    assert report.ok, str(report)
    assert report.leaves[0].rtol == 1e-10
    assert jaxnet.find_wrong_layer(params, net, x, y, state=state, key=KEY, train=train).ok


@pytest.mark.slow
def test_a_network_in_float32():
    net = _mlp()
    params, x, y = verify.random_problem(net, seed=3, n=8, dtype=jnp.float32, key=KEY)
    report = _check(params, net, x, y, None, KEY, True)
    assert report.ok, str(report)


def test_residual_blocks_carry_state_and_keys():
    """A Residual around Dense > BatchNorm > Dropout: the state is prefixed like the params, the
    sub-layer's key folded in as a network folds its own, and the gradients check out."""
    block = jaxnet.Residual((jaxnet.Dense(4, "tanh"), BatchNorm(), Dropout(0.4)))
    net = jaxnet.sequential((4,), [block, jaxnet.Dense(3)])
    assert block.needs_key and block.couples_examples
    state = jaxnet.init_state(net, jnp.float64)
    assert sorted(state[0]) == ["1.mean", "1.var"] and state[1] == {}
    params, x, y = verify.random_problem(net, seed=2, n=5, key=KEY)
    report = _check(params, net, x, y, state, KEY, True, hvp_directions=0)
    assert report.ok, str(report)
    (_, new), _ = jaxnet.value_and_manual_grads_with_state(params, net, x, y, state=state, key=KEY)
    assert not np.allclose(new[0]["1.mean"], state[0]["1.mean"])  # the running mean moved


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_new_state_is_the_same_by_hand_and_by_autodiff(jit):
    """value_and_manual_grads_with_state gives loss_with_state's value and state, and the
    structure of jax.value_and_grad(loss_with_state, has_aux=True)."""
    net = _mlp()
    params, x, y = verify.random_problem(net, seed=1, n=6, key=KEY)
    state = jaxnet.init_state(net, jnp.float64)
    mine, ref = jaxnet.value_and_manual_grads_with_state, jax.value_and_grad(jaxnet.loss_with_state, has_aux=True)
    if jit:
        mine, ref = jax.jit(mine), jax.jit(ref)
    (value, new), grads = mine(params, net, x, y, state=state, key=KEY)
    (value_ref, new_ref), grads_ref = ref(params, net, x, y, state=state, key=KEY)
    np.testing.assert_allclose(value, value_ref, rtol=1e-14)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), new, new_ref)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), grads, grads_ref)
    assert new[0] == {} and not np.allclose(new[1]["var"], 1.0)


# --- the classic mistakes, caught and named --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchNormWithoutMeanTerms(BatchNorm):
    """Training mode's backward as if μ_B and σ²_B were constants: dx = r g."""

    def bwd(self, params, residuals, dy):
        _dx, grads = super().bwd(params, residuals, dy)
        return dy * params["scale"][None] * residuals.r[None], grads  # [batch, D] ∘ [1, D] ∘ [1, D]


@dataclasses.dataclass(frozen=True)
class DropoutWithoutScale(Dropout):
    """The backward with the 0/1 keep mask, without the 1/(1 − p) the forward pass scaled by."""

    def bwd(self, params, residuals, dy):
        return dy * (residuals.mask > 0), {}


MISTAKES = [(1, BatchNormWithoutMeanTerms()), (2, DropoutWithoutScale(0.3))]
MISTAKE_IDS = ["batchnorm-no-mean-terms", "dropout-no-1/(1-p)"]


@pytest.mark.parametrize("i, broken", MISTAKES, ids=MISTAKE_IDS)
def test_check_layer_catches_each_mistake_in_dx_only(i, broken):
    params = _params(broken, (4,)) if isinstance(broken, BatchNorm) else {}
    report = jaxnet.check_layer(broken, params, _inputs(5, (4,)), key=KEY, cotangents=1, hvp_directions=0)
    assert {row.path for row in report.failures()} == {"x"}, str(report)
    assert {row.witness.split(" · ")[0] for row in report.failures()} >= {"jax.vjp", "finite diff", "jvp vs yours"}


@pytest.mark.parametrize("i, broken", MISTAKES, ids=MISTAKE_IDS)
def test_the_mistakes_are_caught_in_a_network_and_named(i, broken):
    swap = [None] * 6
    swap[i] = broken
    net = _mlp(*swap)
    params, x, y = verify.random_problem(net, seed=i, n=6, key=KEY)
    report = _check(params, net, x, y, None, KEY, True, hvp_directions=0)
    assert not report.ok
    below = {f"[{j}]" for j in range(i) if params[j]}  # the layers below the broken one, with parameters
    assert {row.path.split("]")[0] + "]" for row in report.failures()} == below, str(report)
    culprit = jaxnet.find_wrong_layer(params, net, x, y, key=KEY).culprit
    assert culprit is not None and (culprit.index, culprit.kind, culprit.wrong) == (i, type(broken).__name__, ("dx",))


def test_the_mean_terms_are_what_evaluation_mode_leaves_out():
    """The mutant's formula is evaluation mode's backward: right there, wrong in training."""
    layer = BatchNormWithoutMeanTerms()
    params, x = _params(layer, (4,)), _inputs(5, (4,))
    assert jaxnet.check_layer(layer, params, x, state=_state(layer, (4,)), train=False).ok


# --- mode errors and corner cases ----------------------------------------------------------------------


def test_a_batch_of_one_in_training_is_a_clear_error():
    net = _mlp(None, None, Dropout(0.0))
    params, x, y = verify.random_problem(net, seed=0, n=3)
    with pytest.raises(ValueError, match=r"BatchNorm in training mode .* one value per feature"):
        jaxnet.loss(params, net, x[:1], y[:1])
    with pytest.raises(ValueError, match="one value per feature"):
        jaxnet.check_layer(BatchNorm(), _params(BatchNorm(), (4,)), _inputs(1, (4,)))
    state = jaxnet.init_state(net, jnp.float64)
    assert np.isfinite(jaxnet.loss(params, net, x[:1], y[:1], state=state, train=False))


def test_mode_errors_name_what_is_missing():
    net = _mlp()
    params, x, y = verify.random_problem(net, seed=0, n=4, key=KEY)
    with pytest.raises(ValueError, match=r"key: layers\[2\] \(Dropout\) draws random numbers in training"):
        jaxnet.manual_grads(params, net, x, y)
    with pytest.raises(ValueError, match=r"state: layers\[1\] \(BatchNorm\) in evaluation mode"):
        jaxnet.forward(params, net, x)  # forward is evaluation mode by default
    with pytest.raises(ValueError, match="key must be one PRNG key"):
        jaxnet.loss(params, net, x, y, key=7)
    with pytest.raises(ValueError, match="train must be True or False"):
        jaxnet.loss(params, net, x, y, key=KEY, train="yes")
    state = jaxnet.init_state(net, jnp.float64)
    with pytest.raises(ValueError, match=r"state\[1\]: expected keys \['mean', 'var'\]"):
        jaxnet.forward(params, net, x, state=[{}] * 6)
    with pytest.raises(ValueError, match=r"state\[4\]\['var'\]: expected shape \(5,\)"):
        jaxnet.forward(params, net, x, state=[*state[:4], {"mean": jnp.zeros(5), "var": jnp.ones(3)}, {}])
    with pytest.raises(ValueError, match="expected the params' dtype float64"):
        jaxnet.forward(params, net, x, state=jaxnet.init_state(net))  # float32 state, float64 params
    with pytest.raises(ValueError, match=r"Dropout\.rate \(the probability of dropping\) must be in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"BatchNorm\.momentum must be in"):
        BatchNorm(momentum=1.0)
    assert jaxnet.forward(params, net, x, state=state).shape == (4, 3)  # evaluation needs no key


def test_per_example_gradients_are_refused():
    for swap, match in [((None, None, Dropout(0.0)), "couples the examples"), ((None, Dropout(0.1)), "random mask")]:
        net = _mlp(*swap)
        params, x, y = verify.random_problem(net, seed=0, n=4, key=KEY)
        for fn in (jaxnet.per_example_grads, jaxnet.per_example_grad_norms, jaxnet.check_per_example):
            with pytest.raises(ValueError, match=match):
                fn(params, net, x, y)


def test_kinds_are_registered_and_their_state_comes_from_init_state():
    from jaxnet import checkpoint

    net = _mlp()
    assert checkpoint.network_from_dict(checkpoint.network_to_dict(net)) == net
    state = jaxnet.init_state(net, jnp.float64)
    assert [sorted(s) for s in state] == [[], ["mean", "var"], [], [], ["mean", "var"], []]
    np.testing.assert_array_equal(state[1]["var"], np.ones(6))
    params = jaxnet.init_params(KEY, net)
    np.testing.assert_array_equal(params[1]["scale"], np.ones(6))  # the identity of the normalised input
    assert BatchNorm().l2_names((6,)) == () and Dropout(0.5).param_shapes((6,)) == {}


@pytest.mark.parametrize(
    "swap", [(None, None, Dropout(0.0)), (None, Dropout(0.0), Dropout(0.5))], ids=["bn", "dropout"]
)
def test_excluding_kinks_of_coupled_examples_repeats_until_none_is_left(swap):
    """Excluding an example moves the others' kinks when BatchNorm's statistics or Dropout's mask
    (drawn for the batch's shape) couple them: the exclusion is repeated on what is left."""
    from jaxnet.gradcheck import count_kinks, handle_kinks

    net = _mlp(*swap)
    params, x, y = verify.random_problem(net, seed=0, n=40, key=KEY, margin=0.0)
    margin = 0.05  # wide: several examples near a ReLU kink
    counter = lambda xs: count_kinks(params, net, xs, margin, key=KEY)
    assert counter(x)[0].examples > 0
    (x2, _y2), notes = handle_kinks(counter, (x, y), "exclude", margin, coupled=True)
    assert counter(x2)[0].examples == 0 and 0 < len(x2) < len(x), notes


def test_jit_matches_eager_in_both_modes():
    net = _mlp()
    params, x, y = verify.random_problem(net, seed=5, n=6, key=KEY)
    state = jaxnet.init_state(net, jnp.float64)
    for train in (True, False):
        fn = lambda p, x, y, s, k, train=train: jaxnet.value_and_manual_grads_with_state(
            p, net, x, y, state=s, key=k, train=train
        )
        eager, jitted = fn(params, x, y, state, KEY), jax.jit(fn)(params, x, y, state, KEY)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15), eager, jitted)
