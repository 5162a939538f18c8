"""The layer protocol (jaxnet.Layer and its defaults), check_layer, check_vjp and find_wrong_layer."""

import contextlib
import dataclasses
import io
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import checkpoint, layers, train, verify
from tests import readme_blocks
from tests.helpers import lean

ROOT = pathlib.Path(__file__).parents[1]


def _readme_layer_block():
    return readme_blocks.block("README.md", "Your own layer").padded


@pytest.mark.slow  # two trainings and three checks; .ci/run runs it
def test_readme_layer_trains_checkpoints_resumes_and_checks():
    """The README's user-written layer, run as printed: checked alone, trained, saved, loaded,
    resumed and checked in its network; the resumed run ends where 40 epochs in one go end."""
    scope, out = {"__name__": "__main__"}, io.StringIO()  # as a script runs it
    with contextlib.redirect_stdout(out):
        exec(compile(_readme_layer_block(), "README.md", "exec"), scope)
    lines = out.getvalue().splitlines()
    assert lines[0] == "check_layer: True" and lines[-1] == "check_grads: True", out.getvalue()
    assert float(lines[1].split()[-1]) >= 0.8  # the spiral's three arms, 40 epochs
    net, s = scope["net"], scope["s"]
    whole = train.fit(
        net,
        jaxnet.init_params(jax.random.key(1), net),
        s.x_train,
        s.y_train,
        scope["opt"],
        epochs=40,
        batch_size=32,
        key=jax.random.key(2),
    )
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(scope["result"].params)):
        np.testing.assert_array_equal(a, b)
    assert checkpoint.network_to_dict(net)["layers"][1] == {"kind": "__main__:ScaledTanh"}


# --- the base's defaults ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Affine(jaxnet.Layer):
    """``y = x W ∘ s + c``: a weight (two axes), a scale and a shift (one axis each)."""

    features: int = 3

    def output_shape(self, in_shape):
        return (self.features,)

    def param_shapes(self, in_shape):
        return {"W": (in_shape[0], self.features), "s": (self.features,), "c": (self.features,)}

    def fwd(self, params, x):
        u = x @ params["W"]  # [batch, n_in] @ [n_in, n_out]
        return u * params["s"][None] + params["c"][None], {"x": x, "u": u}

    def bwd(self, params, res, dy):
        du = dy * params["s"][None]  # [batch, n_out]
        return du @ params["W"].T, {"W": res["x"].T @ du, "s": jnp.sum(dy * res["u"], axis=0), "c": jnp.sum(dy, axis=0)}


def test_defaults_weights_l2_and_init():
    layer = Affine(3)
    assert layer.weights((4,)) == ("W",)
    assert layer.l2_names((4,)) == ("W",) and set(layer.l2_names((4,), l2_bias=True)) == {"W", "s", "c"}
    params = layer.init(jax.random.key(0), (4,), jnp.float32)
    np.testing.assert_array_equal(
        params["W"], jax.nn.initializers.glorot_normal()(jax.random.key(0), (4, 3), jnp.float32)
    )
    assert not np.any(params["s"]) and not np.any(params["c"])
    assert layer.kink_gaps({"x": jnp.ones((2, 4))}) is None
    net = jaxnet.mlp([4, 5, 3], "relu")  # Dense: He-normal for the ReLU family, the layer's key, zero biases
    keys = jax.random.split(jax.random.key(3), 2)
    params = jaxnet.init_params(jax.random.key(3), net)
    np.testing.assert_array_equal(params[0]["W"], jax.nn.initializers.he_normal()(keys[0], (4, 5), jnp.float32))
    np.testing.assert_array_equal(params[1]["W"], jax.nn.initializers.glorot_normal()(keys[1], (5, 3), jnp.float32))


def test_every_kind_is_a_registered_layer():
    for cls in (jaxnet.Dense, jaxnet.Conv2D, jaxnet.MaxPool2D, jaxnet.AvgPool2D, jaxnet.Flatten, jaxnet.Activation):
        assert issubclass(cls, jaxnet.Layer) and layers.layer_kind(cls.__name__) is cls
    assert layers.kind_name(Affine) == "tests.test_layer_protocol:Affine"
    assert layers.layer_kind("tests.test_layer_protocol:Affine") is Affine
    assert layers.layer_kind("__main__:Affine") is Affine  # saved by a script, loaded where the class now lives
    with pytest.raises(KeyError, match="unknown layer kind 'otherlib:Affine'"):
        layers.layer_kind("otherlib:Affine")  # another library's kind of the same name is not this one
    with pytest.raises(KeyError, match="unknown layer kind 'Nope'"):
        layers.layer_kind("Nope")


@pytest.mark.parametrize(
    "layer, in_shape",
    lean(
        [(jaxnet.Dense(4, "tanh"), (5,)), (jaxnet.Conv2D(3, 2, 1, "VALID", "tanh"), (4, 4, 2))], lambda i, case: i == 0
    ),
    ids=["dense", "conv"],
)
def test_default_per_example_norms_match_the_closed_forms(layer, in_shape):
    """The base's grad_sq_norms (bwd per example) equals Dense's and Conv2D's closed forms."""
    rng = np.random.default_rng(0)
    net = jaxnet.sequential(in_shape, [layer, jaxnet.Flatten(), jaxnet.Dense(2)])
    params, x, _ = verify.random_problem(net, seed=1, n=5)
    _, res = layer.fwd(params[0], x)
    dy = jnp.asarray(rng.normal(size=(5, *layer.output_shape(in_shape))))
    np.testing.assert_allclose(
        jaxnet.Layer.grad_sq_norms(layer, params[0], res, dy), layer.grad_sq_norms(params[0], res, dy), rtol=1e-12
    )


def test_a_user_layer_checks_out_per_example():
    """A network with a user layer (the default grad_sq_norms) against vmap(jax.grad)."""
    net = jaxnet.sequential((4,), [Affine(3), jaxnet.Dense(2)], l2=0.1, l2_bias=True)
    params, x, y = verify.random_problem(net, seed=2, n=6)
    assert jaxnet.check_per_example(params, net, x, y).ok


def test_layers_that_are_not_frozen_dataclass_layers_are_refused():
    @dataclasses.dataclass
    class Mutable(jaxnet.Layer):
        def output_shape(self, in_shape):
            return (int(np.prod(in_shape)),)

    with pytest.raises(ValueError, match=r"layers\[0\]: Mutable must be a frozen dataclass"):
        jaxnet.sequential((2, 2, 1), [Mutable(), jaxnet.Dense(2)])
    with pytest.raises(ValueError, match=r"layers\[1\]: 'relu' is not a layer"):
        jaxnet.sequential((2,), [jaxnet.Dense(2), "relu"])


def test_a_checkpoint_naming_an_unknown_kind_is_a_clear_error(tmp_path):
    net = jaxnet.sequential((4,), [Affine(3), jaxnet.Dense(2)])
    path = tmp_path / "affine.npz"
    checkpoint.save(path, net=net, params=jaxnet.init_params(jax.random.key(0), net))
    assert checkpoint.load(path).net == net
    kind = layers.kind_name(Affine)
    saved = layers._KINDS.pop(kind)  # as in a process that never defined it
    try:
        with pytest.raises(checkpoint.CheckpointError, match=f"unknown layer kind '{kind}': define"):
            checkpoint.load(path)
    finally:
        layers._KINDS[kind] = saved


# --- check_layer and check_vjp -----------------------------------------------------------------


def _x(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


@pytest.mark.parametrize(
    "layer, in_shape",
    lean(
        [
            (jaxnet.Dense(3, "relu"), (4,)),
            (jaxnet.Conv2D(2, 2, 2, "SAME", "elu"), (5, 5, 2)),
            (jaxnet.MaxPool2D(2, 1), (4, 4, 2)),
            (Affine(3), (4,)),
        ],
        lambda i, case: i == 3,
    ),
    ids=["dense-relu", "conv", "maxpool", "user"],
)
def test_check_layer_passes_every_right_backward(layer, in_shape):
    net = jaxnet.sequential(in_shape, [layer, jaxnet.Flatten(), jaxnet.Dense(2)])
    params, x, _ = verify.random_problem(net, seed=3, n=4)
    report = jaxnet.check_layer(layer, params[0], x)
    assert report.ok, str(report)
    paths = {row.path for row in report.leaves}
    assert "x" in paths and {f"params['{n}']" for n in params[0]} <= paths
    assert {"jax.vjp · dy2", "finite diff · dy0", "jvp vs yours · dy1"} <= {row.witness for row in report.leaves}


@dataclasses.dataclass(frozen=True)
class AffineForgetsScaleInDx(Affine):
    def bwd(self, params, res, dy):
        _dx, grads = super().bwd(params, res, dy)
        return dy @ params["W"].T, grads  # dx without the ∘ s


@dataclasses.dataclass(frozen=True)
class AffineShiftMean(Affine):
    def bwd(self, params, res, dy):
        dx, grads = super().bwd(params, res, dy)
        return dx, {**grads, "c": jnp.mean(dy, axis=0)}  # the shift's gradient averaged, not summed


@pytest.mark.parametrize("layer, wrong", [(AffineForgetsScaleInDx(3), {"x"}), (AffineShiftMean(3), {"params['c']"})])
def test_check_layer_goes_red_on_a_wrong_backward_in_exactly_that_output(layer, wrong):
    params = verify.draw_params(
        jaxnet.sequential((4,), [layer, jaxnet.Dense(2)]), np.random.default_rng(0), jnp.float64
    )[0]
    report = jaxnet.check_layer(layer, params, _x((5, 4)))
    assert {row.path for row in report.failures()} == wrong
    assert {row.witness.split(" · ")[0] for row in report.failures()} >= {"jax.vjp", "finite diff", "jvp vs yours"}


def _matmul_tanh(x, w):
    return jnp.tanh(x @ w)


def _matmul_tanh_vjp(primals, dy, slip=1.0):
    x, w = primals
    t = jnp.tanh(x @ w)  # [batch, n_out]
    dz = dy * (1 - t**2)
    return dz @ w.T, slip * (x.T @ dz)


def _numpy_matmul_tanh(x, w):
    return np.tanh(np.asarray(x) @ np.asarray(w))


def _numpy_matmul_tanh_vjp(primals, dy, slip=1.0):
    x, w = map(np.asarray, primals)
    dz = np.asarray(dy) * (1 - np.tanh(x @ w) ** 2)
    return dz @ w.T, slip * (x.T @ dz)


@pytest.mark.parametrize("numpy", [False, True], ids=["jax", "numpy"])
def test_check_vjp_passes_and_goes_red(numpy):
    f, f_vjp = (_numpy_matmul_tanh, _numpy_matmul_tanh_vjp) if numpy else (_matmul_tanh, _matmul_tanh_vjp)
    x, w = _x((5, 3), 1), _x((3, 2), 2)
    if numpy:
        x, w = np.asarray(x), np.asarray(w)
    report = jaxnet.check_vjp(f, f_vjp, x, w)
    assert report.ok, str(report)
    assert {row.path for row in report.leaves} == {"x", "w"}
    witnesses = {row.witness.split(" · ")[0] for row in report.leaves}
    assert witnesses == (
        {"finite diff"}
        if numpy
        else {"jax.vjp", "finite diff", "ref vs finite diff", "jvp vs jax.vjp", "jvp vs yours", "hessian-vector"}
    )
    assert any("NumPy code" in note for note in report.notes) == numpy
    bad = jaxnet.check_vjp(f, lambda p, dy: f_vjp(p, dy, slip=1.01), x, w, cotangents=1)
    assert {row.path for row in bad.failures()} == {"w"}


# --- the first wrong layer -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NoActivationDerivative(jaxnet.Dense):
    def bwd(self, params, residuals, da):
        dz = da  # δ = da: g'(z) dropped
        return dz @ params["W"].T, {"W": residuals.x.T @ dz, "b": jnp.sum(dz, axis=0)}


@dataclasses.dataclass(frozen=True)
class WeightGradFromDa(jaxnet.Dense):
    def bwd(self, params, residuals, da):
        dx, grads = super().bwd(params, residuals, da)
        return dx, {**grads, "W": residuals.x.T @ da}  # ∂W from da instead of δ


@dataclasses.dataclass(frozen=True)
class BiasMeanNotSum(jaxnet.Dense):
    def bwd(self, params, residuals, da):
        dx, grads = super().bwd(params, residuals, da)
        return dx, {**grads, "b": grads["b"] / da.shape[0]}  # Σ_batch δ averaged


@dataclasses.dataclass(frozen=True)
class InputGradUntransposed(jaxnet.Dense):
    def bwd(self, params, residuals, da):
        _dx, grads = super().bwd(params, residuals, da)
        return da @ params["W"], grads  # δ W instead of δ Wᵀ (g' dropped too); needs a square W


@dataclasses.dataclass(frozen=True)
class SoftplusSigmoidSlip(jaxnet.Activation):
    def bwd(self, params, residuals, da):
        return da * jax.nn.sigmoid(residuals["a"]), {}  # softplus' evaluated at a instead of z


def _five_layers(i, broken):
    """Dense(5, tanh) > Dense(5, sigmoid) > Activation(softplus) > Dense(5, elu) > Dense(3), layer i broken."""
    kinds = [
        jaxnet.Dense(5, "tanh"),
        jaxnet.Dense(5, "sigmoid"),
        jaxnet.Activation("softplus"),
        jaxnet.Dense(5, "elu"),
        jaxnet.Dense(3),
    ]
    kinds[i] = broken
    return jaxnet.sequential((5,), kinds, l2=0.01)


@pytest.mark.parametrize(
    "i, broken, wrong",
    lean(
        [
            (0, NoActivationDerivative(5, "tanh"), {"dx", "dparams['W']", "dparams['b']"}),
            (1, WeightGradFromDa(5, "sigmoid"), {"dparams['W']"}),
            (2, SoftplusSigmoidSlip("softplus"), {"dx"}),
            (3, BiasMeanNotSum(5, "elu"), {"dparams['b']"}),
            (3, InputGradUntransposed(5, "elu"), {"dx"}),  # W of layer 3 is [5, 5]
        ],
        lambda i, case: i in (0, 1),
    ),
    ids=["activation-derivative-dropped", "dW-from-da", "derivative-at-a", "bias-mean", "dx-untransposed"],
)
def test_find_wrong_layer_names_the_broken_layer_and_no_other(i, broken, wrong):
    net = _five_layers(i, broken)
    params, x, y = verify.random_problem(net, seed=i, n=8)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.culprit is not None and (report.culprit.index, report.culprit.kind) == (i, type(broken).__name__)
    assert set(report.culprit.wrong) == wrong
    assert [v.index for v in report.verdicts if not v.ok] == [i], str(report)
    assert f"first wrong layer from the output: layers[{i}] ({type(broken).__name__})" in str(report)


def test_find_wrong_layer_passes_a_right_network():
    net = _five_layers(2, jaxnet.Activation("softplus"))
    params, x, y = verify.random_problem(net, seed=0, n=8)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.ok and report.culprit is None and len(report.verdicts) == 6
    assert "every layer's backward agrees with jax.vjp" in str(report)


@pytest.mark.slow  # test_mutations' test_cli_check_goes_red covers the notes' mode in the same run
def test_jaxnet_check_names_the_first_wrong_layer(monkeypatch, capsys):
    """Under a mismatch, ``jaxnet check`` prints each layer's verdict and names the first wrong one."""
    from jaxnet import cli

    def no_activation_derivative(self, params, residuals, da):
        return da @ params["W"].T, {"W": residuals.x.T @ da, "b": jnp.sum(da, axis=0)}

    monkeypatch.setattr(jaxnet.Dense, "bwd", no_activation_derivative)
    assert cli.main(["check", "--preset", "000-spiral", "--batch", "8"]) == 1
    out = capsys.readouterr().out
    assert "each layer's backward, given autodiff's upstream dy, against jax.vjp" in out
    assert "first wrong layer from the output: layers[0] (Dense) in dparams['W'], dparams['b'], dx" in out


@dataclasses.dataclass(frozen=True)
class ForgetsBias(jaxnet.Dense):
    def bwd(self, params, residuals, da):
        dx, grads = super().bwd(params, residuals, da)
        return dx, {"W": grads["W"]}  # no gradient for b at all


@pytest.mark.slow
def test_a_backward_with_missing_leaves_is_named_not_a_crash():
    net = _five_layers(3, ForgetsBias(5, "elu"))
    params, x, y = verify.random_problem(net, seed=0, n=6)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.culprit.index == 3 and report.culprit.wrong == ("dparams (tree)",)
    report = jaxnet.check_layer(ForgetsBias(5, "elu"), params[3], x[:, :5], cotangents=1, hvp_directions=0)
    assert [row.path for row in report.failures()] == ["(tree)"] and "is not the params'" in report.notes[-2]


@dataclasses.dataclass(frozen=True)
class Scale(jaxnet.Layer):
    """``y = x ∘ factors``: a layer whose field is a tuple."""

    factors: tuple = (1.0, 2.0)

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def fwd(self, params, x):
        return x * jnp.asarray(self.factors)[None], {}

    def bwd(self, params, residuals, dy):
        return dy * jnp.asarray(self.factors)[None], {}


def test_a_user_layer_with_tuple_fields_round_trips_through_a_checkpoint(tmp_path):
    net = jaxnet.sequential((2,), [Scale((0.5, 3.0)), jaxnet.Dense(2)])
    checkpoint.save(tmp_path / "scale.npz", net=net, params=jaxnet.init_params(jax.random.key(0), net))
    assert checkpoint.load(tmp_path / "scale.npz", net).net == net


@dataclasses.dataclass(frozen=True)
class TwoWeights(jaxnet.Layer):
    """``y = x U V``: two weights, drawn from a split key; ``weight_names`` leaves V out of L2."""

    weight_names = ("U",)

    def output_shape(self, in_shape):
        return (2,)

    def param_shapes(self, in_shape):
        return {"U": (in_shape[0], 3), "V": (3, 2)}

    def fwd(self, params, x):
        return x @ params["U"] @ params["V"], {}

    def bwd(self, params, res, dy):
        raise NotImplementedError


def test_several_weights_and_weight_names():
    layer = TwoWeights()
    assert layer.weights((4,)) == ("U",) and layer.l2_names((4,)) == ("U",)
    params = layer.init(jax.random.key(0), (4,), jnp.float32)  # only U is a weight: V starts at 0
    np.testing.assert_array_equal(
        params["U"], jax.nn.initializers.glorot_normal()(jax.random.key(0), (4, 3), jnp.float32)
    )
    assert not np.any(params["V"])
    both = dataclasses.replace(layer)
    object.__setattr__(both, "weight_names", None)  # the default rule: both have two axes
    params = both.init(jax.random.key(0), (4,), jnp.float32)
    _k_u, k_v = jax.random.split(jax.random.key(0))
    np.testing.assert_array_equal(params["V"], jax.nn.initializers.glorot_normal()(k_v, (3, 2), jnp.float32))
    with pytest.raises(ValueError, match=r"weight_names names \['W'\], which are not its parameters"):
        object.__setattr__(both, "weight_names", ("W",))
        both.weights((4,))


@pytest.mark.slow
def test_check_layer_excludes_the_examples_at_a_kink():
    layer = jaxnet.Dense(2, "relu")
    params = {"W": jnp.eye(2), "b": jnp.array([0.3, -0.2])}
    x = jnp.array([[1.0, 2.0], [-0.3 + 1e-7, 1.0], [0.5, -1.0]])  # example 1: z[1, 0] = 1e-7, at the kink
    report = jaxnet.check_layer(layer, params, x)
    assert (
        report.ok
        and "1 pre-activation(s)/pooling window(s) within 0.0001 of a kink in 1 of 3 example(s); "
        "those 1 excluded, checked on the other 2"
        in report.notes[0]
    )


@dataclasses.dataclass(frozen=True)
class PoolToEvery(jaxnet.MaxPool2D):
    def bwd(self, params, residuals, dy):
        dx = jnp.zeros_like(residuals["x"])
        for index, _ in self._offsets(residuals["x"], *dy.shape[1:3]):
            dx = dx.at[index].add(dy)  # δ to every entry of the window, not the arg-max
        return dx, {}


@pytest.mark.slow
@pytest.mark.parametrize("pool", [jaxnet.MaxPool2D(2), PoolToEvery(2)], ids=["right", "pool-to-every"])
def test_find_wrong_layer_in_a_cnn(pool):
    net = jaxnet.sequential(
        (6, 6, 1), [jaxnet.Conv2D(3, 3, 1, "SAME", "tanh"), pool, jaxnet.Flatten(), jaxnet.Dense(3)]
    )
    params, x, y = verify.random_problem(net, seed=0, n=4)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert report.ok == (type(pool) is jaxnet.MaxPool2D), str(report)
    if not report.ok:
        assert (report.culprit.index, report.culprit.wrong) == (1, ("dx",))
        assert [v.index for v in report.verdicts if not v.ok] == [1]


@pytest.mark.slow
def test_find_wrong_layer_with_params_on_another_device():
    """Params on cpu:1, float64 references on cpu:0: autodiff's dy is moved to where your bwd runs."""
    import subprocess
    import sys

    code = """
import jax, jax.numpy as jnp, jaxnet
jax.config.update("jax_enable_x64", True)
from jaxnet import verify
net = jaxnet.mlp([3, 4, 2], "tanh")
params, x, y = verify.to_device(verify.random_problem(net, seed=0, n=4), jax.devices("cpu")[1])
report = jaxnet.find_wrong_layer(params, net, x, y)
print(report.ok, report.notes[-1])
"""
    env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True references on cpu:0; your bwd on cpu:1"


def test_a_gradient_of_the_wrong_tree_is_one_failing_row():
    loss = lambda p, x: jnp.sum(jnp.tanh(x @ p["W"]) + p["b"][None])
    params, x = {"W": _x((3, 2), 4), "b": _x((2,), 5)}, _x((4, 3), 6)
    report = jaxnet.check_grads(loss, lambda p, x: {"W": jax.grad(loss)(p, x)["W"]}, params, x)
    assert [row.path for row in report.leaves] == ["(tree)"] and not report.ok
    assert "is not the params'" in report.notes[0]


@dataclasses.dataclass(frozen=True)
class DxAsTuple(jaxnet.Dense):
    def bwd(self, params, residuals, da):
        dx, grads = super().bwd(params, residuals, da)
        return (dx,), grads  # dx wrapped in a tuple


@dataclasses.dataclass(frozen=True)
class NumPyBackward(jaxnet.Dense):
    def bwd(self, params, residuals, da):  # right, but in NumPy: find_wrong_layer falls back to eager
        dx, grads = super().bwd(params, residuals, da)
        return jnp.asarray(np.asarray(dx)), grads


def test_find_wrong_layer_with_a_dx_of_the_wrong_tree_and_an_untraceable_bwd():
    net = jaxnet.sequential((3,), [DxAsTuple(4, "tanh"), NumPyBackward(2)])
    params, x, y = verify.random_problem(net, seed=0, n=4)
    report = jaxnet.find_wrong_layer(params, net, x, y)
    assert [(v.index, v.wrong) for v in report.verdicts if not v.ok] == [(0, ("dx (tree)",))], str(report)
    assert report.verdicts[0].ok  # the head; layers[1] (NumPy bwd) ok, layers[0]'s dparams still compared
    assert {row.path for row in report.verdicts[-1].report.leaves} == {"dparams['W']", "dparams['b']", "dx (tree)"}


def test_check_layer_of_float32_params_and_float64_numpy_inputs_with_x64_off():
    """Mixed float32/float64 inputs run as JAX runs them (float32 with x64 off): no false FAIL."""
    layer = jaxnet.Dense(2, "tanh")
    rng = np.random.default_rng(0)
    with jax.enable_x64(False):
        params = {
            "W": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=2), jnp.float32),
        }
        report = jaxnet.check_layer(layer, params, rng.normal(size=(4, 3)), cotangents=1)
        assert report.ok and report.leaves[0].rtol == 1e-4, str(report)
    assert jaxnet.gradcheck.given_in_float64({"a": np.zeros(2), "b": np.zeros(2, np.float32)}) is False
    assert jaxnet.gradcheck.given_in_float64((np.zeros(2), 1.0, [2.0])) is True
