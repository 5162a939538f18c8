"""Where a run writes: one folder per run, checked before training starts, never another run's.

- Without ``--out`` (and without ``--resume`` of a folder's ``checkpoint.npz``), a run gets a new
  folder ``runs/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when that exists), ``<name>`` being
  the preset or the ``--data`` file's stem (``-sweep`` added for a sweep): two runs never share one.
- ``--out DIR`` that already holds a run's outputs (:data:`RUN_OUTPUTS`) is refused unless
  ``--force`` (its old outputs are replaced, see :func:`run_folder`; other files stay),
  or unless the run resumes that folder's checkpoint (``--resume DIR/checkpoint.npz``, which
  continues in place; a checkpoint by another name is not that folder's run).
- A folder this run created (the last part of its path) is removed again when the run stops
  before writing anything.
- A path that is a file, cannot be created or cannot be written is refused before training.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator

from ..files import remove_stale_temporaries
from .output import CommandFailed

RUN_OUTPUTS = (
    "metrics.json",
    "checkpoint.npz",
    "curves.png",
    "decision_boundary.png",
    "fit.png",
    "sweep.json",
    "sweep.png",
)
"""The files a ``jaxnet train`` run (or sweep) writes into its folder."""

CHECKPOINT = "checkpoint.npz"
"""The checkpoint a run writes into its folder (and a ``--resume`` of it continues in place)."""

RUNS = "runs"
"""The parent of the default run folders (relative to the working directory)."""


def claim_default_folder(name: str, now: float | None = None) -> str:
    """Create and return ``runs/<name>-<YYYYmmdd-HHMMSS>`` at ``now`` (default: the current time),
    or the first of ``…-2``, ``…-3``, … that does not exist: created with ``os.mkdir``, so two
    runs started in the same second never share one. :class:`CommandFailed` when it cannot be."""
    base = os.path.join(RUNS, f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}")
    path, n = base, 1
    try:
        os.makedirs(RUNS, exist_ok=True)
        while True:
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                n += 1
                path = f"{base}-{n}"
    except OSError as e:
        raise CommandFailed(f"{path}: cannot create the run's folder ({e.strerror or e}); give --out DIR") from None


def resumed_folder(resume: str | None) -> str | None:
    """The folder a ``--resume`` continues in: ``DIR`` for ``DIR/checkpoint.npz`` (a run's own
    checkpoint), else ``None`` (a checkpoint by another name is no folder's run)."""
    if resume and os.path.basename(resume) == CHECKPOINT:
        return os.path.dirname(resume) or "."
    return None


def continues_in(out: str, resume: str | None) -> bool:
    """Whether ``resume`` is ``out``'s own ``checkpoint.npz`` (the run continues in place)."""
    folder = resumed_folder(resume)
    return folder is not None and os.path.realpath(folder) == os.path.realpath(out)


def prepare(out: str | None, name: str, *, force: bool, resume: str | None) -> tuple[str, bool, list]:
    """``(folder, created, replaced)``: ``out``, created if need be and checked that this run may
    write there (see the module docstring), or with ``out=None`` a new default folder for ``name``
    (:func:`claim_default_folder`); ``created``: whether this call made the folder; ``replaced``:
    another run's outputs there that ``force`` lets this run replace (:func:`run_folder` removes
    them once this run writes). Removes what killed writes left. :class:`CommandFailed` (exit 2)
    naming ``--out`` and the reason otherwise."""
    if out is None:
        return claim_default_folder(name), True, []
    created = not os.path.lexists(out)
    _check_writable(out)
    old = [file for file in RUN_OUTPUTS if os.path.lexists(os.path.join(out, file))]
    if continues_in(out, resume):
        old = []  # this run's own outputs, continued
    if old:
        if not force:
            raise CommandFailed(
                f"--out {out} holds another run's outputs ({', '.join(old)}); pass --force to replace them, "
                f"--resume {os.path.join(out, CHECKPOINT)} to continue that run, or another --out"
            )
        folders = [file for file in old if os.path.isdir(os.path.join(out, file))]
        if folders:
            raise CommandFailed(f"--out {out}: {folders[0]} is a folder, not a run's output; move it away")
    remove_stale_temporaries(out)
    return out, created, old


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
def run_folder(out: str | None, name: str, *, force: bool, resume: str | None) -> Iterator[str]:
    """The folder of :func:`prepare`, for the ``with`` block of a run. The outputs ``--force``
    replaces are moved aside (into a hidden ``.jaxnet-replaced-*`` folder) and deleted once the
    block ends; should it stop (an error, Ctrl-C) before writing an output of its own, they are put
    back and a folder this call created is removed again, so a refused run leaves the folder as
    it was. Once the run has written an output, the replaced ones are gone. Should putting them
    back fail, they stay in the hidden folder, which the message names."""
    folder, created, replaced = prepare(out, name, force=force, resume=resume)
    aside, settled = None, False
    try:
        if replaced:
            aside = tempfile.mkdtemp(prefix=".jaxnet-replaced-", dir=folder)
            for file in replaced:
                os.replace(os.path.join(folder, file), os.path.join(aside, file))
        yield folder
        settled = True
    except BaseException:
        if any(os.path.lexists(os.path.join(folder, file)) for file in RUN_OUTPUTS):
            settled = True  # this run wrote its own outputs: the replaced ones are not put back
        else:
            settled = _put_back(aside, folder)
            if created:
                _remove_empty(folder)
        raise
    finally:
        if aside and settled:
            shutil.rmtree(aside, ignore_errors=True)
        elif aside:
            print(f"jaxnet: the outputs --force replaced are kept in {aside}", file=sys.stderr)


def _put_back(aside, folder) -> bool:
    """Move every file from ``aside`` back into ``folder``; whether all went back."""
    try:
        for file in os.listdir(aside) if aside else []:
            os.replace(os.path.join(aside, file), os.path.join(folder, file))
        return True
    except OSError:
        return False


def _remove_empty(folder) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # only when empty
