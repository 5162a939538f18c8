"""What the commands share for their ends: a command's failure (a message and an exit code) and
JSON files that stay valid when a metric is NaN or infinite."""

from __future__ import annotations

import json
import math

from ..files import atomic_write


class CommandFailed(Exception):
    """A command stops with ``exit_code``; :func:`jaxnet.cli.main` prints ``jaxnet <command>: <message>``
    to stderr and returns the code."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def finite(tree):
    """JSON-safe copy of nested dicts / lists / tuples: NaN and ±Inf become null."""
    if isinstance(tree, dict):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite(v) for v in tree]
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


def all_finite(tree) -> bool:
    """Whether every number in nested dicts / lists / tuples is finite."""
    if isinstance(tree, dict):
        return all(all_finite(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(all_finite(v) for v in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


def number(value: float, width: int = 11) -> str:
    """``value`` in ``width`` characters: fixed-point with 4 decimals where that shows it
    (1e-3 <= |value| < 1e6, or 0), else scientific (``1.2346e+12``, ``nan``, ``inf``), so
    columns never run together."""
    fixed = value == 0 or 1e-3 <= abs(value) < 1e6
    return f"{value:>{width}.4f}" if fixed else f"{value:>{width}.4e}"


def write_json(path: str, tree) -> None:
    """``tree`` with NaN / Inf as null, written to ``path`` (indent 1) atomically: a temporary file
    renamed over ``path`` (:func:`jaxnet.files.atomic_write`), never a half-written file."""
    with atomic_write(path, "w") as f:
        json.dump(finite(tree), f, indent=1)
