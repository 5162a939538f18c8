"""Residual: y = x + f(x) around a sequence of layers, alone, in networks and in checkpoints."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import checkpoint, verify
from jaxnet.composite import Residual
from tests.helpers import check_network_grads, lean

BLOCK = Residual((jaxnet.Dense(4, "tanh"), jaxnet.Dense(4)))


def _x(shape, seed=0, dtype=jnp.float64):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _params(layer, in_shape, dtype=jnp.float64, seed=0):
    """The layer's params as draw_params draws them (nonzero biases)."""
    net = jaxnet.sequential(in_shape, [layer, jaxnet.Flatten(), jaxnet.Dense(2)])
    return verify.draw_params(net, np.random.default_rng(seed), dtype)[0]


def _mlp(block=BLOCK, l2=0.0):
    """Dense(4, tanh) > block on (4,) > Dense(3), on (4,) inputs."""
    return jaxnet.sequential((4,), [jaxnet.Dense(4, "tanh"), block, jaxnet.Dense(3)], l2=l2, l2_bias=True)


@dataclasses.dataclass(frozen=True)
class ForgetsSkip(Residual):
    """The classic slip: dx = df, the skip path's dy left out."""

    def bwd(self, params, residuals, dy):
        dx, grads = super().bwd(params, residuals, dy)
        return dx - dy, grads


# --- the layer alone ---------------------------------------------------------------------------


def test_flat_prefixed_params_weights_init_and_kinks():
    block = Residual([jaxnet.Dense(4, "relu"), jaxnet.Activation("tanh"), jaxnet.Dense(4)])  # a list becomes a tuple
    assert isinstance(block.layers, tuple) and hash(block) == hash(Residual(block.layers))
    assert block.output_shape((4,)) == (4,)
    assert block.param_shapes((4,)) == {"0.W": (4, 4), "0.b": (4,), "2.W": (4, 4), "2.b": (4,)}
    assert block.weights((4,)) == ("0.W", "2.W") and block.l2_names((4,)) == ("0.W", "2.W")
    assert block.l2_names((4,), l2_bias=True) == ("0.W", "0.b", "2.W", "2.b")
    params = block.init(jax.random.key(0), (4,), jnp.float64)  # each sub-layer's init, with split keys
    keys = jax.random.split(jax.random.key(0), 3)
    for i in (0, 2):
        expected = block.layers[i].init(keys[i], (4,), jnp.float64)
        for name in ("W", "b"):
            np.testing.assert_array_equal(params[f"{i}.{name}"], expected[name])
    x = _x((3, 4))
    y, res = block.fwd(params, x)
    h = x
    for i, layer in enumerate(block.layers):  # y = x + f(x)
        h = layer.fwd({n: params[f"{i}.{n}"] for n in layer.param_shapes((4,))}, h)[0]
    np.testing.assert_allclose(y, x + h, rtol=1e-14)
    assert block.kink_gaps(res).shape == (3, 4)  # the relu's 4 units; tanh has no kink
    assert BLOCK.kink_gaps(BLOCK.fwd(_params(BLOCK, (4,)), x)[1]) is None


@pytest.mark.parametrize(
    "dtype, layer, in_shape",
    lean(
        [
            (jnp.float64, BLOCK, (4,)),
            (jnp.float64, Residual((jaxnet.Conv2D(2, 3, 1, "SAME", "relu"), jaxnet.Conv2D(2, 1))), (4, 4, 2)),
            (jnp.float64, Residual((Residual((jaxnet.Dense(4, "elu"),)), jaxnet.Dense(4, "sigmoid"))), (4,)),
            (jnp.float32, BLOCK, (4,)),
        ],
        lambda i, case: i == 0,
    ),
    ids=["f64-dense", "f64-conv-relu", "f64-nested", "f32-dense"],
)
def test_check_layer_passes(dtype, layer, in_shape):
    report = jaxnet.check_layer(layer, _params(layer, in_shape, dtype), _x((3, *in_shape), 1, dtype))
    assert report.ok, str(report)
    assert {"x", *(f"params['{n}']" for n in layer.param_shapes(in_shape))} == {row.path for row in report.leaves}
    assert {"jax.vjp · dy2", "finite diff · dy0", "jvp vs yours · dy1"} <= {row.witness for row in report.leaves}


def test_check_layer_catches_a_forgotten_skip_path_in_dx_only():
    layer = ForgetsSkip(BLOCK.layers)
    report = jaxnet.check_layer(layer, _params(layer, (4,)), _x((3, 4), 1))
    assert {row.path for row in report.failures()} == {"x"}  # the parameters' gradients stay right
    assert {row.witness.split(" · ")[0] for row in report.failures()} >= {"jax.vjp", "finite diff", "jvp vs yours"}


def test_jit_equals_eager():
    params, x, dy = _params(BLOCK, (4,)), _x((3, 4), 1), _x((3, 4), 2)

    def both(params, x, dy):
        y, res = BLOCK.fwd(params, x)
        return y, BLOCK.bwd(params, res, dy)

    for a, b in zip(jax.tree.leaves(both(params, x, dy)), jax.tree.leaves(jax.jit(both)(params, x, dy))):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_bad_blocks_are_clear_errors():
    with pytest.raises(ValueError, match=r"Residual: y = x \+ f\(x\) needs f to keep the input's shape \(4,\), but"):
        jaxnet.sequential((4,), [Residual((jaxnet.Dense(3),)), jaxnet.Dense(2)])
    with pytest.raises(ValueError, match=r"input's shape \(4,\), but its layers give \(3,\)"):
        Residual((jaxnet.Dense(3),)).output_shape((4,))
    with pytest.raises(ValueError, match=r"Residual.layers\[1\]: 'relu' is not a layer"):
        Residual((jaxnet.Dense(4), "relu"))
    with pytest.raises(ValueError, match="needs at least one layer"):
        Residual(())
    with pytest.raises(ValueError, match="must be a sequence of layers"):
        Residual(jaxnet.Dense(4))


# --- in networks and checkpoints ---------------------------------------------------------------


@pytest.mark.parametrize("hvp", lean([0, None], lambda i, case: i == 0), ids=["no-hvp", "every-witness"])
def test_check_grads_in_an_mlp(hvp):
    net = _mlp(l2=0.1)
    params, x, y = verify.random_problem(net, seed=1, n=5)
    report = check_network_grads(
        params,
        net,
        x,
        y,
        **({} if hvp is None else {"hvp_directions": hvp}),  # main run: the hessian-vector witness (of jax.grad) off
    )
    assert report.ok, str(report)
    assert {"[1]['0.W']", "[1]['1.b']"} <= {row.path for row in report.leaves}


@pytest.mark.parametrize("broken", lean([False, True], lambda i, case: case), ids=["right", "forgets-skip"])
def test_find_wrong_layer_names_the_block_without_its_skip(broken):
    net = _mlp(ForgetsSkip(BLOCK.layers) if broken else BLOCK)
    params, x, y = verify.random_problem(net, seed=2, n=6)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    if not broken:
        assert report.ok, str(report)
        return
    assert (report.culprit.index, report.culprit.kind, report.culprit.wrong) == (1, "ForgetsSkip", ("dx",))
    assert [v.index for v in report.verdicts if not v.ok] == [1], str(report)


def test_a_network_with_a_residual_round_trips_through_a_checkpoint(tmp_path):
    inner = Residual((jaxnet.Dense(4, "relu"), Residual((jaxnet.Activation("tanh"),))))  # nested
    net = _mlp(inner, l2=0.01)
    described = checkpoint.network_to_dict(net)
    assert described["layers"][1]["layers"][1] == {
        "kind": "Residual",
        "layers": ({"kind": "Activation", "name": "tanh"},),
    }
    assert checkpoint.network_from_dict(json.loads(json.dumps(described))) == net
    params = jaxnet.init_params(jax.random.key(0), net, jnp.float64)
    checkpoint.save(tmp_path / "residual.npz", net=net, params=params, epoch=3)
    loaded = checkpoint.load(tmp_path / "residual.npz", net)
    assert loaded.net == net and loaded.epoch == 3
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert set(loaded.params[1]) == {"0.W", "0.b"}


@pytest.mark.slow
def test_per_example_norms_from_the_sub_layers_and_check_per_example():
    block = Residual((jaxnet.Conv2D(2, 2, 1, "SAME", "tanh"), jaxnet.Activation("softplus")))
    params, x, dy = _params(block, (3, 3, 2)), _x((4, 3, 3, 2), 1), _x((4, 3, 3, 2), 2)
    _, res = block.fwd(params, x)
    np.testing.assert_allclose(
        block.grad_sq_norms(params, res, dy), jaxnet.Layer.grad_sq_norms(block, params, res, dy), rtol=1e-12
    )
    net = _mlp(l2=0.1)
    params, x, y = verify.random_problem(net, seed=3, n=5)
    assert jaxnet.check_per_example(params, net, x, y).ok


@pytest.mark.slow
def test_a_checkpoint_naming_an_unknown_nested_kind_is_a_clear_error(tmp_path):
    net = _mlp()
    checkpoint.save(tmp_path / "r.npz", net=net, params=jaxnet.init_params(jax.random.key(0), net))
    d = checkpoint.network_to_dict(net)
    d["layers"][1]["layers"] = [{"kind": "Nope"}]
    with pytest.raises(checkpoint.CheckpointError, match="unknown layer kind 'Nope'"):
        checkpoint.network_from_dict(d)
