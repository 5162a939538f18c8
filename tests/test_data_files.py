"""The user's data files at their edges: folders and unreadable files, CSVs that are not UTF-8,
.npz arrays of the wrong shape, class labels that would build absurd networks or leave outputs
unused, values that overflow the working dtype or standardisation, and the CSV header choice."""

import codecs
import contextlib
import os
import warnings

import jax
import numpy as np
import pytest

from jaxnet import data


def _write(path, content):
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return str(path)


@contextlib.contextmanager
def _no_warnings():
    """A context in which any warning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- folders and unreadable files -------------------------------------------------------------


def test_a_folder_is_refused(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ValueError, match=r"d\.csv: is a folder, expected a \.npz, \.npy or \.csv file$"):
        data.load_file(str(tmp_path / "d.csv"))


def test_an_unreadable_file_is_refused(tmp_path):
    path = _write(tmp_path / "secret.csv", "a,b\n1,2\n")
    os.chmod(path, 0)
    try:
        if os.geteuid() == 0 or os.access(path, os.R_OK):
            pytest.skip("running as root (or on a file system without permissions): the file stays readable")
        with pytest.raises(ValueError, match=r"secret\.csv: cannot be read \(Permission denied\)"):
            data.load_file(path)
    finally:
        os.chmod(path, 0o600)


def test_a_file_that_cannot_be_opened_is_refused(tmp_path, monkeypatch):
    """As the permission test, where it is skipped (root reads everything): open() itself fails."""
    path = _write(tmp_path / "locked.npz", b"")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(data, "open", refuse, raising=False)
    with pytest.raises(ValueError, match=r"locked\.npz: cannot be read \(Permission denied\)$"):
        data.load_file(path)


# --- CSVs that are not UTF-8 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"a,b\n1,\xff\n",
            r"byte 0xff at line 2 \(byte offset 6\) is not UTF-8 \(invalid start byte\), expected a UTF-8 text file",
        ),
        ("caf\u00e9,y\n1,2\n".encode("latin-1"), r"byte 0xe9 at line 1 \(byte offset 3\) is not UTF-8"),
        (
            codecs.BOM_UTF8 + b"a,b\n1,\xff\n",
            r"byte 0xff at line 2 \(byte offset 9\) is not UTF-8",
        ),  # the offset counts the BOM
        ("a,b\n1,2\n".encode("utf-16"), r"the file is UTF-16 text .*expected UTF-8"),
    ],
    ids=["invalid-byte", "latin-1", "after-bom", "utf-16"],
)
def test_a_csv_that_is_not_utf8_is_refused(tmp_path, content, message):
    path = _write(tmp_path / "enc.csv", content)
    with pytest.raises(ValueError, match=r"^.*enc\.csv: " + message):
        data.load_file(path)


def test_a_csv_the_csv_module_refuses_names_the_line(tmp_path):
    path = _write(tmp_path / "long.csv", "a,b\n" + "1" * 200_000 + ",2\n")
    with pytest.raises(ValueError, match=r"long\.csv: line 2 is not valid CSV \(field larger than field limit"):
        data.load_file(path)


# --- .npz and .npy arrays of the wrong shape ----------------------------------------------------------


@pytest.mark.parametrize(
    "x, y, message",
    [
        (
            np.float64(1.0),
            np.zeros(1),
            r"array 'x' is a single number \(shape \(\)\), expected a 2-D array \[examples, features\]",
        ),
        (
            np.zeros((0, 3)),
            np.zeros(0),
            r"array 'x' has shape \(0, 3\) \(no examples\), expected a 2-D array \[examples, features\]",
        ),
        (
            np.zeros((4, 0)),
            np.zeros(4),
            r"array 'x' has shape \(4, 0\) \(no features\), expected a 2-D array \[examples, features\]",
        ),
        (
            np.zeros(4),
            np.zeros(4),
            r"array 'x' has shape \(4,\), expected a 2-D array \[examples, features\] .*x\.reshape\(-1, 1\)",
        ),
        (
            np.zeros((4, 2, 3)),
            np.zeros(4),
            r"array 'x' has shape \(4, 2, 3\), expected a 2-D array \[examples, "
            r"features\]: --data gives flat feature rows, so save x\.reshape\(4, 6\)",
        ),
        (
            np.zeros((4, 2)),
            np.float64(1.0),
            r"array 'y' has shape \(\), expected \[examples\] labels or \[examples, outputs\] targets",
        ),
        (
            np.zeros((4, 2)),
            np.zeros((4, 1, 1)),
            r"array 'y' has shape \(4, 1, 1\), expected \[examples\] labels or \[examples, outputs\]",
        ),
        (np.zeros((4, 2)), np.zeros((4, 0)), r"array 'y' has shape \(4, 0\) and holds no targets"),
    ],
    ids=["x-0d", "x-no-rows", "x-no-features", "x-1d", "x-3d", "y-0d", "y-3d", "y-empty"],
)
def test_npz_arrays_of_the_wrong_shape_are_refused(tmp_path, x, y, message):
    path = tmp_path / "shape.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(ValueError, match=r"shape\.npz: " + message):
        data.load_file(str(path))


def test_an_npy_without_rows_is_refused(tmp_path):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros((0, 3)))
    with pytest.raises(
        ValueError, match=r"empty\.npy: the array has shape \(0, 3\) \(no rows\), expected \[rows, features \+ target\]"
    ):
        data.load_file(str(path))


# --- class labels ---------------------------------------------------------------------------------------------


def test_classes_are_inferred_from_the_labels():
    with _no_warnings():
        y = data.class_labels("f.csv", np.array([[0.0], [2.0], [1.0], [2.0]]))
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 1, 2]
    assert 100 <= data.MAX_CLASSES <= 100_000
    with _no_warnings():  # labels up to MAX_CLASSES - 1, every one used
        assert data.class_labels("f.csv", np.arange(data.MAX_CLASSES)).max() == data.MAX_CLASSES - 1


@pytest.mark.parametrize(
    "labels, message",
    [
        (
            [0, 1e9],
            r"f\.csv: the largest class label is 1000000000, which would make 1000000001 classes .*"
            r"expected at most MAX_CLASSES = 10000 classes, labels 0\.\.9999",
        ),
        ([0, 1e300], r"f\.csv: the largest class label is 1e\+300, which would make 1e\+300 classes"),
        ([0, 10_000], r"f\.csv: the largest class label is 10000, which would make 10001 classes"),
        ([0, -1, 1], r"f\.csv: label out of range: class labels must be 0 or more, got -1"),
        ([], r"f\.csv: no class labels to count the classes from"),
        ([0, 0.5], r"f\.csv: class labels must be integers, got 0\.5 for example 1"),
    ],
    ids=["billion", "1e300", "one-over", "negative", "empty", "fraction"],
)
def test_inferred_classes_are_checked(labels, message):
    with pytest.raises(ValueError, match=message):
        data.class_labels("f.csv", np.array(labels, dtype=float))


def test_unused_labels_are_named_in_a_warning():
    with pytest.warns(
        UserWarning,
        match=r"f\.csv: the labels make 6 classes \(the largest is 5\), but 3 of them never "
        r"occur \(2, 3, 4\), so the network gets outputs no example has",
    ):
        assert data.class_labels("f.csv", np.array([0, 1, 5, 1])).tolist() == [0, 1, 5, 1]
    with pytest.warns(UserWarning, match=r"but 94 of them never occur \(1, 2, 3, 4, 5, \.\.\.\)"):
        data.class_labels("f.csv", np.array([0, 99, 50, 7, 8, 9]))


def test_given_classes_keep_their_rules():
    with _no_warnings():  # the caller chose the count: unused classes are its business
        assert data.class_labels("f.csv", [0, 2], 5).tolist() == [0, 2]
    with pytest.raises(
        ValueError, match=r"f\.csv: label out of range: labels must lie in \[0, 3\), got \[0, 1e\+300\]"
    ):
        data.class_labels("f.csv", np.array([0.0, 1e300]), 3)


# --- overflow in the working dtype and in standardisation -------------------------------------------------------


def test_values_that_overflow_the_working_dtype_are_refused(tmp_path):
    path = _write(tmp_path / "huge.csv", "a,b,y\n1,2,0\n1e300,3,1\n")
    with pytest.raises(
        ValueError,
        match=r"huge\.csv: inputs hold x\[1, 0\] = 1e\+300, which overflows float32 "
        r"\(largest finite value 3\.403e\+38\); expected values within ±3\.403e\+38",
    ):
        data.load_file(path, dtype=np.float32)
    x, _ = data.load_file(path, dtype=np.float64)  # finite in float64
    assert x[1, 0] == 1e300
    with jax.enable_x64(False):  # the default is JAX's working dtype
        assert data.working_dtype() == np.float32
        with pytest.raises(ValueError, match=r"overflows float32"):
            data.load_file(path)
    with jax.enable_x64(True):
        assert data.working_dtype() == np.float64
        data.load_file(path)
    path = _write(tmp_path / "target.csv", "a,y\n1,0\n2,-4e38\n")
    with pytest.raises(ValueError, match=r"target\.csv: targets hold y\[1, 0\] = -4e\+38, which overflows float32"):
        data.load_file(path, dtype="float32")
    with pytest.raises(
        ValueError, match=r"f\.npz: inputs contain NaN or Inf, first x\[0, 1\] = nan; expected finite numbers"
    ):
        data.check_finite_in("f.npz", np.array([[1.0, np.nan]]), np.zeros(1), np.float64)
    with pytest.raises(ValueError, match=r"f\.npz: targets hold y\[0\] = 70000, which overflows float16"):
        data.check_finite_in("f.npz", np.zeros((1, 1)), np.array([70000]), np.float16)


def _split(x_train, x_test=None):
    x_test = x_train[:1] if x_test is None else x_test
    return data.Split(x_train, np.zeros(len(x_train)), x_train[:1], np.zeros(1), x_test, np.zeros(len(x_test)))


@pytest.mark.parametrize(
    "dtype, size", [(np.float64, 1e300), (np.float64, 1e200), (np.float32, 1e30), (np.float32, 3e38)]
)
def test_standardize_copes_with_huge_columns(dtype, size):
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(size=50), size * rng.uniform(0.5, 1.0, size=50)], axis=1).astype(dtype)
    with _no_warnings():  # no overflow RuntimeWarning either
        z = data.standardize(_split(x)).x_train
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-5)
    np.testing.assert_allclose(z[:, 1], (x[:, 1] / size - np.mean(x[:, 1] / size)) / np.std(x[:, 1] / size), rtol=1e-4)


def test_standardize_names_a_column_that_cannot_be_standardised():
    train = np.array([[5.0, 0.0], [6.0, 1.0], [7.0, 0.0], [8.0, 1.0]])
    test = np.array([[5.0, 1.5e308]])  # (1.5e308 - 0.5) / 0.5 overflows
    with (
        _no_warnings(),
        pytest.raises(
            ValueError,
            match=r"^d\.csv: column 1 of the test split does not standardise to a "
            r"finite number \(x_test\[0, 1\] = 1\.5e\+308 becomes inf\)",
        ),
    ):
        data.standardize(_split(train, test), "d.csv")
    with pytest.raises(
        ValueError, match=r"^standardize: column 0 of the train split .*x_train\[1, 0\] = nan becomes nan"
    ):
        data.standardize(_split(np.array([[1.0], [np.nan]])))


# --- the CSV header choice -------------------------------------------------------------------------------------------


def test_a_first_row_of_column_numbers_is_data_with_a_warning(tmp_path):
    path = _write(tmp_path / "pandas.csv", "0,1,2,3\n1,2,3,0\n4,5,6,1\n")
    with pytest.warns(
        UserWarning,
        match=r"pandas\.csv: the first row 0,1,2,\.\.\. looks like a header of column numbers; "
        r"it is read as data — pass --header to treat it as a header or --no-header to silence this",
    ):
        x, y = data.load_file(path)
    assert x.shape == (3, 3) and y[:, 0].tolist() == [3, 0, 1]
    with _no_warnings():
        assert data.load_file(path, header=False)[0].shape == (3, 3)
        x, y = data.load_file(path, header=True, target="0")  # a numeric column name
        assert x.tolist() == [[2, 3, 0], [5, 6, 1]] and y[:, 0].tolist() == [1, 4]
        data.load_file(_write(tmp_path / "data.csv", "0,2,1\n3,4,5\n"))  # not 0..D-1 in order: no warning
    with (
        pytest.raises(
            ValueError,
            match=r"pandas\.csv: no header row, so there is no column named '0' \(a first row of "
            r"numbers is a header only with --header\)",
        ),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        data.load_file(path, target="0")


def test_header_true_and_false(tmp_path):
    path = _write(tmp_path / "n.csv", "10,20,30\n1,2,3\n4,5,6\n")
    x, y = data.load_file(path, header=True, target="20")
    assert x.tolist() == [[1, 3], [4, 6]] and y[:, 0].tolist() == [2, 5]
    path = _write(tmp_path / "named.csv", "a,b\n1,2\n")
    with pytest.raises(
        ValueError,
        match=r"named\.csv: line 1, column 1: 'a' is not a number, and the first row is data "
        r"since no header was asked for \(--no-header\)",
    ):
        data.load_file(path, header=False)
    assert data.load_file(path, header=True)[0].tolist() == [[1]]
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1)), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"d\.npz: a header option only applies to CSV files"):
        data.load_file(str(tmp_path / "d.npz"), header=True)


def test_a_special_file_is_refused_without_reading_it(tmp_path):
    """A device (endless) or a pipe (blocking) under a data file's name is refused, not read."""
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"zero\.csv: is not a regular file, expected a \.npz, \.npy or \.csv file"):
        data.load_file(str(link))


@pytest.mark.parametrize(
    "name, words",
    [
        ("fake.npy", "not a .npy file (no NumPy header)"),
        ("fake.npz", "not a .npz file (it does not start as a zip archive does)"),
    ],
)
def test_a_text_file_under_a_numpy_name_is_not_taken_for_a_pickle(tmp_path, name, words):
    path = tmp_path / name
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError) as e:
        data.load_file(str(path))
    assert words in str(e.value) and "pickle" not in str(e.value)
