"""How the C++ kernels are had (``mmhost/kernels/_native.py``): the prebuilt module when it matches
the shipped sources, else compiled on first use into the user's cache; without a compiler one
warning naming the cause and the fix. The slow test installs mmhost as a user does (a fresh venv,
``pip install torch==2.13.0`` then ``pip install .`` with build isolation) and runs it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmhost.kernels import _native, _sources

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """_native as on a first import, its cache in a temp folder."""
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_loaded", None)
    monkeypatch.setenv("MMHOST_KERNEL_CACHE", str(tmp_path / "cache"))
    yield
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "_loaded", None)


def test_the_prebuilt_module_matches_the_shipped_sources():
    import mmhost._C

    assert mmhost._C.SOURCE_HASH == _sources.source_hash()
    assert _native.load() is mmhost._C


def test_no_compiler_is_one_warning_naming_the_cause_and_the_command(fresh, monkeypatch):
    monkeypatch.setitem(sys.modules, "mmhost._C", None)  # no prebuilt module
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.warns(RuntimeWarning) as caught:
        assert _native.load() is None
    (w,) = caught
    text = str(w.message)
    assert "mmhost._C is not built" in text
    assert "no C++ compiler: '/nonexistent/c++' is not on PATH" in text
    assert "`mmhost build-kernels`" in text and "MMHOST_SKIP_BUILD" not in text
    assert _native.load() is None  # asked again: no second warning (warnings are errors here)


def test_a_stale_prebuilt_module_is_not_used(fresh, monkeypatch):
    monkeypatch.setattr(_sources, "source_hash", lambda: "0123456789abcdef")
    module, why = _native._prebuilt()
    assert module is None and "built from other sources" in why


def test_a_lock_left_by_a_killed_build_is_removed_and_a_fresh_one_kept(tmp_path, caplog):
    """torch's builder waits as long as its lock file is there: one left by a build that was
    killed (Ctrl-C on a first ``mmhost serve``) would hang every later start."""
    lock = tmp_path / "lock"
    assert not _native.clear_stale_lock(tmp_path)  # none there
    lock.touch()
    assert not _native.clear_stale_lock(tmp_path) and lock.exists()  # a build may be running
    old = time.time() - _native.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with caplog.at_level(logging.WARNING, logger=_native.log.name):
        assert _native.clear_stale_lock(tmp_path)
    assert not lock.exists()
    assert "stale kernel build lock" in caplog.text and str(lock) in caplog.text


def test_build_kernels_says_where_the_module_is(capsys):
    from mmhost.cli import main

    assert main(["build-kernels"]) == 0
    assert "the kernels built at install are current" in capsys.readouterr().out


def _files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the sources")
def test_a_plain_pip_install_ends_with_the_cpp_kernels_and_no_triton(tmp_path):
    src = tmp_path / "src"
    for name in _files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMHOST_", "VIRTUAL_ENV"))}
    env["MMHOST_KERNEL_CACHE"] = str(tmp_path / "cache")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["torch==2.13.0"], [str(src)]):  # build isolation on, as pip defaults
        out = subprocess.run([*pip, *args], env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout + out.stderr
    script = textwrap.dedent(
        """
        import importlib.util, logging, warnings
        logging.basicConfig(level=logging.INFO)
        warnings.simplefilter("error")
        import numpy as np
        from mmhost.kernels import _native, _sources
        assert importlib.util.find_spec("triton") is None, "triton was installed"
        assert importlib.util.find_spec("mmhost._C") is None, "an isolated build has no torch"
        native = _native.load()
        assert native is not None and native.SOURCE_HASH == _sources.source_hash()
        from mmhost import Host
        from mmhost.artifacts import Artifact, Column, Preprocessing
        import tempfile, os
        store = tempfile.mkdtemp()
        art = Artifact("model", [Column("a", "float"), Column("b", "float")],
                       Preprocessing.identity(2), "linear", "regressor",
                       params={"coef": np.array([[2.0, 3.0]]), "intercept": np.array([1.0])})
        art.save(os.path.join(store, "m.tar.gz"))
        with Host(store=store, device="cpu") as host:
            print("predicted", host.predict("m.tar.gz", [[1.0, 2.0]]).tolist())
        """
    )
    run = subprocess.run(
        [py, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "predicted [9.0]" in run.stdout
    assert run.stderr.count("compiling mmhost's C++ kernels with torch") == 1, run.stderr
    again = subprocess.run(  # the second process finds the build in the cache: no compiling
        [py, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0 and "compiling" not in again.stderr, again.stderr
