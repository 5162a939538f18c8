"""The commands' persistent compilation cache (jaxnet.cli.cache): on by default in the user's cache
folder, moved or turned off by flag or environment, and a second run of a preset served from it."""

import os
import subprocess
import sys

import pytest

from jaxnet.cli import cache

RUN = """
import sys
import jax.monitoring
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
from jaxnet import cli
rc = cli.main(sys.argv[1:])
hits = events.count("/jax/compilation_cache/cache_hits")
print("rc", rc, "hits", hits, "requests", events.count("/jax/compilation_cache/compile_requests_use_cache"))
"""


def _train(tmp_path, name, *flags, env=None):
    """``jaxnet train --preset 000-spiral --epochs 2`` in a fresh process with no JAX cache configured
    (the test session's own is removed from its environment): ``(rc, hits, requests)``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    clean.pop(cache.ENV, None)
    clean.update(env or {}, XDG_CACHE_HOME=str(tmp_path / "home-cache"))
    args = ["train", "--preset", "000-spiral", "--epochs", "2", "--quiet", "--out", str(tmp_path / name), *flags]
    out = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=300, env=clean)
    assert out.returncode == 0, out.stderr[-2000:]
    _, rc, _, hits, _, requests = out.stdout.split()[-6:]
    return int(rc), int(hits), int(requests)


def _files(folder):
    return sum(len(files) for _, _, files in os.walk(folder)) if os.path.isdir(folder) else 0


def test_a_second_run_is_served_from_the_cache(tmp_path):
    folder = tmp_path / "xla"
    rc, hits, requests = _train(tmp_path, "first", "--compile-cache", str(folder))
    assert rc == 0 and hits == 0 and requests >= 5 and _files(folder) >= requests  # 8 programs when written
    rc, hits, again = _train(tmp_path, "second", "--compile-cache", str(folder))
    assert rc == 0 and hits == again == requests  # every program of the run found in the cache


@pytest.mark.slow
def test_default_folder_and_turning_it_off(tmp_path):
    rc, _, _ = _train(tmp_path, "default")
    assert rc == 0 and _files(tmp_path / "home-cache" / "jaxnet" / "xla") >= 5  # under $XDG_CACHE_HOME
    for flags, env in [(("--no-compile-cache",), None), ((), {cache.ENV: "off"})]:
        moved = tmp_path / "moved"
        rc, hits, _ = _train(tmp_path, f"off-{len(flags)}", *flags, env={**(env or {}), "XDG_CACHE_HOME": str(moved)})
        assert rc == 0 and hits == 0 and _files(moved) == 0


def test_where_the_cache_goes(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_folder() == str(tmp_path / "jaxnet" / "xla")
    assert cache.folder(None, False) == str(tmp_path / "jaxnet" / "xla")
    assert cache.folder(None, False, configured="/jax/own") == "/jax/own"  # JAX_COMPILATION_CACHE_DIR is kept
    assert cache.folder("/flag", False, configured="/jax/own") == "/flag"
    assert cache.folder("/flag", True) is None
    monkeypatch.setenv(cache.ENV, "/env")
    assert cache.folder(None, False, configured="/jax/own") == "/env"
    for off in ("off", "0", "False", "no"):
        monkeypatch.setenv(cache.ENV, off)
        assert cache.folder(None, False, configured="/jax/own") is None


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path, capsys):
    from jaxnet import cli

    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["train", "--preset", "000-spiral", "--epochs", "1", "--out", str(tmp_path / "r")]
    assert cli.main([*args, "--compile-cache", str(blocker / "xla")]) == 2
    err = capsys.readouterr().err
    assert f"compile cache: cannot use '{blocker / 'xla'}'" in err and "--no-compile-cache" in err
    assert not (tmp_path / "r").exists()
    assert cli.main([*args, "--compile-cache", str(blocker)]) == 2
    assert "it is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--compile-cache: expected a folder, got an empty path"):
        cache.folder("  ", False)
