"""Embedding: the lookup and its scatter-add backward, alone and in networks of integer token ids."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnet
from jaxnet import sweep, train, verify
from jaxnet.composite import Residual
from jaxnet.embedding import Embedding
from tests.helpers import check_network_grads, lean

V, T, F = 5, 6, 3  # T > V: every example repeats an id


def _ids(shape=(4, T), seed=0, vocab=V):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, size=shape))


def _params(layer, dtype=jnp.float64, seed=0):
    return {"E": jnp.asarray(np.random.default_rng(seed).normal(size=(layer.vocab, layer.features)), dtype)}


def _token_net(layer=None, l2=0.0):
    """Embedding(V, 8) > Residual(tanh) > Flatten > Dense(3) on per-example ids (T,)."""
    return jaxnet.sequential(
        (T,),
        [layer or Embedding(V, 8), Residual((jaxnet.Activation("tanh"),)), jaxnet.Flatten(), jaxnet.Dense(3)],
        l2=l2,
    )


@dataclasses.dataclass(frozen=True)
class EmbeddingOverwrites(Embedding):
    """The classic slip: ``.set`` instead of ``.add``, so a repeated id keeps one row of dy."""

    def bwd(self, params, residuals, dy):
        ids = residuals["ids"]
        return jnp.zeros(ids.shape, dy.dtype), {"E": jnp.zeros_like(params["E"]).at[ids].set(dy)}


# --- the layer alone ---------------------------------------------------------------------------


def test_lookup_scatter_add_shapes_and_parameters():
    layer = Embedding(V, F)
    assert layer.output_shape((T,)) == (T, F) and layer.param_shapes((T,)) == {"E": (V, F)}
    assert layer.weights((T,)) == ("E",) and layer.l2_names((T,)) == ("E",)  # L2 penalises E, like a W
    params, ids = _params(layer), _ids()
    y, res = layer.fwd(params, ids)
    np.testing.assert_array_equal(y, np.asarray(params["E"])[np.asarray(ids)])  # [4, T, F]
    dy = np.random.default_rng(1).normal(size=y.shape)
    dx, grads = layer.bwd(params, res, jnp.asarray(dy))
    expected = np.zeros((V, F))
    np.add.at(expected, np.asarray(ids), dy)  # repeated ids accumulate
    np.testing.assert_allclose(grads["E"], expected, rtol=1e-14)
    assert dx.shape == ids.shape and dx.dtype == jnp.float64 and not np.any(dx)
    e = Embedding(1000, 64).init(jax.random.key(0), (T,), jnp.float64)["E"]  # N(0, 1/features): rows of norm ~1
    assert abs(float(jnp.mean(jnp.sum(e**2, axis=1))) - 1.0) < 0.05


@pytest.mark.parametrize(
    "dtype, shape",
    lean(
        [(jnp.float64, (4, T)), (jnp.float64, (3, 2, 4)), (jnp.float32, (4, T))],
        lambda i, case: i == 0,
    ),
    ids=["f64", "f64-2d-ids", "f32"],
)
def test_check_layer_passes_with_repeated_ids(dtype, shape):
    layer = Embedding(V, F)
    ids = _ids(shape)
    assert len(np.unique(np.asarray(ids))) < ids.size  # repeated ids
    report = jaxnet.check_layer(layer, _params(layer, dtype), ids)
    assert report.ok, str(report)
    assert {row.path for row in report.leaves} == {"params['E']"}  # ids are held fixed
    assert {"jax.vjp · dy2", "finite diff · dy0", "jvp vs yours · dy1"} <= {row.witness for row in report.leaves}
    assert any("held fixed, only the parameters checked" in note for note in report.notes)


def test_check_layer_catches_overwriting_repeated_ids_and_only_with_repeats():
    layer = EmbeddingOverwrites(V, F)
    report = jaxnet.check_layer(layer, _params(layer), _ids())
    assert {row.path for row in report.failures()} == {"params['E']"}
    assert {row.witness.split(" · ")[0] for row in report.failures()} >= {"jax.vjp", "finite diff", "jvp vs yours"}
    distinct = jnp.asarray([[0, 1, 2, 4]])  # one example, no id twice in the batch
    assert jaxnet.check_layer(layer, _params(layer), distinct, cotangents=1).ok  # .set is right without repeats


def test_jit_equals_eager():
    layer, params, ids = Embedding(V, F), _params(Embedding(V, F)), _ids()
    dy = jnp.asarray(np.random.default_rng(2).normal(size=(4, T, F)))

    def both(params, ids, dy):
        y, res = layer.fwd(params, ids)
        return y, layer.bwd(params, res, dy)

    eager, jitted = both(params, ids, dy), jax.jit(both)(params, ids, dy)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_bad_ids_are_clear_errors_and_nan_under_jit():
    layer, params = Embedding(V, F), _params(Embedding(V, F))
    with pytest.raises(ValueError, match=r"Embedding\(vocab=5\): token id 7 is out of range \[0, 5\) \(vocab=5\)"):
        layer.fwd(params, jnp.asarray([[0, 7, 1]]))
    with pytest.raises(ValueError, match=r"token id -1 is out of range \[0, 5\)"):
        layer.fwd(params, jnp.asarray([[-1, 2]]))
    with pytest.raises(ValueError, match=r"Embedding\(vocab=5\) takes integer token ids, got dtype float64"):
        layer.fwd(params, jnp.asarray([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="takes integer token ids"):
        jaxnet.check_layer(layer, params, jnp.asarray([[0.0, 1.0]]))
    # under jit the ids cannot be read: an id out of range gives a NaN row (as an invalid label
    # gives a NaN loss), and NaN in the gradient of the row its clipped id reads; valid ids unchanged
    y, res = jax.jit(layer.fwd)(params, jnp.asarray([[-3, 2, 9]]))
    assert np.isnan(y[0, 0]).all() and np.isnan(y[0, 2]).all()
    np.testing.assert_array_equal(y[0, 1], params["E"][2])
    _, grads = layer.bwd(params, res, jnp.ones((1, 3, F)))
    assert np.isnan(grads["E"][jnp.asarray([0, V - 1])]).all()
    np.testing.assert_array_equal(grads["E"][2], np.ones(F))
    assert not np.isnan(grads["E"][jnp.asarray([1, 3])]).any()
    with pytest.raises(ValueError, match=r"Embedding\.vocab must be a positive integer"):
        Embedding(0, F)


def test_networks_of_token_ids_keep_integer_inputs_and_check_them():
    net = _token_net()
    params, ids, _ = verify.random_problem(net, n=4)  # ids drawn in [0, vocab)
    assert jnp.issubdtype(ids.dtype, jnp.integer) and ids.shape == (4, T)
    assert int(ids.min()) >= 0 and int(ids.max()) < V
    assert jaxnet.forward(params, net, ids[0]).shape == (3,)  # one example, kept as integers
    with pytest.raises(
        ValueError, match=r"x: layers\[0\] \(Embedding\) takes integer token ids in \[0, 5\), got dtype"
    ):
        jaxnet.forward(params, net, ids.astype(jnp.float64))
    with pytest.raises(ValueError, match=r"layers\[0\] \(Embedding\(vocab=5\)\): token id 5 is out of range"):
        jaxnet.check_inputs(params, net, ids.at[1, 2].set(5), jnp.zeros(4, int))
    with pytest.raises(ValueError, match=r"layers\[1\]: Embedding takes integer token ids, so it must be the first"):
        jaxnet.sequential((T,), [jaxnet.Activation("tanh"), Embedding(V, 2), jaxnet.Flatten(), jaxnet.Dense(2)])
    mlp = jaxnet.mlp([3, 2])  # integer x to other networks: cast to the params' dtype, as before
    p = verify.draw_params(mlp, np.random.default_rng(0), jnp.float64)
    x, _, _ = jaxnet.network.prepare_inputs(p, mlp, jnp.asarray([[1, 2, 3]]))
    assert x.dtype == jnp.float64


# --- in networks -------------------------------------------------------------------------------


@pytest.mark.parametrize("hvp", lean([0, None], lambda i, case: i == 0), ids=["no-hvp", "every-witness"])
def test_check_grads_on_a_network_of_token_ids(hvp):
    net = _token_net(l2=0.01)
    params, x, y = verify.random_problem(net, seed=1, n=4)
    report = check_network_grads(
        params,
        net,
        x,
        y,
        **({} if hvp is None else {"hvp_directions": hvp}),  # main run: the hessian-vector witness (of jax.grad) off
    )
    assert report.ok, str(report)
    assert "[0]['E']" in {row.path for row in report.leaves}


@pytest.mark.parametrize("broken", lean([False, True], lambda i, case: case), ids=["right", "overwrites"])
def test_find_wrong_layer_names_the_overwriting_embedding(broken):
    net = _token_net(EmbeddingOverwrites(V, 8) if broken else None)
    params, x, y = verify.random_problem(net, seed=2, n=4)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    if not broken:
        assert report.ok, str(report)
        return
    assert (report.culprit.index, report.culprit.kind, report.culprit.wrong) == (
        0,
        "EmbeddingOverwrites",
        ("dparams['E']",),
    )
    assert [v.index for v in report.verdicts if not v.ok] == [0], str(report)
    assert "held fixed, only its parameters checked" in str(report)


@pytest.mark.slow
def test_per_example_norms_closed_form_and_check_per_example():
    layer, params, ids = Embedding(V, F), _params(Embedding(V, F)), _ids()
    _, res = layer.fwd(params, ids)
    dy = jnp.asarray(np.random.default_rng(3).normal(size=(4, T, F)))
    np.testing.assert_allclose(
        layer.grad_sq_norms(params, res, dy), jaxnet.Layer.grad_sq_norms(layer, params, res, dy), rtol=1e-12
    )
    net = _token_net(l2=0.1)
    params, x, y = verify.random_problem(net, seed=3, n=5)
    assert jaxnet.check_per_example(params, net, x, y).ok


@pytest.mark.slow
def test_float32_network_of_token_ids():
    net = _token_net()
    params, x, y = verify.random_problem(net, seed=4, n=4, dtype=jnp.float32)
    report = check_network_grads(
        params,
        net,
        x,
        y,
    )
    assert report.ok, str(report)
    assert jaxnet.find_wrong_layer(params, net, x, y).ok


def test_fit_trains_a_network_of_token_ids_on_integer_data():
    """``fit`` keeps the ids integer (it used to cast them to the params' dtype and refuse them)."""
    net = jaxnet.sequential((T,), [Embedding(V, 4), jaxnet.SequenceMean(), jaxnet.Dense(2)])
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(16, T))
    y = (x.sum(axis=1) > T * (V - 1) / 2).astype(np.int32)
    params = jaxnet.init_params(jax.random.key(0), net)
    result = train.fit(net, params, x, y, optax.adam(0.05), 5, 8, jax.random.key(1), val=(x[:4], y[:4]))
    losses = result.history["train_loss"]
    assert len(losses) == 5 and np.isfinite(losses).all() and losses[-1] < losses[0]


@pytest.mark.slow
def test_a_sweep_of_networks_of_token_ids():
    net = jaxnet.sequential((T,), [Embedding(V, 4), jaxnet.SequenceMean(), jaxnet.Dense(2)])
    x = np.random.default_rng(0).integers(0, V, size=(16, T))
    y = (x[:, 0] > 2).astype(np.int32)
    result = sweep.run(sweep.grid(net, seeds=(0, 1), lr=(0.1,)), x, y, "adam", 3, 8, val=(x[:4], y[:4]))
    assert all(np.isfinite(h["train_loss"]).all() and h["train_loss"][-1] < h["train_loss"][0] for h in result.history)
    mlp = jaxnet.sequential((T,), [jaxnet.Dense(2)])
    with pytest.raises(ValueError, match="networks of token ids and of real-valued inputs cannot share"):
        sweep.run(sweep.grid([net, mlp]), x, y, "adam", 1, 8)


@dataclasses.dataclass(frozen=True)
class NoVocab(jaxnet.Layer):
    """Says it takes token ids but has no vocab."""

    integer_inputs = True

    def output_shape(self, in_shape):
        return (*in_shape, 2)

    def fwd(self, params, x):
        return jnp.zeros((*x.shape, 2)), {}

    def bwd(self, params, res, dy):
        return jnp.zeros(dy.shape[:-1]), {}


def test_token_id_layers_need_a_vocab_and_come_first_outside_residual_blocks():
    with pytest.raises(
        ValueError, match=r"layers\[0\]: NoVocab sets integer_inputs = True, so it needs a positive int"
    ):
        jaxnet.sequential((T,), [NoVocab(), jaxnet.Flatten(), jaxnet.Dense(2)])
    with pytest.raises(ValueError, match=r"Residual.layers\[0\]: Embedding takes integer token ids"):
        Residual((Embedding(V, 1),))
