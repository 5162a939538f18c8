"""Test configuration: float64 available for the exact checks, rank promotion is an error, and
one compilation cache for the whole test session.

The cache: most of the suite's time is XLA compiling small programs, and the two xdist workers,
the subprocesses the tests start (the CLI, the README's examples) and the tests that clear JAX's
in-memory caches compile many of the same programs again. JAX's persistent compilation cache,
in a folder made for this session and removed at its end, lets each program compile once per
session: a fresh clone still starts from nothing, and no run sees another run's programs. The
cache sits below tracing, so a monkeypatched (deliberately wrong) derivative traces to a
different program and is compiled, never served a right one from the cache. Set
``JAXNET_TEST_COMPILATION_CACHE=0`` to run without it.
"""

import os
import shutil
import tempfile
import uuid

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def _session_cache_dir():
    """One folder per test session: the controller names it before it starts the xdist workers,
    which inherit its environment, as do the subprocesses they start (a pytest run that a test
    starts, as test_planted_bugs does, shares it and leaves it to the session that made it)."""
    run = os.environ.setdefault("JAXNET_TEST_RUN", uuid.uuid4().hex)  # workers are started with this environment
    return os.path.join(tempfile.gettempdir(), f"jaxnet-test-compilation-cache-{run}")


_OWNER = "JAXNET_TEST_RUN" not in os.environ  # this process names the session's folder and removes it
if os.environ.get("JAXNET_TEST_COMPILATION_CACHE", "1") != "0":
    _CACHE = _session_cache_dir()
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE  # subprocesses share it
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
else:
    _CACHE = None
    os.environ.setdefault("JAXNET_COMPILE_CACHE", "off")  # the commands the tests run keep nothing either


def pytest_sessionfinish(session, exitstatus):
    """The process that named the session's cache folder (the controller) removes it."""
    if _CACHE and _OWNER:
        shutil.rmtree(_CACHE, ignore_errors=True)
