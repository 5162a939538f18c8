"""Where a run writes: one folder per run, checked before training starts, never another run's.

- Without ``--out``, a run gets a new folder ``runs/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ...
  when that exists), ``<name>`` being the preset or the ``--data`` file's stem (``-sweep`` added
  for a sweep): two runs never share a folder.
- ``--out DIR`` that already holds a run's outputs (:data:`RUN_OUTPUTS`) is refused unless
  ``--force`` (its old outputs are then removed first, so every file in the folder is this run's),
  or unless the run resumes the checkpoint in that folder (``--resume DIR/checkpoint.npz``), which
  continues in place.
- A path that is a file, cannot be created or cannot be written is refused before training.
"""

from __future__ import annotations

import os
import tempfile
import time

from ..files import remove_stale_temporaries
from .output import CommandFailed

RUN_OUTPUTS = ("metrics.json", "checkpoint.npz", "curves.png", "decision_boundary.png", "fit.png",
               "sweep.json", "sweep.png")
"""The files a ``jaxnet train`` run (or sweep) writes into its folder."""

RUNS = "runs"
"""The parent of the default run folders (relative to the working directory)."""


def default_folder(name: str, now: float | None = None) -> str:
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` at ``now`` (default: the current time); the first of
    ``…``, ``…-2``, ``…-3``, … that does not exist yet."""
    base = os.path.join(RUNS, f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}")
    path, n = base, 1
    while os.path.lexists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def continues_in(out: str, resume: str | None) -> bool:
    """Whether ``resume`` is a checkpoint inside ``out`` (the run continues in place)."""
    return bool(resume) and os.path.realpath(os.path.dirname(os.path.abspath(resume))) == os.path.realpath(out)


def prepare(out: str, *, force: bool, resume: str | None) -> None:
    """Create ``out`` and make sure this run may write there (see the module docstring); removes
    the old outputs with ``force``, and what killed writes left. :class:`CommandFailed` (exit 2)
    naming ``--out`` and the reason otherwise."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise CommandFailed(f"--out {out}: exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # can this run write here?
            pass
    except OSError as e:
        raise CommandFailed(f"--out {out}: cannot create or write the folder ({e.strerror or e})") from None
    old = [name for name in RUN_OUTPUTS if os.path.lexists(os.path.join(out, name))]
    if old and not continues_in(out, resume):
        if not force:
            raise CommandFailed(
                f"--out {out} holds another run's outputs ({', '.join(old)}); pass --force to replace them, "
                f"--resume {os.path.join(out, 'checkpoint.npz')} to continue that run, or another --out")
        for name in old:
            os.remove(os.path.join(out, name))
    remove_stale_temporaries(out)
