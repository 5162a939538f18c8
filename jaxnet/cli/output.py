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


def write_json(path: str, tree) -> None:
    """``tree`` with NaN / Inf as null, written to ``path`` (indent 1) atomically: a temporary file
    renamed over ``path`` (:func:`jaxnet.files.atomic_write`), never a half-written file."""
    with atomic_write(path, "w") as f:
        json.dump(finite(tree), f, indent=1)
