"""Data sets, splits, scaling, and the user's files with their errors."""

import numpy as np
import pytest

from jaxnet import data


@pytest.mark.parametrize("name", ["spiral", "moons", "circles", "regression_1d", "regression"])
def test_generators_are_deterministic(name):
    x1, y1 = data.DATASETS[name](seed=3)
    x2, y2 = data.DATASETS[name](seed=3)
    x3, _ = data.DATASETS[name](seed=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3) and len(x1) == len(y1)


def test_shapes_and_labels():
    x, y = data.spiral(50, 4)
    assert x.shape == (200, 2) and set(np.unique(y)) == {0, 1, 2, 3}
    x, y = data.regression(n=30, d=5, outputs=2)
    assert x.shape == (30, 5) and y.shape == (30, 2)
    flat, labels = data.digits()
    images, _ = data.digits(images=True)
    assert flat.shape == (1797, 64) and images.shape == (1797, 8, 8, 1) and labels.max() == 9
    np.testing.assert_array_equal(images.reshape(1797, 64), flat)


def test_split_and_standardize():
    x, y = data.moons(200)
    s = data.split(x, y, val=0.1, test=0.2, seed=0)
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (140, 20, 40)
    assert len({tuple(r) for r in np.concatenate([s.x_train, s.x_val, s.x_test])}) == 200  # a partition
    z = data.standardize(s)
    np.testing.assert_allclose(z.x_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.x_train.std(0), 1, rtol=1e-12)
    np.testing.assert_allclose(z.x_test, (s.x_test - s.x_train.mean(0)) / s.x_train.std(0))
    with pytest.raises(ValueError, match="val and test fractions"):
        data.split(x, y, val=0.6, test=0.5)


def test_load_good_files(tmp_path):
    x = np.arange(12.0).reshape(4, 3)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 1]))
    np.save(tmp_path / "d.npy", np.hstack([x, np.array([[0], [1], [2], [1]])]))
    (tmp_path / "d.csv").write_text("a,label,b,c\n0,0,1,2\n3,1,4,5\n6,2,7,8\n9,1,10,11\n")
    for name, kwargs in [("d.npz", {}), ("d.npy", {}), ("d.csv", {"target": "label"})]:
        xs, ys = data.load_file(str(tmp_path / name), classes=3, **kwargs)
        np.testing.assert_array_equal(xs, x)
        np.testing.assert_array_equal(ys, [0, 1, 2, 1])
    (tmp_path / "bom.csv").write_bytes("\ufeffa,b\n1,2\n3,4\n".encode("utf-8"))  # Excel's byte-order mark
    assert data.load_file(str(tmp_path / "bom.csv"))[0].shape == (2, 1)
    (tmp_path / "r.csv").write_text("1.5,2,0.25\n3,4,-1\n")  # no header: the last column is the target
    xs, ys = data.load_file(str(tmp_path / "r.csv"))
    assert xs.shape == (2, 2) and ys.tolist() == [[0.25], [-1.0]]


@pytest.mark.parametrize(
    "name,text,kwargs,message",
    [
        ("m.csv", "a,b\n1,2\n", {"target": "y"}, r"no column named 'y'; columns are \['a', 'b'\]"),
        ("r.csv", "1,2,3\n4,5\n", {}, "line 2 has 2 columns, expected 3 \\(ragged rows\\)"),
        ("n.csv", "a,b\n1,x\n", {}, r"line 2, column 2: 'x' is not a number"),
        ("o.csv", "1,0\n2,5\n", {"classes": 3}, r"label out of range: labels must lie in \[0, 3\), got \[0, 5\]"),
        ("f.csv", "1,0.5\n2,1\n", {"classes": 3}, "class labels must be integers"),
        ("e.csv", "", {}, "the file is empty"),
        ("x.txt", "1,2\n", {}, "unknown file type '.txt'"),
        ("h.csv", "1,x,0\n3,4,1\n", {}, r"line 1, column 2: 'x' is not a number"),  # not a header: 1 is a number
        ("b.csv", "a,b,c\n\n\n1,2,0\n3,y,1\n", {}, r"line 5, column 2: 'y' is not a number"),  # blank lines counted
        ("bad.npz", "not a zip", {}, r"not a \.npz file \(it does not start as a zip archive does\)"),
    ],
)
def test_bad_files(tmp_path, name, text, kwargs, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        data.load_file(str(tmp_path / name), **kwargs)


def test_bad_npz_contents(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"expected arrays 'x' and 'y', missing \['y'\]"):
        data.load_file(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(ValueError, match="x has 3 rows but y has 2"):
        data.load_file(str(tmp_path / "b.npz"))
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 2)), y=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="targets contain NaN or Inf"):
        data.load_file(str(tmp_path / "c.npz"))
    with pytest.raises(ValueError, match="no such file"):
        data.load_file(str(tmp_path / "missing.csv"))
