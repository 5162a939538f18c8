"""Where a run writes: one folder per run, checked before training starts, never another run's.

- Without ``--out`` (and without ``--resume`` of a folder's ``checkpoint.npz``), a run gets a new
  folder ``runs/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when that exists), ``<name>`` being
  the preset or the ``--data`` file's stem (``-sweep`` added for a sweep): two runs never share one.
- ``--out DIR`` that already holds a run's outputs (:data:`RUN_OUTPUTS`) is refused unless
  ``--force`` (its old outputs are then removed first, so every file in the folder is this run's),
  or unless the run resumes that folder's checkpoint (``--resume DIR/checkpoint.npz``, which
  continues in place; a checkpoint by another name is not that folder's run).
- A folder this run created is removed again when the run stops before writing anything.
- A path that is a file, cannot be created or cannot be written is refused before training.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

from ..files import remove_stale_temporaries
from .output import CommandFailed

RUN_OUTPUTS = ("metrics.json", "checkpoint.npz", "curves.png", "decision_boundary.png", "fit.png",
               "sweep.json", "sweep.png")
"""The files a ``jaxnet train`` run (or sweep) writes into its folder."""

CHECKPOINT = "checkpoint.npz"
"""The checkpoint a run writes into its folder (and a ``--resume`` of it continues in place)."""

RUNS = "runs"
"""The parent of the default run folders (relative to the working directory)."""


def claim_default_folder(name: str, now: float | None = None) -> str:
    """Create and return ``runs/<name>-<YYYYmmdd-HHMMSS>`` at ``now`` (default: the current time),
    or the first of ``…-2``, ``…-3``, … that does not exist: created with ``os.mkdir``, so two
    runs started in the same second never share one."""
    os.makedirs(RUNS, exist_ok=True)
    base = os.path.join(RUNS, f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}")
    path, n = base, 1
    while True:
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"


def continues_in(out: str, resume: str | None) -> bool:
    """Whether ``resume`` is ``out``'s own ``checkpoint.npz`` (the run continues in place)."""
    return bool(resume) and os.path.basename(resume) == CHECKPOINT and (
        os.path.realpath(os.path.dirname(os.path.abspath(resume))) == os.path.realpath(out))


def prepare(out: str | None, name: str, *, force: bool, resume: str | None) -> tuple[str, bool]:
    """``(folder, created)``: ``out``, created if need be and checked that this run may write there
    (see the module docstring), or with ``out=None`` a new default folder for ``name``
    (:func:`claim_default_folder`); ``created`` says whether this call made the folder. Removes the
    old outputs with ``force``, and what killed writes left. :class:`CommandFailed` (exit 2) naming
    ``--out`` and the reason otherwise."""
    if out is None:
        return claim_default_folder(name), True
    created = not os.path.lexists(out)
    _check_writable(out)
    old = [name for name in RUN_OUTPUTS if os.path.lexists(os.path.join(out, name))]
    if old and not continues_in(out, resume):
        if not force:
            raise CommandFailed(
                f"--out {out} holds another run's outputs ({', '.join(old)}); pass --force to replace them, "
                f"--resume {os.path.join(out, CHECKPOINT)} to continue that run, or another --out")
        for name in old:
            os.remove(os.path.join(out, name))
    remove_stale_temporaries(out)
    return out, created


def _check_writable(out: str) -> None:
    """Create ``out`` (and its parents) and write a temporary file there, else CommandFailed."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise CommandFailed(f"--out {out}: exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # can this run write here?
            pass
    except OSError as e:
        raise CommandFailed(f"--out {out}: cannot create or write the folder ({e.strerror or e})") from None


@contextlib.contextmanager
def run_folder(out: str | None, name: str, *, force: bool, resume: str | None):
    """The folder of :func:`prepare`, for the ``with`` block of a run; a folder it created is
    removed again when the block stops with :class:`CommandFailed` before writing anything."""
    folder, created = prepare(out, name, force=force, resume=resume)
    try:
        yield folder
    except CommandFailed:
        if created:
            try:
                os.rmdir(folder)  # only when empty
            except OSError:
                pass
        raise
