"""JAX's persistent compilation cache for the ``jaxnet`` commands.

A run of ``jaxnet train`` compiles a few dozen small programs; JAX can keep the compiled programs
on disk, so a second run of the same preset (same network, shapes, flags and JAX version) loads
them instead of compiling. The commands turn the cache on by default, in a folder under the
user's cache directory; where, in order:

1. ``--no-compile-cache`` turns it off, ``--compile-cache DIR`` puts it in ``DIR``;
2. else the environment variable ``JAXNET_COMPILE_CACHE``: ``off`` (or ``0``, ``false``, ``no``)
   turns it off, any other value is the folder;
3. else a cache folder JAX is already configured with (``JAX_COMPILATION_CACHE_DIR``) is kept;
4. else :func:`default_folder`: ``$XDG_CACHE_HOME/jaxnet/xla`` (``~/.cache/jaxnet/xla``).

Every program is cached, however quickly it compiled (JAX's default keeps only those that took a
second or more, which would leave out nearly all of jaxnet's). The cache is JAX's own: entries are
keyed by the program, the backend and the JAX and XLA versions, so a stale one is never used.
JAX sets its cache up once per process: a second command run in the same process (a notebook
calling ``jaxnet.cli.main`` twice) keeps the first one's folder.
"""

from __future__ import annotations

import os
import tempfile

ENV = "JAXNET_COMPILE_CACHE"
OFF = ("off", "0", "false", "no")


def default_folder() -> str:
    """``$XDG_CACHE_HOME/jaxnet/xla``, with ``~/.cache`` when ``XDG_CACHE_HOME`` is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxnet", "xla")


def folder(flag_dir: str | None, flag_off: bool, configured: str | None = None) -> str | None:
    """The cache folder these flags and the environment ask for (``configured``: the folder JAX
    already has, if any), or ``None`` for no cache."""
    if flag_off:
        return None
    if flag_dir is not None:
        if not flag_dir.strip():
            raise ValueError("--compile-cache: expected a folder, got an empty path")
        return os.path.expanduser(flag_dir)
    env = os.environ.get(ENV, "").strip()
    if env.lower() in OFF:
        return None
    return os.path.expanduser(env) if env else configured or default_folder()


def configure(flag_dir: str | None, flag_off: bool) -> str | None:
    """Turn JAX's persistent compilation cache on in :func:`folder` (made if missing), caching every
    program; return the folder, or ``None`` when it stays off. A folder that cannot be made is a
    ``ValueError`` naming it."""
    import jax

    path = folder(flag_dir, flag_off, jax.config.values.get("jax_compilation_cache_dir"))
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):  # a folder the run can write in
            pass
    except OSError as e:
        why = "it is a file, not a folder" if os.path.isfile(path) else e.strerror
        raise ValueError(
            f"compile cache: cannot use {path!r} ({why}); give --compile-cache DIR, or "
            f"--no-compile-cache (or {ENV}=off)"
        ) from None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
