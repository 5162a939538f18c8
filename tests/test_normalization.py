"""LayerNorm, SequenceMean and TokenDense (jaxnet.normalization): each kind's hand-written backward
alone (check_layer: jax.vjp at rtol 1e-10 in float64, finite differences, the jvp witness), inside a
network (check_grads, find_wrong_layer), the classic mistakes caught in exactly the right output,
bad input, and the corner cases D = 1 and a batch of one.

The main run checks one case per kind and per mistake; ``-m slow`` runs the rest of the grids
(T = 1 and T = 64, float32, every mistake in a network)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import checkpoint, layers, verify
from jaxnet.normalization import LayerNorm, SequenceMean, TokenDense
from tests.helpers import check_network_grads, lean

T, D = 3, 5  # the main run's shapes: every main test reuses them, so the eager kernels compile once


def _problem(layer, in_shape, seed=0, n=4, dtype=jnp.float64):
    """Random non-trivial params of ``layer`` (weights ~ N(0, 1/fan_in); scale, shift and biases
    ~ N(0, 1/4), never ones or zeros) and inputs ``[n, *in_shape]`` away from every kink, drawn as
    :func:`jaxnet.verify.random_problem` draws them for ``layer`` followed by Flatten and Dense."""
    net = jaxnet.sequential(in_shape, [layer, jaxnet.Flatten(), jaxnet.Dense(2)])
    params, x, _ = verify.random_problem(net, seed=seed, n=n, dtype=dtype)
    return params[0], x


def _sequence_net(*kinds, **options):
    """The sequence classifier TokenDense(8, tanh) > LayerNorm > SequenceMean > Dense(3), any layer replaced."""
    default = [TokenDense(8, "tanh"), LayerNorm(), SequenceMean(), jaxnet.Dense(3)]
    chosen = [*kinds, *[None] * (len(default) - len(kinds))]
    return jaxnet.sequential((T, D), [kind or std for kind, std in zip(chosen, default)], **options)


# --- each kind alone ------------------------------------------------------------------------------

ALONE = [  # (layer, per-example shape, cotangents): the main run checks LayerNorm with one dy
    (LayerNorm(), (T, D), 1),
    (LayerNorm(), (T, D), 3),
    (LayerNorm(), (D,), 3),
    (LayerNorm(1e-3), (1, D), 3),
    (LayerNorm(), (64, D), 3),
    (SequenceMean(), (T, D), 3),
    (SequenceMean(), (1, D), 3),
    (SequenceMean(), (64, D), 3),
    (TokenDense(4, "relu"), (T, D), 3),
    (TokenDense(4, "tanh"), (1, D), 3),
    (TokenDense(4, "relu"), (64, D), 3),
    (TokenDense(3, "gelu"), (T, D), 3),
]


def _name(layer):
    return type(layer).__name__ + (f"-{layer.activation}" if isinstance(layer, TokenDense) else "")


@pytest.mark.parametrize(
    "layer, in_shape, cotangents",
    lean(ALONE, lambda i, case: i == 0),
    ids=[f"{_name(layer)}-{'x'.join(map(str, shape))}-dy{c}" for layer, shape, c in ALONE],
)
def test_check_layer_passes_each_kind_in_float64(layer, in_shape, cotangents):
    """Random non-trivial params and inputs (``[4, *in_shape]``); T = 64 is slow (about 3 s a kind)."""
    params, x = _problem(layer, in_shape, seed=len(in_shape))
    report = jaxnet.check_layer(layer, params, x, cotangents=cotangents)
    assert report.ok, str(report)
    assert report.leaves[0].rtol == 1e-10
    assert {row.path for row in report.leaves} == {"x", *(f"params['{name}']" for name in params)}
    assert {"jax.vjp", "finite diff", "jvp vs yours"} <= {row.witness.split(" · ")[0] for row in report.leaves}


FLOAT32 = [(LayerNorm(), (T, D)), (SequenceMean(), (T, D)), (TokenDense(4, "relu"), (T, D)), (LayerNorm(), (D,))]


@pytest.mark.slow
@pytest.mark.parametrize(
    "layer, in_shape", FLOAT32, ids=[f"{_name(layer)}-{'x'.join(map(str, s))}" for layer, s in FLOAT32]
)
def test_check_layer_passes_each_kind_in_float32(layer, in_shape):
    params, x = _problem(layer, in_shape, seed=5, dtype=jnp.float32)
    report = jaxnet.check_layer(layer, params, x)
    assert report.ok, str(report)
    assert report.leaves[0].rtol == 1e-4  # check_layer's float32 bar against jax.vjp


@pytest.mark.parametrize("dtype", lean([jnp.float64, jnp.float32], lambda i, case: i == 0), ids=["f64", "f32"])
def test_jit_matches_eager(dtype):
    """The forward pass of every kind, jitted and eager, on the same inputs (the jitted backward is
    what find_wrong_layer compares with jax.vjp)."""
    rtol = 1e-13 if dtype == jnp.float64 else 1e-6
    for layer in (LayerNorm(), SequenceMean(), TokenDense(4, "relu")):
        params, x = _problem(layer, (T, D), dtype=dtype)
        eager, jitted = layer.fwd(params, x), jax.jit(layer.fwd)(params, x)
        for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):  # y and every residual
            assert a.dtype == b.dtype == dtype and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_layer_norm_forward_is_the_formula():
    """y = scale ∘ (x − μ)/sqrt(σ² + eps) + shift per position, against NumPy; zero mean and unit
    variance (up to eps) per position before the scale and shift."""
    layer = LayerNorm(1e-3)
    params, x = _problem(layer, (T, D))
    y, res = layer.fwd(params, x)
    xs = np.asarray(x)
    mu, var = xs.mean(axis=-1, keepdims=True), xs.var(axis=-1, keepdims=True)  # NumPy's var: biased, 1/D
    expected = np.asarray(params["scale"]) * (xs - mu) / np.sqrt(var + 1e-3) + np.asarray(params["shift"])
    np.testing.assert_allclose(y, expected, rtol=1e-13)
    np.testing.assert_allclose(np.mean(res.xhat, axis=-1), 0.0, atol=1e-15)
    np.testing.assert_allclose(np.var(res.xhat, axis=-1), (var / (var + 1e-3))[..., 0], rtol=1e-13)
    assert res.xhat.shape == (4, T, D) and res.r.shape == (4, T, 1)


def test_sequence_mean_and_token_dense_forward_are_the_formulas():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, T, D)))
    y, _ = SequenceMean().fwd({}, x)
    np.testing.assert_allclose(y, np.asarray(x).mean(axis=1), rtol=1e-14)
    layer = TokenDense(4, "tanh")
    params, _ = _problem(layer, (T, D))
    a, _ = layer.fwd(params, x)
    for t in range(T):  # the same Dense at every position
        np.testing.assert_allclose(a[:, t], jaxnet.Dense(4, "tanh").fwd(params, x[:, t])[0], rtol=1e-14)


# --- the L2 decision, initialisation, registration ------------------------------------------------


def test_layer_norm_params_init_and_l2():
    """scale starts at ones, shift at zeros; neither is penalised by default, both with l2_bias."""
    layer = LayerNorm()
    assert layer.param_shapes((T, D)) == {"scale": (D,), "shift": (D,)} == layer.param_shapes((D,))
    params = layer.init(jax.random.key(0), (T, D), jnp.float32)
    np.testing.assert_array_equal(params["scale"], np.ones(D, np.float32))
    np.testing.assert_array_equal(params["shift"], np.zeros(D, np.float32))
    assert params["scale"].dtype == jnp.float32
    assert layer.weights((T, D)) == () and layer.l2_names((T, D)) == ()
    assert set(layer.l2_names((T, D), l2_bias=True)) == {"scale", "shift"}
    net = _sequence_net(l2=0.1)
    assert jaxnet.network.penalised_names(net) == [("W",), (), (), ("W",)]
    assert jaxnet.network.penalised_names(_sequence_net(l2=0.1, l2_bias=True))[1] == ("scale", "shift")


@pytest.mark.slow  # draws with two initializers, each its own compiled program
def test_token_dense_init_like_dense():
    """He-normal for the ReLU family, Glorot-normal otherwise (fan-in D), zero biases, the layer's key."""
    for activation, init in (("relu", jax.nn.initializers.he_normal()), ("tanh", jax.nn.initializers.glorot_normal())):
        params = TokenDense(4, activation).init(jax.random.key(3), (T, D), jnp.float32)
        np.testing.assert_array_equal(params["W"], init(jax.random.key(3), (D, 4), jnp.float32))
        assert not np.any(params["b"]) and params["b"].shape == (4,)
    assert TokenDense(4).weights((T, D)) == ("W",)


@pytest.mark.slow  # init_params and the checkpoint compile their own programs (about 2.5 s)
def test_kinds_are_registered_and_round_trip_through_a_checkpoint(tmp_path):
    for cls in (LayerNorm, SequenceMean, TokenDense):
        assert layers.layer_kind(cls.__name__) is cls
    net = jaxnet.sequential((T, D), [TokenDense(8, "relu"), LayerNorm(1e-3), SequenceMean(), jaxnet.Dense(3)])
    checkpoint.save(tmp_path / "seq.npz", net=net, params=jaxnet.init_params(jax.random.key(0), net))
    loaded = checkpoint.load(tmp_path / "seq.npz")
    assert loaded.net == net and loaded.net.layers[1].eps == 1e-3
    assert str(net) == "TokenDense > LayerNorm > SequenceMean > Dense, softmax_cross_entropy (mean)"


# --- kinks -----------------------------------------------------------------------------------------


def test_token_dense_reports_kinks_like_dense():
    params, x = _problem(TokenDense(4, "relu"), (T, D))
    _, res = TokenDense(4, "relu").fwd(params, x)
    gaps = TokenDense(4, "relu").kink_gaps(res)
    assert gaps.shape == (4, T * 4)
    np.testing.assert_array_equal(gaps, np.abs(np.asarray(res.z)).reshape(4, -1))
    assert TokenDense(4, "tanh").kink_gaps(TokenDense(4, "tanh").fwd(params, x)[1]) is None
    assert LayerNorm().kink_gaps(LayerNorm().fwd({"scale": jnp.ones(D), "shift": jnp.zeros(D)}, x)[1]) is None


@pytest.mark.slow
def test_check_layer_excludes_a_token_at_a_relu_kink():
    layer = TokenDense(2, "relu")
    params = {"W": jnp.eye(2), "b": jnp.array([0.3, -0.2])}
    x = jnp.array([[[1.0, 2.0], [0.5, -1.0]], [[2.0, 1.0], [-0.3 + 1e-7, 1.0]], [[0.4, 0.9], [1.5, 0.7]]])
    report = jaxnet.check_layer(layer, params, x)  # example 1, position 1: z = 1e-7, at the kink
    assert report.ok, str(report)
    assert "within 0.0001 of a kink in 1 of 3 example(s); those 1 excluded, checked on the other 2" in report.notes[0]


# --- inside a network --------------------------------------------------------------------------------


@pytest.mark.slow  # about 6 s each; the main run checks these layers in this network with find_wrong_layer
@pytest.mark.parametrize(
    "l2, l2_bias, n", [(0.1, False, 6), (0.1, True, 6), (0.0, False, 1)], ids=["l2", "l2-bias", "batch-of-one"]
)
def test_a_sequence_network_checks_out(l2, l2_bias, n):
    """manual_grads of TokenDense > LayerNorm > SequenceMean > Dense against jax.grad (1e-10), finite
    differences and the jvp witness, with check_grads; n = 1 is a batch of one."""
    net = _sequence_net(l2=l2, l2_bias=l2_bias)
    params, x, y = verify.random_problem(net, seed=1, n=n)
    assert not np.allclose(params[1]["scale"], 1.0) and np.all(params[1]["shift"] != 0)
    report = check_network_grads(params, net, x, y)
    assert report.ok, str(report)
    assert {row.path for row in report.leaves} >= {"[1]['scale']", "[1]['shift']", "[0]['W']", "[3]['b']"}


@pytest.mark.slow
def test_find_wrong_layer_passes_the_sequence_network():
    net = _sequence_net()
    params, x, y = verify.random_problem(net, seed=2, n=6)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.ok and len(report.verdicts) == 5, str(report)


@pytest.mark.slow
def test_per_example_gradients_of_the_sequence_network():
    """The default grad_sq_norms (bwd per example) of every new kind, against vmap(jax.grad)."""
    net = _sequence_net(TokenDense(8, "relu"), l2=0.1, l2_bias=True)
    params, x, y = verify.random_problem(net, seed=3, n=5)
    assert jaxnet.check_per_example(params, net, x, y).ok


# --- the classic mistakes, caught in exactly the right output ------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerNormMeansOverBatch(LayerNorm):
    def bwd(self, params, residuals, dy):
        _dx, grads = super().bwd(params, residuals, dy)
        xhat, r = residuals.xhat, residuals.r
        g = dy * params["scale"].reshape((1,) * (dy.ndim - 1) + (-1,))
        mean = lambda a: jnp.mean(a, axis=0, keepdims=True)  # the batch axis, not the feature axis
        return r * (g - mean(g) - xhat * mean(g * xhat)), grads


@dataclasses.dataclass(frozen=True)
class LayerNormWithoutMeanTerms(LayerNorm):
    def bwd(self, params, residuals, dy):
        _dx, grads = super().bwd(params, residuals, dy)
        g = dy * params["scale"].reshape((1,) * (dy.ndim - 1) + (-1,))
        return residuals.r * g, grads  # dx = r g: μ and σ² treated as constants


@dataclasses.dataclass(frozen=True)
class SequenceMeanWithoutOneOverT(SequenceMean):
    def bwd(self, params, residuals, dy):
        n, t = residuals["positions"].shape[:2]
        return jnp.broadcast_to(dy[:, None, :], (n, t, dy.shape[1])), {}  # the 1/T forgotten


MISTAKES = [
    (1, LayerNormMeansOverBatch()),
    (1, LayerNormWithoutMeanTerms()),
    (2, SequenceMeanWithoutOneOverT()),
]
MISTAKE_IDS = ["layernorm-means-over-batch", "layernorm-no-mean-terms", "sequencemean-no-one-over-T"]


@pytest.mark.parametrize("broken", [broken for _, broken in MISTAKES], ids=MISTAKE_IDS)
def test_check_layer_catches_each_mistake_in_dx_only(broken):
    params, x = _problem(broken, (T, D), seed=4)
    report = jaxnet.check_layer(broken, params, x, cotangents=1, hvp_directions=0)
    assert {row.path for row in report.failures()} == {"x"}, str(report)
    assert {row.witness.split(" · ")[0] for row in report.failures()} >= {"jax.vjp", "finite diff", "jvp vs yours"}


@pytest.mark.parametrize("i, broken", lean(MISTAKES, lambda i, case: i == 0), ids=MISTAKE_IDS)
def test_find_wrong_layer_names_the_broken_layer_and_no_other(i, broken):
    kinds = [None] * 4
    kinds[i] = broken
    net = _sequence_net(*kinds)
    params, x, y = verify.random_problem(net, seed=i, n=6)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.culprit is not None and (report.culprit.index, report.culprit.kind) == (i, type(broken).__name__)
    assert report.culprit.wrong == ("dx",)
    assert [v.index for v in report.verdicts if not v.ok] == [i], str(report)  # every other layer agrees


# --- corner cases: D = 1, a batch of one -----------------------------------------------------------------


def test_layer_norm_of_one_feature_is_its_shift():
    """D = 1: x − μ = 0 exactly, so x̂ = 0 and y = shift whatever x; dx = 0, dscale = 0, dshift = Σ dy."""
    layer = LayerNorm()
    params = {"scale": jnp.array([1.7]), "shift": jnp.array([-0.4])}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, T, 1)) * 10)
    y, res = layer.fwd(params, x)
    np.testing.assert_array_equal(y, np.full((4, T, 1), -0.4))
    np.testing.assert_array_equal(res.xhat, 0.0)
    dy = jnp.asarray(np.random.default_rng(1).normal(size=(4, T, 1)))
    dx, grads = layer.bwd(params, res, dy)
    np.testing.assert_array_equal(dx, 0.0)
    np.testing.assert_array_equal(grads["scale"], [0.0])
    np.testing.assert_allclose(grads["shift"], [np.sum(dy)], rtol=1e-14)


@pytest.mark.slow  # every primitive again at batch size 1 (about 1.5 s)
def test_a_batch_of_one_is_each_example_alone():
    """Every kind on a batch of one: each example's y and dx as in the whole batch, and the batch's
    parameter gradients the sum of the examples' own."""
    rng = np.random.default_rng(2)
    for layer in (LayerNorm(), SequenceMean(), TokenDense(4, "relu")):
        params, x = _problem(layer, (T, D), seed=3)
        y, res = layer.fwd(params, x)
        dy = jnp.asarray(rng.normal(size=y.shape))
        dx, grads = layer.bwd(params, res, dy)
        alone = [layer.bwd(params, layer.fwd(params, x[i : i + 1])[1], dy[i : i + 1]) for i in range(x.shape[0])]
        for i, (dx_i, _) in enumerate(alone):
            np.testing.assert_allclose(layer.fwd(params, x[i : i + 1])[0], y[i : i + 1], rtol=1e-13)
            assert dx_i.shape == (1, *x.shape[1:])
            np.testing.assert_allclose(dx_i, dx[i : i + 1], rtol=1e-12, atol=1e-15)
        for name in grads:
            np.testing.assert_allclose(sum(g[name] for _, g in alone), grads[name], rtol=1e-12, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("in_shape, n", [((T, 1), 4), ((1,), 4), ((T, D), 1), ((D,), 1)], ids=str)
def test_check_layer_of_one_feature_and_of_a_batch_of_one(in_shape, n):
    """check_layer agrees there too: with D = 1 the reference dx is exactly 0, and so is ours."""
    params, x = _problem(LayerNorm(), in_shape, seed=6, n=n)
    report = jaxnet.check_layer(LayerNorm(), params, x)
    assert report.ok, str(report)


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), float("inf"), "1e-5", True, None])
def test_bad_eps_is_a_clear_error(eps):
    with pytest.raises(ValueError, match=r"LayerNorm\.eps must be a positive finite number"):
        LayerNorm(eps)


def test_eps_is_kept_as_a_float():
    assert LayerNorm(1).eps == 1.0 and type(LayerNorm(np.float32(1e-3)).eps) is float


def test_wrong_input_ranks_are_clear_errors():
    with pytest.raises(ValueError, match=r"SequenceMean expects per-example sequences \[T, D\].*got shape \(5,\)"):
        jaxnet.sequential((5,), [SequenceMean(), jaxnet.Dense(2)])
    with pytest.raises(ValueError, match=r"SequenceMean expects per-example sequences \[T, D\].*\(2, 3, 4\)"):
        jaxnet.sequential((2, 3, 4), [SequenceMean(), jaxnet.Dense(2)])
    with pytest.raises(ValueError, match=r"TokenDense expects per-example sequences \[T, D\].*got shape \(5,\)"):
        jaxnet.sequential((5,), [TokenDense(3), jaxnet.Dense(2)])
    with pytest.raises(ValueError, match=r"LayerNorm expects per-example inputs \[\.\.\., D\], got shape \(\)"):
        LayerNorm().output_shape(())
    with pytest.raises(ValueError, match=r"TokenDense\.features must be a positive integer"):
        TokenDense(0)
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        TokenDense(3, "nope")
    net = jaxnet.sequential((T, D), [LayerNorm(), jaxnet.Flatten(), jaxnet.Dense(2)])
    assert net.layer_input_shapes[1] == (T, D)
