"""Checkpoints under forged or damaged metadata and arrays (every one a CheckpointError naming
the file and the field), and the training history stored as float64 arrays."""

import json
import math
import pathlib
import zipfile

import jax
import numpy as np
import optax
import pytest

import jaxnet
from jaxnet import checkpoint

NET = jaxnet.mlp([3, 5, 2], "tanh")
OPT = optax.adam(1e-3)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A valid checkpoint with a key, optimizer state and history: (path, params)."""
    params = jaxnet.init_params(jax.random.key(0), NET)
    path = tmp_path_factory.mktemp("ck") / "valid.npz"
    checkpoint.save(
        path,
        net=NET,
        params=params,
        opt_state=OPT.init(params),
        epoch=3,
        step=42,
        key=jax.random.key(9),
        extra={"note": "x"},
        history={"loss": [1.0, 0.5]},
    )
    return path, params


def _arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def forge(valid_path, out, change=None, **arrays):
    """A copy of the valid checkpoint with ``change(meta_dict)`` applied to its metadata and the
    arrays given replaced (None: removed). Written with plain numpy, pickle allowed."""
    stored = _arrays(valid_path)
    m = json.loads(str(stored["meta"]))
    if change:
        change(m)
    stored["meta"] = np.array(json.dumps(m))
    for name, a in arrays.items():
        stored.pop(name) if a is None else stored.__setitem__(name, a)
    np.savez(out, **stored)
    return out


def set_(key, value):
    return lambda m: m.__setitem__(key, value)


def set_net(key, value):
    return lambda m: m["network"].__setitem__(key, value)


def set_layer(key, value):
    return lambda m: m["network"]["layers"][0].__setitem__(key, value)


META_CASES = [  # (id, change to the metadata, the field the message names)
    ("epoch-str", set_("epoch", "abc"), "'epoch'"),
    ("epoch-negative", set_("epoch", -1), "'epoch'"),
    ("epoch-float", set_("epoch", 1.5), "'epoch'"),
    ("epoch-bool", set_("epoch", True), "'epoch'"),
    ("epoch-null", set_("epoch", None), "'epoch'"),
    ("step-negative", set_("step", -3), "'step'"),
    ("step-float", set_("step", 2.0), "'step'"),
    ("step-beyond-int32", set_("step", 2**31), "'step'"),  # training counts steps in int32
    ("epoch-missing", lambda m: m.pop("epoch"), "'epoch'"),
    ("params_leaves-str", set_("params_leaves", "4"), "'params_leaves'"),
    ("params_leaves-wrong", set_("params_leaves", 3), "'params_leaves'"),
    ("params_leaves-huge", set_("params_leaves", 10**12), "'params_leaves'"),
    ("key_impl-number", set_("key_impl", 5), "'key_impl'"),
    ("key_impl-unknown", set_("key_impl", "nope"), "'key_impl'"),
    ("key_impl-rbg", set_("key_impl", "rbg"), "'key'"),  # threefry's 2 words are not an rbg key
    ("extra-list", set_("extra", [1, 2]), "'extra'"),
    ("extra-str", set_("extra", "x"), "'extra'"),
    ("extra-null", set_("extra", None), "'extra'"),
    ("network-list", set_("network", [1]), "'network'"),
    ("network-str", set_("network", "mlp"), "'network'"),
    ("network-layers-int", set_net("layers", 5), "'network'"),
    ("network-layers-str", set_net("layers", "ab"), "'network'"),
    ("network-layer-int", set_net("layers", [3]), "'network'"),
    ("network-no-loss", lambda m: m["network"].pop("loss"), "'network'"),
    ("network-input-shape", set_net("input_shape", None), "'network'"),
    ("network-l2", set_net("l2", "x"), "'network'"),
    ("layer-features-float", set_layer("features", 2.5), "'network'"),
    ("layer-unknown-field", set_layer("bogus", 1), "'network'"),
    ("layer-kind-list", set_layer("kind", [1]), "'network'"),
    ("layer-no-kind", lambda m: m["network"]["layers"][0].pop("kind"), "'network'"),
    ("layer-activation", set_layer("activation", "nope"), "'network'"),
    ("history-str", set_("history", "loss"), "'history'"),
    ("history-numbers", set_("history", [1]), "'history'"),
    ("history-duplicate", set_("history", ["loss", "loss"]), "'history'"),
    ("history-longer", set_("history", ["loss", "acc"]), "'history_1'"),
]


@pytest.mark.parametrize("change, field", [c[1:] for c in META_CASES], ids=[c[0] for c in META_CASES])
def test_forged_metadata(valid, tmp_path, change, field):
    out = forge(valid[0], tmp_path / "forged.npz", change=change)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(out, opt_state_template=OPT.init(valid[1]))
    assert type(e.value) is checkpoint.CheckpointError
    assert str(out) in str(e.value) and field in str(e.value)


W0 = np.zeros((3, 5))  # params_0 is layer 0's weights ([0]['W'], the leaves sorted by name)
ARRAY_CASES = [  # (id, {array name: replacement (None: removed)}, the field the message names)
    ("params-int", {"params_0": W0.astype(np.int32)}, "'params_0'"),
    ("params-bool", {"params_0": W0.astype(bool)}, "'params_0'"),
    ("params-complex", {"params_0": W0.astype(complex)}, "'params_0'"),
    ("params-object", {"params_0": W0.astype(object)}, "'params_0'"),
    ("params-str", {"params_0": np.full((3, 5), "a")}, "'params_0'"),
    ("params-shape", {"params_0": np.zeros((5, 3))}, "'params_0'"),
    ("params-scalar", {"params_0": np.float64(1.0)}, "'params_0'"),
    ("params-nan", {"params_0": np.where(np.eye(3, 5) > 0, np.nan, 0.0)}, "'params_0'"),
    ("params-inf", {"params_0": np.full((3, 5), -np.inf)}, "'params_0'"),
    ("params-missing", {"params_2": None}, "'params_2'"),
    ("key-2d", {"key": np.zeros((3, 2), np.uint32)}, "'key'"),
    ("key-float", {"key": np.zeros(2, np.float32)}, "'key'"),
    ("key-int32", {"key": np.zeros(2, np.int32)}, "'key'"),
    ("key-missing", {"key": None}, "'key'"),
    ("key-object", {"key": np.array([1, 2], dtype=object)}, "'key'"),
    ("history-2d", {"history_0": np.zeros((2, 1))}, "'history_0'"),
    ("history-int", {"history_0": np.array([1, 2])}, "'history_0'"),
    ("history-str", {"history_0": np.array(["a"])}, "'history_0'"),
    ("history-missing", {"history_0": None}, "'history_0'"),
    ("meta-float", {"meta": np.array(1.5)}, "metadata"),
    ("meta-bytes", {"meta": np.array(b"{}")}, "metadata"),
    ("meta-1d", {"meta": np.array(["{}", "{}"])}, "metadata"),
    ("meta-json-list", {"meta": np.array("[1]")}, "format"),
    ("meta-object", {"meta": np.array({"format": checkpoint.FORMAT}, dtype=object)}, "'meta'"),
]


@pytest.mark.parametrize("arrays, field", [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES])
def test_forged_arrays(valid, tmp_path, arrays, field):
    out = forge(valid[0], tmp_path / "forged.npz", **arrays)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(out)
    assert type(e.value) is checkpoint.CheckpointError
    assert str(out) in str(e.value) and field in str(e.value)


def test_messages_say_what_is_wrong(valid, tmp_path):
    out = forge(valid[0], tmp_path / "f.npz", change=set_("epoch", "abc"))
    with pytest.raises(
        checkpoint.CheckpointError, match=r"'epoch': expected a non-negative integer below 2\*\*31, got 'abc'"
    ):
        checkpoint.load(out)
    out = forge(valid[0], tmp_path / "f.npz", params_0=W0.astype(np.int32))
    with pytest.raises(
        checkpoint.CheckpointError, match=r"params\[0\]\['W'\] has dtype int32; parameters must be floating"
    ):
        checkpoint.load(out)
    out = forge(valid[0], tmp_path / "f.npz", params_0=np.zeros((5, 3)))
    with pytest.raises(checkpoint.CheckpointError, match=r"shape \(5, 3\), the stored network's is \(3, 5\)"):
        checkpoint.load(out)
    out = forge(valid[0], tmp_path / "f.npz", params_0=W0.astype(object))
    with pytest.raises(checkpoint.CheckpointError, match="object array, which would need unpickling"):
        checkpoint.load(out)


def test_an_optimizer_leaf_of_another_dtype_or_shape_is_refused(valid, tmp_path):
    path, params = valid
    template = OPT.init(params)
    assert _arrays(path)["opt_0"].dtype.kind == "i"  # adam's step count
    for leaf in (np.float32(0.0), np.zeros(2, np.int32)):
        out = forge(path, tmp_path / "f.npz", opt_0=leaf)
        with pytest.raises(checkpoint.CheckpointError, match=r"saved by another optimizer.*'opt_0'") as e:
            checkpoint.load(out, NET, template)
        assert str(out) in str(e.value)
    out = forge(path, tmp_path / "f.npz", change=set_("opt_leaves", "x"))
    with pytest.raises(checkpoint.CheckpointError, match="'opt_leaves'"):
        checkpoint.load(out, NET, template)
    out = forge(path, tmp_path / "f.npz", opt_1=None)
    with pytest.raises(checkpoint.CheckpointError, match=r"inconsistent checkpoint.*'opt_1'"):
        checkpoint.load(out, NET, template)


def test_files_that_are_not_checkpoint_archives(valid, tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxnet checkpoint"):
        checkpoint.load(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("a,b\n1,2\n")  # NumPy would say "pickled data" and suggest allow_pickle
    with pytest.raises(checkpoint.CheckpointError, match=r"not a jaxnet checkpoint \(not an \.npz archive\)$"):
        checkpoint.load(tmp_path / "text.npz")
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint file"):
        checkpoint.load(tmp_path)
    (tmp_path / "cut.npz").write_bytes(pathlib.Path(valid[0]).read_bytes()[:200])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted"):
        checkpoint.load(tmp_path / "cut.npz")
    stored = _arrays(valid[0])
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as z:  # an entry that is not an .npy array
        for name, a in stored.items():
            with z.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, a) if name != "params_0" else f.write(b"not an array")
    with pytest.raises(checkpoint.CheckpointError, match=r"'params_0' is not an \.npy array"):
        checkpoint.load(tmp_path / "raw.npz")
    with pytest.raises(checkpoint.CheckpointError, match="corrupted checkpoint metadata"):
        checkpoint.load(forge(valid[0], tmp_path / "f.npz", meta=np.array("[" * 100_000)))


def test_the_forging_helper_keeps_a_valid_file_valid(valid, tmp_path):
    ck = checkpoint.load(forge(valid[0], tmp_path / "same.npz"), NET, OPT.init(valid[1]))
    assert (ck.epoch, ck.step, ck.extra, ck.history) == (3, 42, {"note": "x"}, {"loss": [1.0, 0.5]})


# --- history -------------------------------------------------------------------------------


def test_history_round_trip(valid, tmp_path):
    path = tmp_path / "h.npz"
    history = {
        "train_loss": [2.0, 1.0, float("nan")],
        "val/acc": np.array([0.5, np.inf, 1]),
        "ü": [],
        "history_0": [1, 2],
        "n": np.float32([0.25]),
    }
    checkpoint.save(path, net=NET, params=valid[1], history=history)
    ck = checkpoint.load(path)
    assert list(ck.history) == list(history)  # the order kept
    assert all(type(v) is list and all(type(x) is float for x in v) for v in ck.history.values())
    assert ck.history["train_loss"][:2] == [2.0, 1.0] and math.isnan(ck.history["train_loss"][2])
    assert ck.history["val/acc"] == [0.5, math.inf, 1.0] and ck.history["ü"] == []
    assert ck.history["history_0"] == [1.0, 2.0] and ck.history["n"] == [0.25]
    stored = _arrays(path)
    assert [stored[f"history_{i}"].dtype for i in range(5)] == [np.float64] * 5
    assert json.loads(str(stored["meta"]))["history"] == list(history)


def test_history_is_arrays_not_json(valid, tmp_path):
    path = tmp_path / "long.npz"
    checkpoint.save(path, net=NET, params=valid[1], history={f"m{i}": np.linspace(0, 1, 4000) for i in range(6)})
    assert len(str(_arrays(path)["meta"])) < 2000
    assert checkpoint.load(path).history["m5"][-1] == 1.0


def test_no_history_and_old_checkpoints(valid, tmp_path):
    path = tmp_path / "none.npz"
    checkpoint.save(path, net=NET, params=valid[1], extra={"history": {"loss": [1.0]}})
    ck = checkpoint.load(path)
    assert ck.history == {} and ck.extra == {"history": {"loss": [1.0]}}
    old = forge(valid[0], tmp_path / "old.npz", change=lambda m: m.pop("history"), history_0=None)
    assert checkpoint.load(old).history == {}


@pytest.mark.parametrize(
    "history, match",
    [
        ([1.0], "history must be a dict"),
        ({1: [1.0]}, "metric names must be strings"),
        ({"loss": [[1.0], [2.0]]}, r"history\['loss'\] must be a 1-D"),
        ({"loss": 1.0}, r"history\['loss'\] must be a 1-D"),
        ({"loss": ["a"]}, r"history\['loss'\] must be a 1-D"),
        ({"loss": [1.0, None]}, r"history\['loss'\] must be a 1-D"),
        ({"loss": [True]}, r"history\['loss'\] must be a 1-D"),
        ({"loss": [1j]}, r"history\['loss'\] must be a 1-D"),
        ({"loss": [[1.0], 2.0]}, r"history\['loss'\] must be a 1-D"),
    ],
)
def test_save_refuses_a_bad_history_and_writes_nothing(valid, tmp_path, history, match):
    path = tmp_path / "h.npz"
    with pytest.raises(ValueError, match=match):
        checkpoint.save(path, net=NET, params=valid[1], history=history)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "counters", [{"epoch": -1}, {"epoch": 1.5}, {"step": "3"}, {"step": True}, {"epoch": None}, {"step": 2**31}]
)
def test_save_refuses_counters_that_load_would_refuse(valid, tmp_path, counters):
    with pytest.raises(ValueError, match=f"{next(iter(counters))} must be a non-negative integer"):
        checkpoint.save(tmp_path / "c.npz", net=NET, params=valid[1], **counters)
    assert list(tmp_path.iterdir()) == []
    checkpoint.save(tmp_path / "c.npz", net=NET, params=valid[1], epoch=np.int64(2), step=jax.numpy.int32(7))
    assert (checkpoint.load(tmp_path / "c.npz").epoch, checkpoint.load(tmp_path / "c.npz").step) == (2, 7)
