"""Checkpoints: round trip, atomic writes, no pickle, clear errors on bad files."""

import os
import zipfile

import chex
import jax
import numpy as np
import optax
import pytest

import jaxnet
from jaxnet import checkpoint

NET = jaxnet.mlp([3, 5, 2], "tanh", l2=0.1, l2_bias=True)


@pytest.fixture
def saved(tmp_path):
    params = jaxnet.init_params(jax.random.key(0), NET)
    opt = optax.adam(1e-3)
    state = opt.init(params)
    path = tmp_path / "ck.npz"
    checkpoint.save(
        path, net=NET, params=params, opt_state=state, epoch=3, step=42, key=jax.random.key(9), extra={"note": "x"}
    )
    return path, params, opt, state


def test_round_trip(saved):
    path, params, opt, state = saved
    ck = checkpoint.load(path, NET, opt.init(params))
    assert ck.net == NET and (ck.epoch, ck.step, ck.extra) == (3, 42, {"note": "x"})
    chex.assert_trees_all_equal(ck.params, params)
    chex.assert_trees_all_equal(ck.opt_state, state)
    np.testing.assert_array_equal(jax.random.key_data(ck.key), jax.random.key_data(jax.random.key(9)))
    with np.load(path, allow_pickle=False) as f:  # nothing needs pickle
        assert all(f[name].dtype != object for name in f.files)
    assert [p for p in os.listdir(path.parent) if p != "ck.npz"] == []  # no temporary left behind


def test_a_failed_write_keeps_the_old_checkpoint(saved, monkeypatch):
    path, params, _, _ = saved
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, net=NET, params=params, epoch=4)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["ck.npz"]


def test_truncated_and_corrupted_files(saved):
    path, _, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted checkpoint"):
        checkpoint.load(path)
    # flip bytes inside a stored array: the zip CRC check catches it
    with zipfile.ZipFile(path.parent / "fresh.npz", "w") as z:
        z.writestr("meta.npy", b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match=r"truncated or corrupted|corrupted checkpoint metadata"):
        checkpoint.load(path.parent / "fresh.npz")
    corrupted = bytearray(data)
    start = data.index(b"params_0.npy") + 200
    corrupted[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(corrupted))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(path)


def test_mismatches_are_refused(saved, tmp_path):
    path, params, _, _ = saved
    with pytest.raises(checkpoint.CheckpointError, match="the checkpoint is for the network 3-5-2 tanh"):
        checkpoint.load(path, jaxnet.mlp([3, 6, 2], "tanh"))
    with pytest.raises(checkpoint.CheckpointError, match="saved by another optimizer"):
        checkpoint.load(path, NET, optax.sgd(0.1, momentum=0.9).init(params))
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxnet checkpoint"):
        checkpoint.load(tmp_path / "other.npz")
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.npz")


def test_inconsistent_metadata(saved, tmp_path):
    path, _, _, _ = saved
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.pop("params_3")
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(checkpoint.CheckpointError, match="inconsistent checkpoint"):
        checkpoint.load(tmp_path / "broken.npz")
