"""Convolutional layers on the same protocol: hand-derived backward vs jax.grad and finite differences."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnet
from jaxnet import verify
from jaxnet.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D
from jaxnet.verify import finite_difference_grads

from .helpers import InputProbe, assert_grads_close, assert_matches_fd, autodiff_grads, fresh_jit, lean


@jax.jit
def _manual_fd(params, net, x, y):
    """One compiled program per network: cheaper than eager dispatch for one-off conv shapes
    (the finite differences in one chunk of every parameter: one vmapped loss to compile)."""
    every = sum(a.size for a in jax.tree.leaves(params))
    fd = finite_difference_grads(lambda p: jaxnet.loss(p, net, x, y), params, 1e-6, chunk=every)
    return jaxnet.manual_grads(params, net, x, y), fd


def _manual_autodiff_fd(params, net, x, y):
    """Yours and finite differences on the working device; the float64 jax.grad reference on
    the CPU device, exact on every backend (outside the jit above: it is placed there)."""
    mine, fd = _manual_fd(params, net, x, y)
    return mine, autodiff_grads(params, net, x, y, jit=True), fd


def _check(layers, shape, loss="softmax_cross_entropy", seed=0, probe=True):
    """``layers`` then Flatten and Dense, against jax.grad and finite differences. ``probe``: an
    :class:`InputProbe` (``x ∘ W + b``, parameters of the input's shape) comes first, so that the
    input gradient ``dx`` of the first layer under test is checked too, element by element
    (``∂L/∂b = Σ_batch dx``); without it a network's first layer has its ``dx`` thrown away."""
    k = 3 if loss == "softmax_cross_entropy" else 2
    first = [InputProbe()] if probe else []
    net = jaxnet.sequential(shape, [*first, *layers, Flatten(), Dense(k)], loss, l2=0.01)
    params, x, y = verify.random_problem(net, seed=seed, n=2)
    mine, ref, fd = _manual_autodiff_fd(params, net, x, y)
    assert_grads_close(mine, ref, 1e-10, "jax.grad")
    assert_matches_fd(mine, fd, jaxnet.loss(params, net, x, y))


PADDINGS = ["VALID", "SAME", ((1, 0), (2, 1))]  # explicit ((top, bottom), (left, right)): top ≠ left


# stride × padding × channels × size; the main suite: every stride with every padding, the four
# (channels, size) pairs spread over them; -m slow: the rest
CONV_GRID = list(itertools.product([1, 2], PADDINGS, [1, 3], [5, 6]))


@pytest.mark.parametrize(
    "stride,padding,channels,size",
    lean(CONV_GRID, lambda i, c: i % 4 == (i // 4) % 4),
    ids=[
        f"{s}-{p if isinstance(p, str) else 'explicit'}-{c}-{'odd' if n == 5 else 'even'}".lower()
        for s, p, c, n in CONV_GRID
    ],
)
def test_conv2d(stride, padding, channels, size):
    _check([Conv2D(2, 3, stride, padding, "tanh")], (size, size, channels))


@pytest.mark.parametrize(
    "stride,size",
    lean([(1, 5), (1, 6), (2, 5), (2, 6)], lambda i, c: i in (0, 3)),
    ids=["1-odd", "1-even", "2-odd", "2-even"],
)
def test_conv2d_other_explicit_padding(stride, size):
    """No top and no right padding, two at the bottom, one on the left: every side differs."""
    _check([Conv2D(2, 3, stride, ((0, 2), (1, 0)), "tanh")], (size, size, 2))


# pool × (window, stride) × (size, channels): windows (2, 2) and (3, 2) tile one size, not the other;
# the main suite takes one size per pool and window, alternating; -m slow the rest
POOL_GRID = list(itertools.product([MaxPool2D, AvgPool2D], [(2, 1), (2, 2), (3, 2)], [(5, 1), (6, 3)]))


@pytest.mark.parametrize(
    "pool,window,stride,size,channels",
    lean([(p, w, s, n, c) for p, (w, s), (n, c) in POOL_GRID], lambda i, c: i % 2 == (i // 2) % 2),
    ids=[
        f"{p.__name__}-{({(2, 1): 'overlap-s1', (2, 2): 'tiling', (3, 2): 'overlap-s2'})[ws]}-"
        f"{'odd-1ch' if n == 5 else 'even-3ch'}"
        for p, ws, (n, c) in POOL_GRID
    ],
)
def test_pooling(pool, window, stride, size, channels):
    _check([pool(window, stride)], (size, size, channels))


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_cross_entropy"])
def test_whole_cnn(loss):
    layers = [Conv2D(3, 3, 1, "SAME", "relu"), MaxPool2D(2), Conv2D(4, (2, 2), 2, "VALID", "elu"), AvgPool2D(2, 1)]
    _check(layers, (8, 8, 1), loss, seed=1)


def test_max_pool_tie_rule():
    """Ties: the whole δ goes to the first maximal entry in row-major window order."""
    pool = MaxPool2D(2)
    x = jnp.array([[1.0, 3.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)  # two entries share the max 3
    y, res = pool.fwd({}, x)
    dx, _ = pool.bwd({}, res, jnp.full(y.shape, 5.0))
    np.testing.assert_array_equal(dx.reshape(2, 2), [[0.0, 5.0], [0.0, 0.0]])
    assert float(jnp.min(pool.kink_gaps(res))) == 1.0  # an exact tie stays a tie: not a kink, the gap to 2 is
    x = jnp.array([[1.0, 3.0], [2.9999, 2.0]]).reshape(1, 2, 2, 1)  # a near tie: a small step crosses it
    assert float(jnp.min(pool.kink_gaps(pool.fwd({}, x)[1]))) == pytest.approx(1e-4)


def test_cnn_checkpoint_round_trip(tmp_path):
    from jaxnet import checkpoint

    net = jaxnet.sequential(
        (8, 8, 1), [Conv2D(4, 3, padding="SAME", activation="relu"), MaxPool2D(2), Flatten(), Dense(10)]
    )
    params = jaxnet.init_params(jax.random.key(0), net)
    assert [sorted(p) for p in params] == [["W", "b"], [], [], ["W", "b"]] and params[0]["W"].shape == (3, 3, 1, 4)
    checkpoint.save(tmp_path / "c.npz", net=net, params=params)
    assert checkpoint.load(tmp_path / "c.npz", net).net == net


@pytest.mark.parametrize(
    "build,message",
    [
        (
            lambda: jaxnet.sequential((8, 8, 1), [Conv2D(2, 5, padding="VALID"), Conv2D(2, 5), Flatten(), Dense(3)]),
            r"Conv2D: kernel \(5, 5\) is larger than the padded input \(4, 4\)",
        ),
        (
            lambda: jaxnet.sequential((8, 8), [Conv2D(2, 3), Flatten(), Dense(3)]),
            r"Conv2D expects per-example images \[height, width, channels\], got shape \(8, 8\)",
        ),
        (
            lambda: jaxnet.sequential((4, 4, 1), [MaxPool2D(5), Flatten(), Dense(3)]),
            r"MaxPool2D: window \(5, 5\) is larger than the input",
        ),
        (lambda: jaxnet.sequential((8, 8, 1), [Conv2D(2, 3), Dense(3)]), "Dense expects flat per-example inputs"),
        (lambda: Conv2D(2, 3, padding="FULL"), "padding must be 'VALID', 'SAME'"),
        (lambda: Conv2D(2, 0), "Conv2D.kernel_size must be a positive integer"),
    ],
)
def test_bad_cnn_descriptions(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_wrong_image_shape_raises_at_trace_time():
    net = jaxnet.sequential((8, 8, 1), [Conv2D(2, 3), Flatten(), Dense(3)])
    params = jaxnet.init_params(jax.random.key(0), net)
    with pytest.raises(
        ValueError, match=r"x: expected shape \[batch, 8, 8, 1\] or a single example \[8, 8, 1\], got \[2, 8, 8, 3\]"
    ):
        jax.jit(jaxnet.manual_grads)(params, net, jnp.zeros((2, 8, 8, 3)), jnp.array([0, 1]))


def test_conv_check_goes_red_on_an_unflipped_kernel(monkeypatch):
    """The input gradient needs the kernel flipped in space; forgetting the flip is caught."""
    right = Conv2D.bwd

    def unflipped(self, params, residuals, da):
        flipped = {**params, "W": params["W"][::-1, ::-1]}  # bwd flips again: net effect, no flip
        dx, _ = right(self, flipped, residuals, da)
        return dx, right(self, params, residuals, da)[1]

    monkeypatch.setitem(globals(), "_manual_fd", fresh_jit(_manual_fd))  # traced afresh, through the broken bwd
    monkeypatch.setattr(Conv2D, "bwd", unflipped)
    with pytest.raises(AssertionError, match=r"vs jax.grad: leaf \[0\]\['W'\]"):
        _check([Conv2D(2, 3, 1, "VALID", "tanh"), Conv2D(2, 2, 1, "VALID", "tanh")], (6, 6, 1), probe=False)


@pytest.mark.parametrize("name", ["relu", "gelu", "sigmoid"])
def test_activation_layer(name):
    from jaxnet.layers import Activation

    _check([Conv2D(2, 3, 2, "SAME"), Activation(name)], (5, 5, 3))


def test_eager_matches_jit_and_float32():
    net = jaxnet.sequential((6, 6, 3), [Conv2D(4, 3, 2, "SAME", "relu"), MaxPool2D(2, 1), Flatten(), Dense(3)])
    params, x, y = verify.random_problem(net, seed=2, n=3)
    eager = jaxnet.manual_grads(params, net, x, y)
    assert_grads_close(eager, jax.jit(jaxnet.manual_grads)(params, net, x, y), 1e-12, "jit")
    p32, x32 = jax.tree.map(lambda a: a.astype(jnp.float32), (params, x))
    mine = jax.jit(jaxnet.manual_grads)(p32, net, x32, y)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(mine))
    assert_grads_close(mine, jax.jit(jax.grad(jaxnet.loss))(p32, net, x32, y), 1e-4, "jax.grad (float32)")


@pytest.mark.parametrize(
    "layer,shape",
    lean(
        [  # the main suite: the first, third and fifth; -m slow the other two
            (Conv2D(2, (2, 3), (2, 1), "VALID", "tanh"), (7, 6, 2)),  # rectangular kernel and strides, non-square image
            (Conv2D(2, 2, 3, "SAME", "tanh"), (7, 5, 1)),  # stride larger than the kernel
            (Conv2D(2, 2, 3, "VALID", "tanh"), (8, 7, 1)),  # rows no window covers
            (Conv2D(2, 3, 1, ((3, 0), (0, 2)), "tanh"), (5, 6, 2)),  # top padding >= kernel
            (MaxPool2D((2, 3), (3, 2)), (7, 8, 2)),  # windows that do not tile the input
        ],
        lambda i, case: i % 2 == 0,
    ),
)
def test_conv_and_pool_geometry(layer, shape):
    _check([layer], shape)


def test_the_cnn_preset_can_be_checked():
    """random_problem works on the shipped CNN (dead ReLU windows tie at 0 harmlessly), and
    the residuals of parameter-free layers are arrays that cross jit boundaries."""
    from jaxnet.presets import TRAIN_PRESETS

    net = TRAIN_PRESETS["cnn"].build((8, 8, 1), 10)
    params, x, _y = verify.random_problem(net, seed=0, n=2)
    assert np.all(verify.kink_distance(params, net, x) > 1e-3)
    flatten = Flatten()
    y2, res = jax.jit(flatten.fwd)({}, x)
    assert jax.jit(flatten.bwd)({}, res, y2)[0].shape == x.shape
