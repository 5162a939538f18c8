"""Files that are never half written: a temporary file in the target's folder, flushed to disk and
renamed over the target (atomic on POSIX and Windows), so a crash mid-write leaves the previous
file intact; and the temporaries such a crash leaves behind, removed on the next start."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time

TEMPORARY = ".jaxnet-", ".tmp"  # prefix and suffix of every temporary file written here


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """``with atomic_write(path) as f: ...``: ``f`` is a temporary file next to ``path`` that
    replaces ``path`` when the block ends without an error (and is removed when it raises). The
    file gets the permissions ``open(path, "w")`` would give it (0666 less the umask)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY[0], suffix=TEMPORARY[1], dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # what open() would give the file; mkstemp's is 0600
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder, older_than: float = 60.0) -> list:
    """Remove the temporary files that killed writes left in ``folder`` (``.jaxnet-*.tmp``, and the
    ``.ckpt-*.tmp`` of earlier versions) older than ``older_than`` seconds, so that a write under
    way in another process is left alone; return the paths removed."""
    now, removed = time.time(), []
    for pattern in (f"{TEMPORARY[0]}*{TEMPORARY[1]}", ".ckpt-*.tmp"):
        for path in glob.glob(os.path.join(glob.escape(str(folder)), pattern)):
            with contextlib.suppress(OSError):  # gone meanwhile, a read-only folder: leave it
                if os.path.isfile(path) and not os.path.islink(path) and now - os.path.getmtime(path) > older_than:
                    os.remove(path)
                    removed.append(path)
    return removed


def numpy_format(path) -> str | None:
    """``"npz"`` (a zip archive), ``"npy"`` (NumPy's magic string) or ``None`` from the first bytes of
    the file at ``path``: check it before ``np.load``, which takes any other file for a pickle and
    says so ("contains pickled (object) data"), inviting an unsafe load."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"PK"):
        return "npz"
    return "npy" if head == b"\x93NUMPY" else None
