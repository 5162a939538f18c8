"""MultiHeadSelfAttention (jaxnet.attention): its hand-written backward against jax.vjp, finite
differences and forward mode, alone and in networks; causality; three classic mistakes of an
attention backward, each caught in exactly the outputs it breaks; bad inputs."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import checkpoint, verify
from jaxnet.attention import MultiHeadSelfAttention
from tests.helpers import check_network_grads, lean

D = 4  # per-position input features


def _problem(layer, t, seed=0, n=3, dtype=jnp.float64):
    """Params of ``layer`` (weights ~ N(0, 1/fan_in), biases ~ N(0, 1/4), none zero) and ``x``: [n, T, D]."""
    rng = np.random.default_rng(seed)
    params = verify.draw_params(jaxnet.sequential((t, D), [layer, jaxnet.Flatten(), jaxnet.Dense(2)]), rng, dtype)[0]
    return params, jnp.asarray(rng.normal(size=(n, t, D)), dtype)


# --- alone: check_layer -----------------------------------------------------------------------------


FAST = dict(cotangents=1, hvp_directions=0)  # the main run: one cotangent, no Hessian-vector witness
FULL = dict(cotangents=3, hvp_directions=1)  # check_layer's defaults


@pytest.mark.parametrize(
    "heads, t, causal, options",
    lean(
        [
            (2, 5, True, FAST),
            (2, 5, True, FULL),
            (2, 5, False, FULL),
            (1, 5, True, FULL),
            (1, 1, True, FULL),
            (1, 1, False, FULL),
            (2, 1, True, FULL),
            (4, 64, True, FULL),
            (1, 64, False, FAST),
        ],
        lambda i, case: i == 0,
    ),
    ids=[
        "h2-t5-causal-fast",
        "h2-t5-causal",
        "h2-t5",
        "h1-t5-causal",
        "h1-t1-causal",
        "h1-t1",
        "h2-t1-causal",
        "h4-t64-causal",
        "h1-t64-fast",
    ],
)
def test_check_layer_passes_in_float64(heads, t, causal, options):
    """jax.vjp (1e-10), finite differences and the jvp witness agree with bwd on every output."""
    layer = MultiHeadSelfAttention(heads, 8, causal)
    params, x = _problem(layer, t, seed=heads + t)
    assert all(np.all(p != 0) for p in params.values())  # nonzero biases too
    report = jaxnet.check_layer(layer, params, x, **options)
    assert report.ok, str(report)
    assert {row.path for row in report.leaves} == {"x", *(f"params['{n}']" for n in params)}
    last = options["cotangents"] - 1
    assert {"jax.vjp · dy0", f"finite diff · dy{last}", f"jvp vs yours · dy{last}"} <= {
        r.witness for r in report.leaves
    }
    assert any(r.witness.startswith("hessian-vector") for r in report.leaves) == bool(options["hvp_directions"])


@pytest.mark.slow
@pytest.mark.parametrize("heads, t, causal", [(2, 4, True), (1, 3, False)], ids=["h2-t4-causal", "h1-t3"])
def test_check_layer_passes_in_float32(heads, t, causal):
    layer = MultiHeadSelfAttention(heads, 8, causal)
    params, x = _problem(layer, t, seed=7, dtype=jnp.float32)
    report = jaxnet.check_layer(layer, params, x)
    assert report.ok and report.leaves[0].rtol == 1e-4, str(report)


def test_jit_and_eager_forward_agree_and_the_softmax_is_exact_where_masked():
    """The forward under jit equals eager to rounding (XLA may fuse differently); causal P is
    exactly 0 above the diagonal and positive on and below it, each row sums to 1; ∂L/∂bk is 0
    (bk shifts whole rows of S)."""
    layer = MultiHeadSelfAttention(2, 8, causal=True)
    params, x = _problem(layer, 6, seed=1)
    (y, res), (y_jit, res_jit) = layer.fwd(params, x), jax.jit(layer.fwd)(params, x)
    np.testing.assert_allclose(y_jit, y, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(res_jit.p, res.p, rtol=1e-13, atol=1e-15)
    above = ~np.tril(np.ones((6, 6), bool))
    assert np.all(np.asarray(res.p)[..., above] == 0) and np.all(np.asarray(res.p)[..., ~above] > 0)
    np.testing.assert_allclose(np.sum(res.p, axis=-1), 1.0, rtol=1e-14)
    dy = jnp.asarray(np.random.default_rng(2).normal(size=(3, 6, 8)))
    _, grads = jax.jit(layer.bwd)(params, res, dy)
    assert np.max(np.abs(grads["bk"])) <= 1e-12 * np.max(np.abs(grads["bq"]))


@pytest.mark.slow
@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("t", [1, 6])
def test_jit_and_eager_agree_to_rounding(dtype, rtol, t):
    """Also T = 1 under causal (the only key is the query itself): finite everywhere."""
    layer = MultiHeadSelfAttention(2, 8, causal=True)
    params, x = _problem(layer, t, seed=1, dtype=dtype)
    dy = jnp.asarray(np.random.default_rng(2).normal(size=(3, t, 8)), dtype)
    step = lambda p, x, dy: layer.bwd(p, layer.fwd(p, x)[1], dy)
    np.testing.assert_allclose(jax.jit(layer.fwd)(params, x)[0], layer.fwd(params, x)[0], rtol=rtol, atol=rtol)
    eager, jitted = step(params, x, dy), jax.jit(step)(params, x, dy)
    scale = max(float(np.max(np.abs(b))) for b in jax.tree.leaves(eager))  # ∂L/∂bk is 0 up to rounding
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        assert a.dtype == dtype and np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def test_causal_output_at_t_ignores_the_inputs_after_t_exactly():
    """y[:, :t+1] is bit-for-bit the same when x[:, t+1:] changes (the masked weights are exactly 0);
    the later outputs change, and so does y at t without the mask."""
    layer, plain = MultiHeadSelfAttention(2, 8, causal=True), MultiHeadSelfAttention(2, 8)
    t_len, n = 7, 3
    params, x = _problem(layer, t_len, seed=3, n=n)
    rng = np.random.default_rng(4)
    variants = [np.asarray(x)]
    for t in range(t_len - 1):  # variant t + 1: the positions after t drawn again
        changed = np.array(x)
        changed[:, t + 1 :] = rng.normal(size=(n, t_len - 1 - t, D))
        variants.append(changed)
    xs = jnp.asarray(np.concatenate(variants))  # [(T) n, T, D]: every variant in one batch
    fwd = jax.jit(lambda layer, p, x: layer.fwd(p, x)[0], static_argnums=0)
    ys = np.asarray(fwd(layer, params, xs)).reshape(t_len, n, t_len, 8)
    ys_plain = np.asarray(fwd(plain, params, xs)).reshape(t_len, n, t_len, 8)
    for t in range(t_len - 1):
        np.testing.assert_array_equal(ys[t + 1][:, : t + 1], ys[0][:, : t + 1])  # exactly
        assert np.all(ys[t + 1][:, t + 1 :] != ys[0][:, t + 1 :])
        assert np.all(ys_plain[t + 1][:, t] != ys_plain[0][:, t])  # without the mask, position t sees them


# --- in a network -----------------------------------------------------------------------------------


def _network(second=None, t=5):
    """x [T, D] > attention(2, 8, causal) > ``second`` (default attention(2, 8)) > Flatten > Dense(3), softmax CE."""
    second = MultiHeadSelfAttention(2, 8) if second is None else second
    layers = [MultiHeadSelfAttention(2, 8, causal=True), second, jaxnet.Flatten(), jaxnet.Dense(3)]
    return jaxnet.sequential((t, D), layers, "softmax_cross_entropy", l2=0.01)


@pytest.mark.slow
def test_in_a_network_check_grads_find_wrong_layer_and_per_example():
    net = _network()
    assert net.layer_input_shapes[2:] == ((5, 8), (40,))  # Flatten takes [T, F]
    params, x, y = verify.random_problem(net, seed=5, n=4)
    report = check_network_grads(
        params,
        net,
        x,
        y,
        jvp_of_yours=True,
    )
    assert report.ok, str(report)
    assert {"jax.grad", "finite diff", "jvp vs yours", "hessian-vector"} <= {r.witness for r in report.leaves}
    wrong = jaxnet.find_wrong_layer(params, net, x, y)
    assert wrong.ok and len(wrong.verdicts) == 5, str(wrong)
    assert jaxnet.check_per_example(params, net, x, y).ok  # the protocol's default per-example norms


def test_a_network_with_attention_round_trips_through_a_checkpoint(tmp_path):
    net = jaxnet.sequential((3, D), [MultiHeadSelfAttention(2, 4, causal=True), jaxnet.Flatten(), jaxnet.Dense(2)])
    params = verify.draw_params(net, np.random.default_rng(0), jnp.float32)
    assert set(params[0]) == {"Wq", "Wk", "Wv", "Wo", "bq", "bk", "bv", "bo"}
    assert set(net.layers[0].weights((3, D))) == {"Wq", "Wk", "Wv", "Wo"}  # L2 on the four matrices
    checkpoint.save(tmp_path / "attention.npz", net=net, params=params)
    loaded = checkpoint.load(tmp_path / "attention.npz", net)
    assert loaded.net == net and checkpoint.network_to_dict(net)["layers"][0]["kind"] == "MultiHeadSelfAttention"


# --- classic mistakes: deliberately wrong backward passes ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class SoftmaxSumOverQueries(MultiHeadSelfAttention):
    def _softmax_bwd(self, p, dp):
        return p * (dp - jnp.sum(dp * p, axis=-2, keepdims=True))  # Σ over the queries, not the keys


@dataclasses.dataclass(frozen=True)
class NoScaleInScoreBackward(MultiHeadSelfAttention):
    def _score_bwd(self, q, k, ds):
        return jnp.einsum("bhqk,bhkd->bhqd", ds, k), jnp.einsum("bhqk,bhqd->bhkd", ds, q)  # 1/√d forgotten


@dataclasses.dataclass(frozen=True)
class ValueGradWithoutTranspose(MultiHeadSelfAttention):
    def _value_bwd(self, p, v, do_h):
        dp, _ = super()._value_bwd(p, v, do_h)
        return dp, jnp.einsum("bhqk,bhkd->bhqd", p, do_h)  # P dO_h instead of Pᵀ dO_h


# What each mistake breaks. ∂L/∂bk is 0 (softmax ignores a shift of a row of S): scaling dK by √d
# leaves it 0, but the softmax backward summed over the queries no longer sums to 0 over the keys.
MISTAKES = [
    (SoftmaxSumOverQueries, {"x", "Wq", "bq", "Wk", "bk"}),
    (NoScaleInScoreBackward, {"x", "Wq", "bq", "Wk"}),
    (ValueGradWithoutTranspose, {"x", "Wv", "bv"}),
]
IDS = ["softmax-sum-over-queries", "no-1/sqrt(d)-in-dQ-dK", "dV-with-P-not-P-transposed"]


def _rows(names, x, prefix):
    """{"x", "Wq"} -> {x, prefix['Wq']}: the report's names for those outputs."""
    return {x if n == "x" else f"{prefix}['{n}']" for n in names}


@pytest.mark.parametrize("kind, wrong", lean(MISTAKES, lambda i, case: i == 0), ids=IDS)
@pytest.mark.parametrize("causal", lean([True, False], lambda i, case: i == 0), ids=["causal", "plain"])
def test_check_layer_catches_each_mistake_in_exactly_its_outputs(kind, wrong, causal):
    """At the shapes of the main run's right check_layer (which passes there), each mistake fails
    in exactly the outputs it touches, by every witness."""
    layer = kind(2, 8, causal)  # d = 4: a forgotten 1/√d is a factor 2
    params, x = _problem(layer, 5, seed=11)
    report = jaxnet.check_layer(layer, params, x, **FAST)
    assert {row.path for row in report.failures()} == _rows(wrong, "x", "params"), str(report)
    assert {row.witness.split(" · ")[0] for row in report.failures()} >= {"jax.vjp", "finite diff", "jvp vs yours"}


@pytest.mark.slow
@pytest.mark.parametrize("kind, wrong", MISTAKES, ids=IDS)
def test_find_wrong_layer_names_the_broken_attention_layer(kind, wrong):
    """The broken layer is layers[1], above a right attention layer: it alone is named, in exactly its outputs."""
    net = _network(kind(2, 8))
    params, x, y = verify.random_problem(net, seed=6, n=4)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.culprit is not None and (report.culprit.index, report.culprit.kind) == (1, kind.__name__)
    assert set(report.culprit.wrong) == _rows(wrong, "dx", "dparams"), str(report)
    assert [v.index for v in report.verdicts if not v.ok] == [1], str(report)


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_configurations_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"features \(6\) must be a multiple of heads \(4\)"):
        MultiHeadSelfAttention(4, 6)
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention.heads must be a positive integer, got 0"):
        MultiHeadSelfAttention(0, 8)
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention.features must be a positive integer"):
        MultiHeadSelfAttention(2, 2.5)
    with pytest.raises(ValueError, match="causal must be True or False, got 'yes'"):
        MultiHeadSelfAttention(2, 8, "yes")
    assert MultiHeadSelfAttention(2, 8, np.bool_(True)) == MultiHeadSelfAttention(2, 8, True)
    layer = MultiHeadSelfAttention(2, 8)
    assert layer.output_shape((5, 3)) == (5, 8) and layer.head_size == 4
    for shape in [(12,), (2, 3, 4)]:
        with pytest.raises(
            ValueError, match=r"expects per-example sequences \[T, D\].*got shape " + re.escape(str(shape))
        ):
            jaxnet.sequential(shape, [layer, jaxnet.Flatten(), jaxnet.Dense(2)])
        with pytest.raises(ValueError, match=r"expects per-example sequences \[T, D\]"):
            layer.fwd(_problem(layer, 3)[0], jnp.zeros((2, *shape)))
