"""Bad input gets a ValueError that names the input and what was expected, at trace time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet

from .helpers import make_net, random_problem


@pytest.fixture(scope="module")
def problem():
    net = make_net("softmax_labels", 1, "tanh")
    params, x, y = random_problem(net, "softmax_labels", n=4)
    return net, params, x, y


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "make_x,message",
    [
        (lambda x: x[:, :2], r"x: expected shape \[batch, 3\] or a single example \[3\], got \[4, 2\]"),
        (lambda x: x[None], r"x: expected shape \[batch, 3\].*got \[1, 4, 3\]"),
        (lambda x: x[0, 0], r"x: expected shape .*got \[\]"),
        (lambda x: x.astype(jnp.complex64), r"x: expected real numbers, got dtype complex64"),
    ],
)
def test_bad_x_raises_at_trace_time(problem, make_x, message, jit):
    net, params, x, y = problem
    fn = jax.jit(jaxnet.manual_grads) if jit else jaxnet.manual_grads
    with pytest.raises(ValueError, match=message):
        fn(params, net, make_x(x), y)
    with pytest.raises(ValueError, match=message):
        (jax.jit(jaxnet.forward) if jit else jaxnet.forward)(params, net, make_x(x))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "y,message",
    [
        (jnp.array([0.0, 1.0, 2.0, 1.0]), r"y: softmax_cross_entropy labels must be integers, got dtype float64"),
        (jnp.array([0, 1, 2]), r"y: expected labels of shape \(4,\) to match x, got \(3,\)"),
        (
            jnp.zeros((4, 2)),
            r"y: softmax_cross_entropy expects integer labels of shape "
            r"\(4,\) or probabilities of shape \(4, 3\), got \(4, 2\)",
        ),
        (jnp.zeros((4, 3, 1)), r"got \(4, 3, 1\)"),
    ],
)
def test_bad_targets_raise_at_trace_time(problem, y, message, jit):
    net, params, x, _ = problem
    fn = jax.jit(jaxnet.loss) if jit else jaxnet.loss
    with pytest.raises(ValueError, match=message):
        fn(params, net, x, y)


@pytest.mark.parametrize("bad", [[0, 1, 3, 1], [0, -1, 2, 1]])
def test_labels_out_of_range_eager(problem, bad):
    net, params, x, _ = problem
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 3\) for 3 classes"):
        jaxnet.manual_grads(params, net, x, jnp.array(bad))
    with pytest.raises(ValueError, match=r"labels must lie in"):
        jaxnet.check_inputs(params, net, x, np.array(bad))  # the explicit check, for jitted loops


def test_nan_inputs_and_targets_eager(problem):
    net, params, x, y = problem
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        jaxnet.loss(params, net, x.at[1, 2].set(jnp.nan), y)
    reg = make_net("squared_error", 1, "tanh")
    with pytest.raises(ValueError, match="y: squared_error targets contain NaN or Inf"):
        jaxnet.loss(
            params[:1] + [{"W": params[1]["W"][:, :2], "b": params[1]["b"][:2]}], reg, x, jnp.full((4, 2), jnp.inf)
        )
    sig = make_net("sigmoid_multilabel", 1, "tanh")
    with pytest.raises(ValueError, match=r"y: sigmoid_cross_entropy targets must lie in \[0.0, 1.0\]"):
        jaxnet.loss(params, sig, x, jnp.full((4, 3), 2.0))


def test_params_that_do_not_match_the_network(problem):
    net, params, x, y = problem
    with pytest.raises(
        ValueError, match=r"params: expected a list with one entry per layer \(2\), got a list of length 1"
    ):
        jaxnet.loss(params[:1], net, x, y)
    wrong = [params[0], {"W": params[1]["W"].T, "b": params[1]["b"]}]
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\]: expected shape \(4, 3\), got \(3, 4\)"):
        jax.jit(jaxnet.manual_grads)(wrong, net, x, y)
    with pytest.raises(ValueError, match=r"params\[0\]: expected keys \['W', 'b'\], got \['W'\]"):
        jaxnet.loss([{"W": params[0]["W"]}, params[1]], net, x, y)
    mixed = [jax.tree.map(lambda a: a.astype(jnp.float32), params[0]), params[1]]
    with pytest.raises(ValueError, match="dtype float64 differs"):
        jaxnet.loss(mixed, net, x, y)
    with pytest.raises(ValueError, match="net must be a jaxnet Network"):
        jaxnet.loss(params, "mlp", x, y)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(sizes=[3, 0, 2]), r"sizes\[1\] must be a positive integer, got 0"),
        (dict(sizes=[3, 2.5, 2]), r"sizes\[1\] must be a positive integer, got 2.5"),
        (dict(sizes=[3, True, 2]), r"sizes\[1\] must be a positive integer, got True"),
        (dict(sizes=[3]), "at least an input and an output size"),
        (dict(sizes="3-4-2"), "sizes must be a sequence, got .3-4-2."),
        (dict(sizes=[3, 4, 2], activation="swish"), r"unknown activation 'swish'; expected one of \["),
        (dict(sizes=[3, 4, 4, 2], activation=["relu"]), "got 1 names for 2 hidden layers"),
        (dict(sizes=[3, 4, 2], loss="hinge"), r"unknown loss 'hinge'; expected one of \["),
        (dict(sizes=[3, 4, 2], reduction="avg"), r"unknown reduction 'avg'; expected one of \['mean', 'sum'\]"),
        (dict(sizes=[3, 4, 2], l2=-1.0), "l2 must be a non-negative finite number, got -1.0"),
        (dict(sizes=[3, 4, 2], l2=float("nan")), "l2 must be a non-negative finite number"),
        (dict(sizes=[3, 4, 2], l2_bias="yes"), "l2_bias must be True or False"),
        (dict(sizes=[3, 4, 1], loss="softmax_cross_entropy"), "softmax_cross_entropy needs at least 2 outputs, got 1"),
    ],
)
def test_bad_descriptions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        jaxnet.mlp(**kwargs)


def test_bad_init_dtype():
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype, got int32"):
        jaxnet.init_params(jax.random.key(0), jaxnet.mlp([2, 2]), jnp.int32)


def test_empty_batch_and_complex_targets(problem):
    net, params, x, y = problem
    with pytest.raises(ValueError, match=r"x: the batch is empty \(shape \[0, 3\]\)"):
        jaxnet.loss(params, net, x[:0], y[:0])
    with pytest.raises(ValueError, match="y: expected real numbers or integer labels, got dtype complex"):
        jaxnet.loss(params, net, x, jnp.zeros((4, 3), jnp.complex64))


def test_single_example_target_error_says_what_happened(problem):
    net, params, x, _ = problem
    with pytest.raises(ValueError, match=r"x is one example, so y was given a batch axis: shape \(1,\) -> \(1, 1\)"):
        jaxnet.loss(params, net, x[0], jnp.array([1]))


def test_bad_l2_override(problem):
    net, params, x, y = problem
    with pytest.raises(ValueError, match=r"l2 must be a non-negative finite number, got -0\.5"):
        jaxnet.loss(params, net, x, y, l2=-0.5)
    with pytest.raises(ValueError, match="l2: expected a non-negative number or a real scalar array"):
        jaxnet.manual_grads(params, net, x, y, l2=jnp.ones(2))


def test_bad_layers_keys_and_nets(problem):
    net, params, x, _ = problem
    with pytest.raises(ValueError, match=r"layers\[0\]: 5 is not a layer: .*subclassing jaxnet.Layer"):
        jaxnet.Network((3,), (5,))
    with pytest.raises(ValueError, match=r"key must be one PRNG key from jax\.random\.key"):
        jaxnet.init_params(0, net)
    with pytest.raises(ValueError, match="net must be a jaxnet Network"):
        jaxnet.predict(params, "mlp", x)
