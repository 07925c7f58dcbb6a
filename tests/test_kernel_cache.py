"""The compiled stream kernel's cache (initscale._kernels.cpu) and the generated Triton source:
nothing planted, damaged or writable by others is ever loaded; the kernel is rebuilt (or the
framework ops used) with one warning, and the values stay the reference's.

The checks compare owners with the effective user id, so they hold as root too (CI runs as root):
another user's file is made with chown where the tests run as root, and by pretending to be
another user (``_stream_kernel._uid``) everywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from initscale import presets
from initscale._kernels import cpu as _stream_kernel
from initscale.adapters import numpy as isnp
from initscale.streams import Stream, stream_values

CC = os.environ.get("CC", "cc")
needs_cc = pytest.mark.skipif(shutil.which(CC) is None, reason="no C compiler here")


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    """An empty cache folder of this test's, and no kernel loaded yet in this process."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("INITSCALE_CACHE", str(folder))
    monkeypatch.delenv("INITSCALE_STREAM_KERNEL", raising=False)
    monkeypatch.setattr(_stream_kernel, "_state", {})
    return folder


def _load() -> tuple[object, list[str]]:
    """A fresh load(): the kernel (or None) and initscale's warnings on the way."""
    _stream_kernel._state.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib = _stream_kernel.load()
    return lib, [str(w.message) for w in caught if str(w.message).startswith("initscale:")]


def _library(tmp_path: Path, code: str) -> bytes:
    """A shared library built from ``code`` with the system compiler."""
    src = tmp_path / "other.c"
    src.write_text(code, encoding="utf-8")
    out = tmp_path / "other.so"
    subprocess.run([CC, "-shared", "-fPIC", str(src), "-o", str(out)], check=True, capture_output=True, timeout=120)
    return out.read_bytes()


def _planted(tmp_path: Path) -> tuple[bytes, Path]:
    """A valid library with the kernel's entry point and a constructor that writes a marker file
    when it is loaded: what an attacker would plant."""
    marker = tmp_path / "planted-library-ran"
    code = f"""
    #include <stdio.h>
    __attribute__((constructor)) static void planted(void) {{
        FILE *f = fopen("{marker}", "w");
        if (f) {{ fputs("ran", f); fclose(f); }}
    }}
    void initscale_stream_fill(void) {{}}
    """
    return _library(tmp_path, textwrap.dedent(code)), marker


def _put(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _draws_right() -> None:
    """Streams through the NumPy adapter (the kernel where loaded) and torch equal the reference."""
    spec = presets.get("he_normal")
    for shape in ((64, 33), (3, 3, 4, 8)):
        got = isnp.initializer(spec, "keras", stream=Stream(3, "c"))(shape)
        assert np.array_equal(got, stream_values(Stream(3, "c"), spec, shape, "keras", dtype="float32")), shape
    if importlib.util.find_spec("torch") is not None:
        import torch

        from initscale.adapters import torch as ist

        w = ist.initializer(spec, "torch.linear", stream=Stream(3, "c"))(torch.empty(40, 30))
        assert np.array_equal(w.numpy(), stream_values(Stream(3, "c"), spec, (40, 30), "torch.linear"))


def _valid_record_in_place() -> bool:
    """The cached record is now this user's, private, and passes every check."""
    path = _stream_kernel.record_path()
    if stat.S_IMODE(path.lstat().st_mode) != 0o600 or not path.is_file() or path.is_symlink():
        return False
    folder = _stream_kernel._open_folder(path.parent)
    try:
        return _stream_kernel._read(folder, path.name) is not None
    finally:
        os.close(folder)


@needs_cc
def test_folders_and_record_are_private_whatever_the_umask(cache, monkeypatch) -> None:
    """Under umask 000 every folder made is 0700 and the record 0600 (no temporary left)."""
    folder = cache / "a" / "b"
    monkeypatch.setenv("INITSCALE_CACHE", str(folder))
    old = os.umask(0)
    try:
        lib, said = _load()
    finally:
        os.umask(old)
    assert lib is not None and not said
    for made in (cache, cache / "a", folder):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert [p.name for p in folder.iterdir()] == [_stream_kernel.record_path().name]
    assert stat.S_IMODE(_stream_kernel.record_path().stat().st_mode) == 0o600
    lib, said = _load()  # from the cache now, silently
    assert lib is not None and not said


def _plant(how: str, tmp_path: Path) -> Path:
    """Plant the marker library at the record's path, ``how``: as a bare library, in a record
    whose hash is not its own, in a valid record that its group may write, or through a symbolic
    link to a valid record."""
    library, marker = _planted(tmp_path)
    path = _stream_kernel.record_path()
    if how == "bare library":
        _put(path, library)
    elif how == "forged hash":
        record = _stream_kernel._record(library)
        head, _, body = record.partition(b"\n")
        forged = head.rsplit(b"=", 1)[0] + b"=" + hashlib.sha256(b"the real kernel").hexdigest().encode()
        _put(path, forged + b"\n" + body)
    elif how == "group-writable":
        _put(path, _stream_kernel._record(library), 0o660)
    elif how == "symbolic link":
        target = tmp_path / "elsewhere.kernel"
        _put(target, _stream_kernel._record(library))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    else:
        raise AssertionError(how)
    return marker


PLANTS = {
    "bare library": "no valid header",
    "forged hash": "does not match the sha256",
    "group-writable": "writable by its group or others",
    "symbolic link": "cannot be opened as a plain file",
}


@needs_cc
@pytest.mark.parametrize("how", sorted(PLANTS))
def test_a_planted_library_is_never_loaded(how, cache, tmp_path) -> None:
    """A library planted at the record's path never runs (its constructor would write the
    marker): one warning, the kernel rebuilt into a fresh private record, the values right."""
    marker = _plant(how, tmp_path)
    lib, said = _load()
    assert not marker.exists()
    assert lib is not None and len(said) == 1 and PLANTS[how] in said[0] and "rebuilt" in said[0], said
    _draws_right()
    assert _valid_record_in_place()
    lib, said = _load()
    assert lib is not None and not said and not marker.exists()


@needs_cc
def test_another_users_file_or_folder_is_refused(cache, tmp_path, monkeypatch) -> None:
    """A record of another user is not loaded (made with chown where the tests run as root); a
    cache folder of another user is neither read nor written: the kernel is built for this
    process only. Each with one warning, and the values right."""
    library, marker = _planted(tmp_path)
    path = _stream_kernel.record_path()
    _put(path, _stream_kernel._record(library))
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
        lib, said = _load()
        assert not marker.exists()
        assert lib is not None and len(said) == 1 and "belongs to uid 65534" in said[0], said
        _draws_right()
        assert path.stat().st_uid == 0  # rebuilt into a fresh record of this user's
        _put(path, _stream_kernel._record(library))
    before = path.read_bytes()
    monkeypatch.setattr(_stream_kernel, "_uid", lambda: os.geteuid() + 1)  # as another user
    lib, said = _load()
    assert not marker.exists()
    assert lib is not None and len(said) == 1 and f"the cache folder {cache} belongs to uid" in said[0], said
    assert "for this process only" in said[0]
    _draws_right()
    assert path.read_bytes() == before  # not written either


@needs_cc
def test_a_cache_folder_writable_by_others_is_neither_read_nor_changed(cache, tmp_path) -> None:
    library, marker = _planted(tmp_path)
    _put(_stream_kernel.record_path(), _stream_kernel._record(library))
    os.chmod(cache, 0o777)
    try:
        lib, said = _load()
        assert stat.S_IMODE(cache.stat().st_mode) == 0o777  # left as it was: not initscale's to change
    finally:
        os.chmod(cache, 0o700)
    assert not marker.exists()
    assert lib is not None and len(said) == 1 and "writable by its group or others (mode 777)" in said[0], said
    _draws_right()


SUBPROCESS_DRAW = """
import warnings
import numpy as np
from initscale import presets
from initscale._kernels import cpu as _stream_kernel
from initscale.adapters import numpy as isnp
from initscale.streams import Stream, stream_values

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert _stream_kernel.load() is not None
spec = presets.get("he_normal")
got = isnp.initializer(spec, "keras", stream=Stream(3, "c"))((64, 33))
assert np.array_equal(got, stream_values(Stream(3, "c"), spec, (64, 33), "keras", dtype="float32"))
print("ok", *[str(w.message) for w in caught], sep="\\n")
"""


@needs_cc
@pytest.mark.parametrize("keep", ["half", "part of the header"])
def test_a_truncated_record_is_rebuilt_not_mapped(keep, cache) -> None:
    """A truncated cache file (the old cache's SIGBUS) is never mapped: checked in a fresh
    process, which exits normally with one warning and the reference's values."""
    lib, said = _load()
    assert lib is not None and not said
    path = _stream_kernel.record_path()
    size = path.stat().st_size
    os.truncate(path, size // 2 if keep == "half" else 20)
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_DRAW],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "INITSCALE_CACHE": str(cache)},
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    lines = done.stdout.strip().split("\n")
    expected = "truncated or overlong" if keep == "half" else "no valid header"
    assert lines[0] == "ok" and len(lines) == 2 and expected in lines[1] and "rebuilt" in lines[1], lines
    assert _valid_record_in_place()


@needs_cc
def test_an_empty_record_is_rebuilt_and_the_kernel_used(cache, monkeypatch) -> None:
    """An empty cache file no longer switches the kernel off for good: one warning, rebuilt, and
    the kernel draws (the next load is silent)."""
    _put(_stream_kernel.record_path(), b"")
    lib, said = _load()
    assert lib is not None and len(said) == 1 and "is empty" in said[0], said
    calls = []
    real = _stream_kernel.draw
    monkeypatch.setattr(_stream_kernel, "draw", lambda *a, **k: calls.append(1) or real(*a, **k))
    _draws_right()
    assert calls
    assert _valid_record_in_place()
    lib, said = _load()
    assert lib is not None and not said


@needs_cc
def test_a_library_without_the_entry_point_is_replaced(cache, tmp_path, monkeypatch) -> None:
    """A record that checks out but holds a library without initscale_stream_fill: rebuilt with
    one warning (no AttributeError on every draw); without a compiler, the framework ops with
    one warning. The values are the reference's either way."""
    other = _library(tmp_path, "int not_the_kernel(void) { return 0; }\n")
    path = _stream_kernel.record_path()
    _put(path, _stream_kernel._record(other))
    lib, said = _load()
    assert lib is not None and len(said) == 1 and "has no initscale_stream_fill" in said[0], said
    assert "rebuilt" in said[0]
    _draws_right()
    assert _valid_record_in_place()
    _put(path, _stream_kernel._record(other))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    lib, said = _load()
    assert lib is None and len(said) == 1 and "has no initscale_stream_fill" in said[0], said
    assert "framework ops are used instead" in said[0]
    _draws_right()


def _no_owner_or_mode_check(monkeypatch) -> str:
    monkeypatch.setattr(_stream_kernel, "_untrusted", lambda st: None)
    return "group-writable"


def _no_hash_check(monkeypatch) -> str:
    def read(folder: int, name: str) -> bytes:  # the header's format checked, its hash trusted unchecked
        fd = os.open(name, os.O_RDONLY, dir_fd=folder)
        try:
            return _stream_kernel._read_all(fd, 1 << 26).partition(b"\n")[2]
        finally:
            os.close(fd)

    monkeypatch.setattr(_stream_kernel, "_read", read)
    return "forged hash"


@needs_cc
@pytest.mark.parametrize("bug", [_no_owner_or_mode_check, _no_hash_check], ids=lambda f: f.__name__)
def test_the_planted_library_check_catches_planted_bugs(bug, cache, tmp_path, monkeypatch) -> None:
    """Mutation proof: with a check taken out, the planted library of
    test_a_planted_library_is_never_loaded runs (its marker appears), so that test would fail."""
    how = bug(monkeypatch)
    marker = _plant(how, tmp_path)
    _load()
    assert marker.exists()


TRITON_SOURCE_NEVER_WRITTEN = """
import hashlib, inspect, linecache, os, sys
os.umask(0)
import numpy as np
import torch
from initscale._kernels import gpu as _triton_sampler
from initscale.streams import Stream, kernel_params, stream_values
import initscale
from initscale import presets

cache, marker = sys.argv[1], sys.argv[2]
tag = hashlib.sha256(_triton_sampler._SOURCE.encode()).hexdigest()[:16]
os.makedirs(cache, exist_ok=True)
with open(os.path.join(cache, f"triton_sampler_{tag}.py"), "w") as f:  # where the old cache kept it
    f.write(f"open({marker!r}, 'w').write('ran')\\n" + _triton_sampler._SOURCE)
module = _triton_sampler._kernel()
assert module is not None
linecache.clearcache()
assert "def stream(" in inspect.getsource(module.stream.fn)  # Triton still finds the source
spec = presets.get("he_normal")
code, params = kernel_params(spec.resolve(initscale.compute_fans((96, 80), "torch.linear")))
out = torch.empty(96, 80)
_triton_sampler.stream_fill(out, Stream(4, "w").key, (80, 1), (0, 0), code, params, None)
assert np.array_equal(out.numpy(), stream_values(Stream(4, "w"), spec, (96, 80), "torch.linear"))
print(sorted(os.listdir(cache)), repr(f"triton_sampler_{tag}.py"))
"""


def test_the_triton_source_is_never_written_or_read_from_disk(tmp_path) -> None:
    """The generated Triton module is compiled from memory: a file planted where the old cache
    kept it never runs, nothing is written under umask 000, and the kernel draws the stream
    (under Triton's interpreter, in a fresh process: Triton after TensorFlow aborts)."""
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("triton and torch are needed")
    cache, marker = tmp_path / "cache", tmp_path / "planted-source-ran"
    env = {**os.environ, "INITSCALE_CACHE": str(cache), "TRITON_INTERPRET": "1"}
    env.pop("XDG_CACHE_HOME", None)
    done = subprocess.run(
        [sys.executable, "-c", TRITON_SOURCE_NEVER_WRITTEN, str(cache), str(marker)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not marker.exists()
    listing, planted = done.stdout.strip().split("\n")[-1].rsplit(" ", 1)
    assert listing == f"[{planted}]"  # only the planted file: nothing written
