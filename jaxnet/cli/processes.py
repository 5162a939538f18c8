"""``jaxnet train --processes P``: one training run over several processes (:mod:`jaxnet.distributed`).

- No ``--processes`` (or ``--processes 1``): one process, as always.
- ``--processes P --devices N`` alone: this command is the *launcher*. It starts P copies of
  itself on this machine (``python -m jaxnet train <the same flags> --coordinator
  127.0.0.1:<free port> --process-id I``), each with N/P CPU devices, and waits for them. Process
  0 prints and writes; the others' output is shown only if they fail. The first process that
  fails stops the others, and the command fails with its exit code.
- ``--processes P --coordinator HOST:PORT --process-id I`` (with ``--devices N``, all devices of all
  processes): this command is process I of P and joins the others (``jax.distributed.initialize``)
  before anything else. Run one such command per machine (HOST: process 0's machine, PORT: a
  free port there); each machine needs the data (the preset's, or the ``--data`` file) and, for
  ``--resume``, the checkpoint at the same path. The launcher starts its processes this way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator

from .output import CommandFailed


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a ``jaxnet train`` command runs: ``processes`` in all; ``coordinator`` and ``process_id``
    when this command is one of them (``None`` for the launcher and for a single process)."""

    processes: int = 1
    coordinator: str | None = None
    process_id: int | None = None

    @property
    def launches(self) -> bool:
        """This command starts the processes on this machine (``--processes P`` without ``--coordinator``)."""
        return self.processes > 1 and self.coordinator is None

    @property
    def joins(self) -> bool:
        """This command is one of the processes (``--coordinator`` given)."""
        return self.coordinator is not None


def layout(args) -> Layout:
    """The :class:`Layout` of the parsed ``jaxnet train`` flags; ``ValueError`` naming the flags
    that do not go together (``--processes`` without ``--devices``, ``--devices`` not a multiple
    of ``--processes``, ``--coordinator`` without ``--process-id``, ...)."""
    processes = getattr(args, "processes", None) or 1
    coordinator, process_id = getattr(args, "coordinator", None), getattr(args, "process_id", None)
    devices = getattr(args, "devices", None)
    if coordinator is None and process_id is not None:
        raise ValueError(
            "--process-id: names this process among processes started by hand; give --coordinator HOST:PORT "
            "and --processes P with it (or leave both out, and --processes P starts the processes here)"
        )
    if processes == 1:
        if coordinator is not None:
            raise ValueError("--coordinator: joins several processes; give --processes P (P >= 2) and --process-id")
        return Layout()
    if getattr(args, "seeds", None) or getattr(args, "sweep", None):
        raise ValueError("--processes: not supported with --seeds/--sweep (a sweep runs in one process)")
    if devices is None:
        raise ValueError(
            f"--processes {processes}: give --devices N, the devices of all processes together (a multiple of "
            f"{processes}: N / {processes} per process)"
        )
    if devices % processes:
        raise ValueError(
            f"--devices {devices} --processes {processes}: every process holds the same number of devices, "
            f"so --devices must be a multiple of {processes}"
        )
    if coordinator is not None:
        _check_joining(coordinator, processes, process_id)
    return Layout(processes, coordinator, process_id)


def _check_joining(coordinator: str, processes: int, process_id: int | None) -> None:
    """``--coordinator`` a ``host:port`` and ``--process-id`` given and in ``[0, processes)``."""
    from ..distributed import parse_address

    try:
        parse_address(coordinator)
    except ValueError as e:
        raise ValueError(f"--coordinator: {e}") from None
    if process_id is None:
        raise ValueError(
            "--coordinator: give --process-id I too (0 on the coordinator's machine, 1 .. P-1 on the others)"
        )
    if not 0 <= process_id < processes:
        raise ValueError(f"--process-id {process_id}: expected 0 .. {processes - 1} (one per process)")


def start(args, how: Layout) -> int | None:
    """Launch the processes and return the command's exit code (``how.launches``), or join this
    process to the others (``how.joins``) and return ``None``, as for a single process: the run
    goes on here. :class:`CommandFailed` when a process fails or the processes cannot connect."""
    if how.launches:
        return _launch(args, how)
    if how.joins:
        from .. import distributed

        assert how.coordinator is not None and how.process_id is not None
        try:
            distributed.initialize(how.coordinator, how.processes, how.process_id)
        except Exception as e:  # JAX's errors: already computed, the others did not come, ...
            raise CommandFailed(
                f"process {how.process_id} of {how.processes} could not join the others at --coordinator "
                f"{how.coordinator}: {e}"
            ) from None
    return None


def _launch(args, how: Layout) -> int:
    """Start ``how.processes`` processes of this command on this machine and wait for them (see
    the module docstring); 0 when all succeed."""
    from .. import distributed

    argv = list(args.argv)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)

    def command(coordinator: str, i: int) -> list[str]:
        return [sys.executable, "-m", "jaxnet", *argv, "--coordinator", coordinator, "--process-id", str(i)]

    try:
        distributed.launch_local(command, how.processes, args.devices // how.processes, env={"PYTHONPATH": path})
    except distributed.ProcessFailed as e:
        if e.output:
            print(e.output, file=sys.stderr)
        raise CommandFailed(str(e), exit_code=e.returncode if e.returncode > 0 else 128 - e.returncode) from None
    return 0


@contextlib.contextmanager
def starting_together() -> Iterator[Callable[..., None]]:
    """``with starting_together() as ready:`` around what each process does before training (load,
    check, make the folder), ``ready(start)`` called once it is done, ``start`` the bytes of what
    every process must hold alike (the data, the initial state). ``ready`` returns when every
    process got there with the same ``start``; should one raise before it, that one tells the
    others (:func:`jaxnet.distributed.all_ok`) and they raise :class:`CommandFailed` from
    ``ready``, so all stop (process 0 names its own reason) instead of waiting on each other;
    different ``start`` bytes are a :class:`CommandFailed` in every process. Nothing to exchange
    in a single process."""
    from .. import distributed

    asked = False

    def ready(start: bytes = b"") -> None:
        nonlocal asked
        asked = True
        if not distributed.all_ok(True):
            raise CommandFailed("another process stopped before training (process 0 says why when it was that one)")
        if not distributed.same_everywhere(start):
            raise CommandFailed(
                "the processes do not start alike: their data or initial state differ (every machine needs "
                "the same --data file and --resume checkpoint, and the same jaxnet and JAX)"
            )

    try:
        yield ready
    except BaseException:
        if not asked:
            with contextlib.suppress(Exception):  # the others may be gone already
                distributed.all_ok(False)
        raise
