"""Training over several processes: JAX's multi-controller model, started, joined and read back.

Every process runs the same program (``jaxnet train``, or a script that calls ``fit``) on its own
devices; :func:`initialize` joins them (``jax.distributed.initialize``) before any JAX computation,
after which ``jax.devices()`` lists the devices of all processes and a jitted call on arrays
spread over them runs in every process together, their collectives exchanged over TCP (Gloo on
the CPU). So every process must make the same jitted calls with the same host values, and the
arrays they pass must be global (:func:`jaxnet.train.replicate` places them). A result read on
the host goes through :func:`to_host`, called in every process; only :func:`is_main_process`
writes files and prints.

:func:`launch_local` starts such processes on this machine (each with its own CPU devices): the
localhost launcher of ``jaxnet train --processes P --devices N``. Across machines, run one
command per machine instead, each naming the coordinator (process 0's host and a free port),
the number of processes and its own id.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import jax
import numpy as np

STOP_GRACE = 3.0
"""Seconds :func:`launch_local` gives a process it stops to end on SIGINT before it sends SIGKILL."""

GLOO_LINE = "[Gloo] "
"""The start of the lines Gloo (the CPU collectives) prints to stdout as it connects the
processes; :func:`launch_local` leaves them out of process 0's output."""


INIT_TIMEOUT = "JAXNET_INIT_TIMEOUT"
"""The environment variable that sets :func:`initialize`'s default wait, in seconds (300 unset)."""


def initialize(
    coordinator: str, processes: int, process_id: int, timeout: int | None = None, heartbeat_timeout: int = 30
) -> None:
    """Join this process to the others: ``jax.distributed.initialize(coordinator, processes,
    process_id)``, waiting up to ``timeout`` seconds (default: ``$JAXNET_INIT_TIMEOUT``, else 300)
    for all ``processes`` to connect. Call it before any JAX computation, once per process.
    ``coordinator``: ``"host:port"`` of process 0 (it listens there); ``process_id`` in
    ``[0, processes)``. ``ValueError`` on bad arguments, ``RuntimeError`` (JAX's) when JAX has
    computed already, or a JAX error when the others do not come in time.

    A process that stops answering for ``heartbeat_timeout`` seconds counts as dead, and JAX then
    ends the others (a collective does not notice a peer that is gone). An exception that nothing
    catches ends this process at once (:func:`leave` with 1, after its traceback), rather than
    in JAX's shutdown barrier, where it would wait for the others while they wait for it."""
    check_layout(processes, process_id, coordinator)
    if timeout is None:
        timeout = int(os.environ.get(INIT_TIMEOUT) or 300)
    jax.distributed.initialize(
        coordinator,
        processes,
        process_id,
        initialization_timeout=timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )
    previous = sys.excepthook

    def leave_on_error(kind, value, traceback):
        previous(kind, value, traceback)
        leave(1)

    sys.excepthook = leave_on_error


def leave(code: int) -> NoReturn:
    """End this process now with exit code ``code`` (stdout and stderr flushed, then ``os._exit``),
    skipping JAX's shutdown barrier: for a process that fails while the others may be waiting for
    it in a collective; they end when its heartbeats stop (see :func:`initialize`) or when
    :func:`launch_local` stops them."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def check_layout(processes: int, process_id: int, coordinator: str) -> None:
    """``ValueError`` naming the argument unless ``processes`` is an integer >= 1, ``process_id``
    one of ``0 .. processes - 1`` and ``coordinator`` a ``"host:port"`` with a port in 1..65535."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive integer, got {processes!r}")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < processes:
        raise ValueError(f"process_id must be an integer in [0, {processes}) (one per process), got {process_id!r}")
    try:
        parse_address(coordinator)
    except ValueError as e:
        raise ValueError(f"coordinator: {e}") from None


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``"host:port"`` (``"[::1]:1234"`` for an IPv6 host); ``ValueError``
    unless the host is not empty and the port an integer in 1..65535."""
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected 'host:port' with a port in 1..65535, got {address!r}")
    return host, int(port)


def is_main_process() -> bool:
    """Whether this is process 0 (always, in a single process): the one that prints and writes."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """``tree`` with every ``jax.Array`` leaf fetched to a NumPy array, in every process: a fully
    addressable array as it is, a replicated one from this process's first shard (no
    communication), another global one gathered from all processes
    (``jax.experimental.multihost_utils.process_allgather``: a collective, so every process must
    call ``to_host`` on the same tree). PRNG keys come back as local key arrays (NumPy has no key
    type); other leaves (Python numbers, NumPy arrays) unchanged."""
    return jax.tree.map(_leaf_to_host, tree)


def _leaf_to_host(a):
    if not isinstance(a, jax.Array):
        return a
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_leaf_to_host(jax.random.key_data(a)), impl=jax.random.key_impl(a))
    if a.is_fully_addressable:
        return np.asarray(a)
    if a.is_fully_replicated:
        return np.asarray(a.addressable_shards[0].data)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def from_main(value: int) -> int:
    """Process 0's ``value`` in every process (a collective: every process calls it); ``value``
    itself in a single process. For a choice each process makes from its own clock (``fit``'s
    epochs per call), which must be the same everywhere: every process runs the same programs."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def all_ok(ok: bool) -> bool:
    """Whether ``ok`` holds in every process (a collective: every process calls it); ``ok`` itself
    in a single process. Lets the processes stop together when one of them cannot go on."""
    if jax.process_count() == 1:
        return bool(ok)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(ok)))))


def same_everywhere(data: bytes) -> bool:
    """Whether ``data`` is the same in every process (their SHA-256 digests compared: a collective,
    every process calls it); ``True`` in a single process. For what every process must hold alike:
    the training set, the state a run starts from."""
    if jax.process_count() == 1:
        return True
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(data).digest(), np.uint8)  # [32]
    gathered = np.asarray(multihost_utils.process_allgather(digest))  # [processes, 32]
    return bool(np.all(gathered == gathered[:1]))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now (the OS picks it), for a local coordinator."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ProcessFailed(RuntimeError):
    """Processes that :func:`launch_local` started exited with an error (or were killed), and the
    others were stopped (``stopped``: some were still running). ``failed``: ``{process id: return
    code}`` (negative: killed by that signal) of those found failed at the same moment, the
    likeliest cause first, which ``process_id`` and ``returncode`` name; ``output``: the tail of
    their output (process 0's went to this process's own stdout and stderr)."""

    def __init__(self, failed: dict[int, int], processes: int, output: str = "", stopped: bool = True) -> None:
        if len(failed) == 1:
            what = "".join(f"process {i} of {processes} {_how(code)}" for i, code in failed.items())
        else:
            what = f"processes {', '.join(map(str, sorted(failed)))} of {processes} failed: " + ", ".join(
                f"{i} {_how(failed[i])}" for i in sorted(failed)
            )
        super().__init__(what + ("; the others were stopped" if stopped else ""))
        self.failed, self.output, self.stopped = failed, output, stopped
        self.process_id, self.returncode = next(iter(failed.items()))


def _how(returncode: int) -> str:
    return f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"


def launch_local(
    command: Callable[[str, int], Sequence[str]],
    processes: int,
    devices_per_process: int,
    timeout: float | None = None,
    init_timeout: int = 60,
    env: dict[str, str] | None = None,
) -> None:
    """Run ``processes`` processes on this machine, ``command(coordinator, i)`` the argv of process
    ``i`` (``coordinator``: ``"127.0.0.1:<free port>"``, where process 0 listens), each on the CPU
    with ``devices_per_process`` devices (``JAX_PLATFORMS=cpu``, ``JAX_NUM_CPU_DEVICES``) and
    ``init_timeout`` seconds to find the others (``$JAXNET_INIT_TIMEOUT``, which :func:`initialize`
    reads); ``env``: more environment variables for them. Process 0's output goes to this
    process's stdout (Gloo's connection lines left out) and stderr; the others' is kept and shown
    only when they fail. Returns when all exited with 0. The first that fails (or, with
    ``timeout`` seconds, the whole run overrunning) stops the others (SIGINT, then SIGKILL after
    :data:`STOP_GRACE` s) and raises :class:`ProcessFailed` (``TimeoutError`` for the timeout); Ctrl-C or SIGTERM
    sent to this process stops them too (``KeyboardInterrupt``)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
        raise ValueError(f"processes must be an integer >= 2, got {processes!r}")
    if isinstance(devices_per_process, bool) or not isinstance(devices_per_process, int) or devices_per_process < 1:
        raise ValueError(f"devices_per_process must be a positive integer, got {devices_per_process!r}")
    port = free_port()
    coordinator = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        **(env or {}),
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(devices_per_process),
        "JAX_COORDINATOR_BIND_ADDRESS": coordinator,  # listen on this machine only
        INIT_TIMEOUT: str(init_timeout),
        "PYTHONUNBUFFERED": "1",
    }
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(processes - 1)]
        workers: list[subprocess.Popen] = []
        stack.callback(_stop, workers)
        stack.enter_context(_sigterm_interrupts())
        workers.append(subprocess.Popen(list(command(coordinator, 0)), env=env, stdout=subprocess.PIPE))
        forward = threading.Thread(target=_forward_lines, args=(workers[0].stdout, sys.stdout), daemon=True)
        forward.start()
        for i, log in enumerate(logs, start=1):
            workers.append(subprocess.Popen(list(command(coordinator, i)), env=env, stdout=log, stderr=log))
        failed = _wait(workers, timeout)
        stopped = any(w.poll() is None for w in workers)
        _stop(workers)
        forward.join(timeout=5)  # the last of process 0's output
        if failed:
            output = "\n".join(f"--- process {i} ---\n{_tail(logs[i - 1])}" for i in failed if i)
            raise ProcessFailed({i: workers[i].returncode for i in failed}, processes, output, stopped)


def _wait(workers: list[subprocess.Popen], timeout: float | None) -> list[int]:
    """Poll until every worker exited (``[]``) or some exited with an error: their indices, the
    likeliest cause first (one killed by a signal, then one other than process 0, whose own error
    is then most often that a peer went: its output is shown anyway); ``TimeoutError`` after
    ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [w.poll() for w in workers]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return sorted(failed, key=lambda i: (int(codes[i] or 0) > 0, i == 0, i))
        if all(code == 0 for code in codes):
            return []
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"the {len(workers)} processes did not finish within {timeout:g} s; stopped them")
        time.sleep(0.05)


def _stop(workers: list[subprocess.Popen]) -> None:
    """SIGINT every worker still running (Python's ``KeyboardInterrupt``: a run cleans up as on
    Ctrl-C; JAX's distributed client catches SIGTERM), SIGKILL those still there after
    :data:`STOP_GRACE` seconds (a process blocked in a collective does not see SIGINT)."""
    running = [w for w in workers if w.poll() is None]
    for w in running:
        w.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE
    for w in running:
        try:
            w.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises ``KeyboardInterrupt`` while the block runs (in the main thread), so the
    launcher stops its processes before it goes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _forward_lines(source, sink) -> None:
    """Copy the lines of the byte stream ``source`` to the text stream ``sink`` as they come,
    leaving out Gloo's connection lines."""
    for raw in iter(source.readline, b""):
        line = raw.decode(errors="replace")
        if not line.startswith(GLOO_LINE):
            sink.write(line)
            sink.flush()


def _tail(log, lines: int = 40) -> str:
    """The last ``lines`` lines of the temporary file ``log`` (Gloo's connection lines left out)."""
    log.flush()
    log.seek(0)
    text = log.read().decode(errors="replace").splitlines()
    return "\n".join([line for line in text if not line.startswith(GLOO_LINE)][-lines:])
