"""A compiled CPU kernel for the portable streams: Philox4x32-10, the float transform and the
layout mapping in one pass over the output, built with the system C compiler on first use.

The stream is defined by :mod:`initscale.streams` (and computed there, in NumPy, as the
reference); this kernel computes the same values element by element: the canonical index of each
output element, its Philox block (reused by the next element when they share it), the bits of its
lane, u = ((x >> 8) | 1)·2⁻²⁴, and the documented transform with Wichura's AS241 Φ⁻¹ — the
reference's own, evaluated in the same order (Horner, no fused multiply-add) — then the clip to
the stored dtype's bounds and one rounding to float32 (none for float64; for float16 and
bfloat16, float32 rounded to odd, which the final cast turns into one correct rounding).

It needs a C compiler (``$CC``, else ``cc``) once. Without one, or with
``INITSCALE_STREAM_KERNEL=0``, :func:`load` returns None and the adapters use their framework ops
instead (same values, slower). The call releases the GIL, so :func:`fill` runs chunks of the
output on several threads. It walks at most :data:`MAX_AXES` axes; the adapters draw weights of
more with their array ops (same values).

The cache, and why a library found there is safe to load. The built library is kept in one
file, :func:`record_path`: ``stream-kernel-<tag>-<platform>.kernel`` under ``$INITSCALE_CACHE``
(else ``$XDG_CACHE_HOME/initscale``, else ``~/.cache/initscale``), the tag hashing the build
inputs (source, flags, machine). The file is a record: one header line (the tag, the library's
size and its sha256, computed when it was built) and then the library's bytes. The rules:

- Written privately: missing folders are made 0700 and the record 0600 whatever the umask; a
  build compiles in a private temporary folder, writes the record into a fresh ``O_EXCL`` file
  in the cache folder and renames it over the old one in one step (readers see the old record
  or the new one, never half of one).
- Trusted only if nobody else could have written it: the cache folder (opened once; the record
  is opened relative to that descriptor, no symbolic link followed) and the record must belong
  to the effective user and be writable by neither group nor others.
- Read once, loaded as read: the record is read through one descriptor, its bytes checked
  against the recorded size and sha256, and exactly those bytes are loaded: copied into a
  sealed memfd (Linux; kept open so its name is never reused), else into a new 0700 file in a
  private temporary folder, removed once loaded. Swapping or truncating the cached file after
  the check changes nothing already read, and a damaged file is never mapped (no SIGBUS).
- Anything else is never loaded: another user's file or folder, one writable by others, a
  symbolic link, an empty, truncated or foreign file, a hash mismatch. A record that checks out
  but whose library does not load or lacks the entry point is not used either. Then the kernel
  is rebuilt from source into a fresh record (or, without a compiler, the framework ops are
  used), with one warning saying what was refused.

The hash detects damage and stray files; it is not a signature: whoever can write the folder as
you could also write a matching record, which is why the folder and file must be yours alone.

Only the standard library is imported here (ctypes); callers pass raw CPU addresses.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import secrets
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from initscale.normal_math import _A, _B, _C, _D, _E, _F, _MILLS

# dist codes (the kernel's switch) and their parameter vectors, built by initscale.streams.kernel_params
CONSTANT, UNIFORM, NORMAL, TRUNCATED, FAR = 0, 1, 2, 3, 4
# output kinds
FLOAT32, FLOAT64, FLOAT32_ODD = 0, 1, 2
# the most axes the kernel walks (its index arrays' size); the adapters use their framework ops for more
MAX_AXES = 16


def output_kind(dtype: str) -> int:
    """The buffer the kernel writes for a weight of ``dtype`` ("float32", "torch.bfloat16", ...):
    float32 and float64 as themselves, a narrower float as float32 rounded to odd, for the one
    final cast."""
    name = dtype.rsplit(".", 1)[-1]
    return {"float32": FLOAT32, "float64": FLOAT64}.get(name, FLOAT32_ODD)


def _array(name: str, values: Sequence[float]) -> str:
    return f"static const double {name}[{len(values)}] = {{{', '.join(repr(float(v)) for v in values)}}};"


SOURCE = "\n".join([
    "#include <stdint.h>",
    "#include <string.h>",
    "#include <math.h>",
    f"#define MAX_AXES {MAX_AXES}",
    _array("A", _A), _array("B", _B), _array("C", _C), _array("D", _D), _array("E", _E), _array("F", _F),
    _array("MILLS", _MILLS), f"#define MILLS_TERMS {len(_MILLS)}",
    r"""
/* numpy.polyval's Horner order: y = 0; y = y*x + c for each coefficient, highest first */
static double ratio(const double *num, const double *den, double r) {
    double n = 0.0, d = 0.0;
    for (int i = 0; i < 8; ++i) n = n * r + num[i];
    for (int i = 0; i < 8; ++i) d = d * r + den[i];
    return n / d;
}

/* Wichura's AS241 for p in the tails (|p - 0.5| > 0.425), as initscale.normal_math.ndtri */
static double ndtri_tail(double p, double q) {
    double t = q < 0.0 ? p : 1.0 - p;
    if (t == 0.0) return q < 0.0 ? -INFINITY : INFINITY;
    double r = sqrt(-log(t));
    double x = r <= 5.0 ? ratio(C, D, r - 1.6) : ratio(E, F, r - 5.0);
    return q < 0.0 ? -x : x;
}

#define BATCH 64

/* AS241 on a batch: the central rational function for every element in lock-step loops the
   compiler vectorizes (the same operations, element by element, as the scalar form), then the
   tails one by one. */
static void ndtri_batch(const double *p, double *out, int m) {
    double q[BATCH], r[BATCH], n[BATCH], d[BATCH];
    for (int i = 0; i < m; ++i) { q[i] = p[i] - 0.5; r[i] = 0.180625 - q[i] * q[i]; n[i] = 0.0; d[i] = 0.0; }
    for (int c = 0; c < 8; ++c)
        for (int i = 0; i < m; ++i) { n[i] = n[i] * r[i] + A[c]; d[i] = d[i] * r[i] + B[c]; }
    for (int i = 0; i < m; ++i) out[i] = q[i] * (n[i] / d[i]);
    for (int i = 0; i < m; ++i)
        if (fabs(q[i]) > 0.425) out[i] = ndtri_tail(p[i], q[i]);
}

static void philox(uint64_t block, uint32_t k0, uint32_t k1, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = 0, c3 = 0;
    for (int r = 0; r < 10; ++r) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* initscale.normal_math.mills_series, in its order of operations */
static double mills(double t) {
    double r = 1.0 / (t * t), acc = MILLS[0] * r;
    for (int i = 1; i < MILLS_TERMS; ++i) acc = (acc + MILLS[i]) * r;
    return acc + 1.0;
}

/* initscale.streams.far_values: z = -(a + y) for 1 - kept*(1 - u), y by far_tail_offset (three
   Newton steps), log1p(t) as log(w) - ((w - 1) - t)/w with w = 1 + t; prm (a, kept, zlo, zhi,
   loc, scale, log S(a)) */
static double far_value(double u, const double *prm) {
    double a = prm[0], lsa = prm[6];
    double e = -log(1.0 + (-prm[1]) * (1.0 - u));
    double y = 2.0 * e / (a + sqrt(a * a + 2.0 * e));
    for (int k = 0; k < 3; ++k) {
        double x = y + a, s = mills(x), t = y / a, w = 1.0 + t;
        double h = y * (0.5 * y + a) + (log(w) - ((w - 1.0) - t) / w) - (log(s) - lsa);
        y = y - (h - e) * s / x;
    }
    double z = -(y + a);
    z = z < prm[2] ? prm[2] : z;
    return z > prm[3] ? prm[3] : z;
}

/* The documented transform of a batch of uniforms (initscale.streams.transform), clipped. */
static void transform(const double *u, double *v, int m, int dist, const double *prm, int clip, double lo,
                      double hi) {
    double t[BATCH], z[BATCH];
    switch (dist) {
        case 0: for (int i = 0; i < m; ++i) v[i] = 0.0 + prm[0]; break;
        case 1: for (int i = 0; i < m; ++i) v[i] = prm[0] + prm[1] * u[i]; break;
        case 2:
            ndtri_batch(u, z, m);
            for (int i = 0; i < m; ++i) v[i] = prm[0] + prm[1] * z[i];
            break;
        case 4:
            for (int i = 0; i < m; ++i) v[i] = prm[4] + prm[5] * far_value(u[i], prm);
            break;
        default:
            for (int i = 0; i < m; ++i) t[i] = prm[0] + u[i] * prm[1];
            ndtri_batch(t, z, m);
            for (int i = 0; i < m; ++i) {
                double w = z[i] < prm[2] ? prm[2] : z[i];
                w = w > prm[3] ? prm[3] : w;
                v[i] = prm[4] + prm[5] * w;
            }
    }
    if (clip)
        for (int i = 0; i < m; ++i) { double w = v[i] < lo ? lo : v[i]; v[i] = w > hi ? hi : w; }
}

/* float32 rounded to odd: truncated toward zero, lowest bit set where inexact. Rounding that to
   float16 or bfloat16 (nearest even) gives the correctly rounded value of v, as one rounding. */
static float to_odd(double v) {
    float t = (float)v;
    if ((double)t == v || v != v) return t;
    if (fabs((double)t) > fabs(v)) t = nextafterf(t, 0.0f);
    uint32_t b;
    memcpy(&b, &t, 4);
    b |= 1u;
    memcpy(&t, &b, 4);
    return t;
}

/* Elements [start, stop), in row-major order over `ndim` axes of sizes `dims`, of an output whose
   element (i_0, ...) sits at sum_d i_d * ostrides[d] (in elements) and has canonical index
   base + sum_d contrib[offset_d + i_d]; out is float32 (kind 0), float64
   (kind 1) or float32 rounded to odd (kind 2, for a float16 or bfloat16 weight). prm: constant (value); uniform (low,
   high - low); normal (mean, std); truncated (pa, pb - pa, zlo, zhi, loc, scale); far (a, kept, zlo, zhi,
   loc, scale, log S(a)). */
void initscale_stream_fill(void *out, int kind, int64_t start, int64_t stop, int ndim,
                           const int64_t *dims, const int64_t *contrib, const int64_t *ostrides,
                           int64_t base, uint32_t k0, uint32_t k1, int dist, const double *prm, int clip,
                           double lo, double hi) {
    int64_t idx[MAX_AXES], off[MAX_AXES];
    int64_t rest = start;
    for (int d = ndim - 1; d >= 0; --d) { idx[d] = rest % dims[d]; rest /= dims[d]; }
    off[0] = 0;
    for (int d = 1; d < ndim; ++d) off[d] = off[d - 1] + dims[d - 1];
    int last = ndim - 1;
    const int64_t *inner = contrib + off[last];
    uint32_t words[4];
    uint64_t cached = UINT64_MAX;
    double u[BATCH], v[BATCH];
    int64_t j = start;
    while (j < stop) {
        int64_t outer = base, place = 0;
        for (int d = 0; d < last; ++d) { outer += contrib[off[d] + idx[d]]; place += idx[d] * ostrides[d]; }
        int64_t step = ostrides[last];
        int64_t end = j + (dims[last] - idx[last]);
        if (end > stop) end = stop;
        int64_t i = idx[last];
        while (j < end) {
            int m = end - j < BATCH ? (int)(end - j) : BATCH;
            for (int k = 0; k < m; ++k) {
                uint64_t c = (uint64_t)(outer + inner[i + k]);
                if ((c >> 2) != cached) { cached = c >> 2; philox(cached, k0, k1, words); }
                u[k] = (double)((words[c & 3] >> 8) | 1u) * 0x1p-24;
            }
            transform(u, v, m, dist, prm, clip, lo, hi);
            int64_t at = place + i * step;
            if (kind == 1) for (int k = 0; k < m; ++k) ((double *)out)[at + k * step] = v[k];
            else if (kind == 2) for (int k = 0; k < m; ++k) ((float *)out)[at + k * step] = to_odd(v[k]);
            else for (int k = 0; k < m; ++k) ((float *)out)[at + k * step] = (float)v[k];
            i += m;
            j += m;
        }
        idx[last] = 0;
        for (int d = last - 1; d >= 0; --d) { if (++idx[d] < dims[d]) break; idx[d] = 0; }
    }
}
""",
])

_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math"]
_SYMBOL = "initscale_stream_fill"
_MAGIC = "initscale-stream-kernel"
_MAX_BYTES = 64 << 20  # a record larger than this is refused unread (the library is ~24 KB)
_lock = threading.Lock()
_state: dict[str, ctypes.CDLL | None] = {}
_loaded: list[int] = []  # the memfds kernels were loaded from: open for the process's life (see _dlopen)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class _Refused(Exception):
    """A cache entry or folder that is not used; the message says why."""


def _cache_dir() -> Path:
    root = os.environ.get("INITSCALE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "initscale")
    return Path(root)


def _uid() -> int | None:
    """The user a trusted cache entry belongs to: the effective user id (None where the system has
    none, Windows: no owner check there)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def _tag() -> str:
    """The build inputs' hash: source, flags and machine."""
    return hashlib.sha256((SOURCE + " ".join(_FLAGS) + platform.machine()).encode()).hexdigest()[:16]


def record_path() -> Path:
    """Where the built kernel is cached: one file, a header line (tag, size, sha256) and then the
    library's bytes (see the module docstring)."""
    return _cache_dir() / f"stream-kernel-{_tag()}-{sys.platform}.kernel"


def _record(library: bytes) -> bytes:
    header = f"{_MAGIC} tag={_tag()} size={len(library)} sha256={hashlib.sha256(library).hexdigest()}\n"
    return header.encode("ascii") + library


def _untrusted(st: os.stat_result) -> str | None:
    """Why a file or folder with status ``st`` is not trusted: another user's, or writable by
    its group or others; None if it is trusted."""
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        return f"belongs to uid {st.st_uid}, not to this user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by its group or others (mode {stat.S_IMODE(st.st_mode):03o})"
    return None


def _open_folder(folder: Path) -> int:
    """A descriptor of ``folder``, created (with every missing parent) 0700 whatever the umask,
    owned by this user and writable by no one else; raises :class:`_Refused` if it is not."""
    for part in reversed((folder, *folder.parents)):
        if not os.path.isdir(part):
            try:
                os.mkdir(part, 0o700)
            except FileExistsError:
                continue
            os.chmod(part, 0o700)  # the umask may have taken bits away: exactly 0700
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    problem = _untrusted(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        raise _Refused(f"the cache folder {folder} {problem} (make it yours with mode 700, or set INITSCALE_CACHE "
                       "to a folder of yours)")
    return fd


def _read_all(fd: int, limit: int) -> bytes:
    parts, size = [], 0
    while size < limit:
        part = os.read(fd, min(1 << 20, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _read(folder: int, name: str) -> bytes | None:
    """The library in the record ``name`` of the open ``folder``, read once through one descriptor
    (no symbolic link followed) and checked: a regular file of this user's, writable by no one
    else, whose header names these build inputs and whose bytes match the size and sha256 it
    records. None where there is no record; :class:`_Refused` for anything else."""
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0), dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as err:  # ELOOP: a symbolic link
        raise _Refused(f"cannot be opened as a plain file ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("is not a regular file")
        problem = _untrusted(st)
        if problem is not None:
            raise _Refused(problem)
        if st.st_size > _MAX_BYTES:
            raise _Refused(f"is too large ({st.st_size} bytes) to be a kernel record")
        data = _read_all(fd, _MAX_BYTES + 1)
    finally:
        os.close(fd)
    if not data:
        raise _Refused("is empty")
    head, newline, library = data.partition(b"\n")
    fields = head.decode("ascii", "replace").split(" ")
    if (not newline or len(fields) != 4 or fields[:2] != [_MAGIC, f"tag={_tag()}"]
            or not fields[2].startswith("size=") or not fields[2][5:].isdigit() or not fields[3].startswith("sha256=")):
        raise _Refused("is not a kernel record of this initscale (no valid header)")
    size = int(fields[2][5:])
    if len(library) != size:
        raise _Refused(f"is truncated or overlong ({len(library)} bytes, {size} recorded)")
    if hashlib.sha256(library).hexdigest() != fields[3][7:]:
        raise _Refused("does not match the sha256 recorded when it was built")
    return library


def _store(folder: int, name: str, library: bytes) -> None:
    """Write the record of ``library`` as ``name`` in the open ``folder``: into a fresh private
    file (0600 whatever the umask), then renamed over ``name`` in one step."""
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600, dir_fd=folder)
    try:
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, _record(library))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _compile() -> bytes | None:
    """The library's bytes, compiled in a private temporary folder (0700); None without a working
    C compiler."""
    suffix = ".dll" if sys.platform == "win32" else ".so"
    try:
        with tempfile.TemporaryDirectory(prefix="initscale-build-") as tmp:
            src = Path(tmp) / "stream.c"
            src.write_text(SOURCE, encoding="utf-8")
            built = Path(tmp) / f"stream{suffix}"
            compiler = os.environ.get("CC", "cc")
            subprocess.run([compiler, *_FLAGS, str(src), "-o", str(built), "-lm"], check=True,
                           capture_output=True, timeout=120)
            return built.read_bytes()
    except (OSError, subprocess.SubprocessError):
        return None


def _dlopen(library: bytes) -> ctypes.CDLL:
    """Load exactly ``library`` (bytes already checked): from a sealed memfd where the system has
    them (Linux), else from a fresh file in a private temporary folder, removed once loaded. The
    memfd stays open, so its /proc/self/fd name is never reused for another library (the dynamic
    loader would hand back the first one loaded under that name)."""
    if hasattr(os, "memfd_create"):
        try:
            fd = os.memfd_create("initscale-stream-kernel", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                _write_all(fd, library)
                if hasattr(fcntl, "F_ADD_SEALS"):
                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
                                | fcntl.F_SEAL_SEAL)
                lib = ctypes.CDLL(f"/proc/self/fd/{fd}")
            except OSError:  # memfds not executable here (vm.memfd_noexec), no /proc: a private file
                os.close(fd)
            else:
                _loaded.append(fd)
                return lib
    folder = tempfile.mkdtemp(prefix="initscale-kernel-")  # 0700
    path = os.path.join(folder, "stream.dll" if sys.platform == "win32" else "stream.so")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o700)
        try:
            os.fchmod(fd, 0o700)
            _write_all(fd, library)
        finally:
            os.close(fd)
        return ctypes.CDLL(path)
    finally:  # a loaded library needs no file (except on Windows, which keeps this one)
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(folder)


def _open(library: bytes) -> ctypes.CDLL:
    """The loaded kernel with its entry point typed; :class:`_Refused` if it does not load or has
    no entry point."""
    try:
        lib = _dlopen(library)
    except OSError as err:
        raise _Refused(f"does not load ({err})") from None
    try:
        fn = getattr(lib, _SYMBOL)
    except AttributeError:
        raise _Refused(f"has no {_SYMBOL}") from None
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                   ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64),
                   ctypes.c_int64,
                   ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.POINTER(ctypes.c_double),
                   ctypes.c_int, ctypes.c_double, ctypes.c_double]
    return lib


def _warn(problems: list[str], outcome: str) -> None:
    warnings.warn(f"initscale: {'; '.join(problems)}; {outcome} (INITSCALE_STREAM_KERNEL=0 switches the kernel "
                  "off).", RuntimeWarning, stacklevel=4)


def _build() -> ctypes.CDLL | None:
    """The kernel from its cache record if every check passes, else built afresh (and the record
    replaced): one warning for anything refused on the way, None without a compiler."""
    path = record_path()
    problems: list[str] = []
    folder = -1
    try:
        folder = _open_folder(path.parent)
    except _Refused as refused:
        problems.append(f"{refused}; the kernel is built for this process only")
    except OSError as err:
        problems.append(f"the cache folder {path.parent} cannot be used ({err}); the kernel is built for this "
                        "process only")
    try:
        if folder >= 0:
            try:
                library = _read(folder, path.name)
                if library is not None:
                    return _open(library)
            except _Refused as refused:
                problems.append(f"the cached kernel {path} {refused}, so it is not used")
            except OSError as err:
                problems.append(f"the cached kernel {path} cannot be read ({err})")
        library = _compile()
        if library is None:
            if problems:
                _warn(problems, "no C compiler could rebuild it: the framework ops are used instead (same values)")
            return None
        try:
            lib = _open(library)
        except _Refused as refused:
            _warn([*problems, f"the freshly built kernel {refused}"], "the framework ops are used instead")
            return None
        if folder >= 0:
            try:
                _store(folder, path.name, library)
            except OSError as err:
                problems.append(f"the kernel could not be saved in {path.parent} ({err})")
        if problems:
            _warn(problems, "it was rebuilt from source and checked before loading")
        return lib
    finally:
        if folder >= 0:
            os.close(folder)


def load() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use (a cached build is loaded only once it passes the
    checks of the module docstring); None where it cannot be (no compiler) or is switched off
    (``INITSCALE_STREAM_KERNEL=0``)."""
    if os.environ.get("INITSCALE_STREAM_KERNEL", "1") == "0":
        return None
    with _lock:
        if "lib" not in _state:
            _state["lib"] = _build()
        return _state["lib"]


_MIN_CHUNK = 2**16  # elements per thread below which threads cost more than they save


def fill(lib: ctypes.CDLL, address: int, kind: int, dims: Sequence[int], contrib_address: int,
         out_strides: Sequence[int], base: int, key: tuple[int, int], dist: int, params: Sequence[float],
         clip: tuple[float, float] | None, threads: int = 1) -> None:
    """Write the stream's values of every element of a buffer at ``address``: float32 (``kind``
    :data:`FLOAT32`), float64 (:data:`FLOAT64`), or float32 rounded to odd (:data:`FLOAT32_ODD`:
    cast to float16 or bfloat16 with round-to-nearest-even, it gives the float64 value correctly
    rounded, as NumPy's direct cast does). The elements are visited row-major over axes ``dims``;
    element (i_0, i_1, ...) is written at ``Σ_d i_d·out_strides[d]`` (elements) and has canonical
    index ``base + Σ_d contrib_d[i_d]``, the int64 tables contrib_0, contrib_1, ... laid end to end
    at ``contrib_address``. Pass the axes in canonical order (largest canonical stride first) so
    neighbouring elements share Philox blocks. ``dist`` and ``params`` as
    :func:`initscale.streams.kernel_params`; ``clip`` the bounds that hold in the stored dtype."""
    n = 1
    for size in dims:
        n *= size
    if n == 0:
        return
    if not 1 <= len(dims) <= MAX_AXES:
        raise ValueError(f"The stream kernel takes 1 to {MAX_AXES} axes; received {len(dims)}.")
    dims_c = (ctypes.c_int64 * len(dims))(*dims)
    strides_c = (ctypes.c_int64 * len(dims))(*out_strides)
    contrib_c = ctypes.cast(contrib_address, ctypes.POINTER(ctypes.c_int64))
    prm = (ctypes.c_double * 8)(*(list(params) + [0.0] * (8 - len(params))))  # up to 7: FAR's
    lo, hi = clip if clip is not None else (0.0, 0.0)
    fn = lib.initscale_stream_fill

    def run(start: int, stop: int) -> None:
        fn(address, kind, start, stop, len(dims), dims_c, contrib_c, strides_c, base, key[0], key[1], dist, prm,
           int(clip is not None), lo, hi)

    parts = max(1, min(threads, n // _MIN_CHUNK))
    if parts == 1:
        run(0, n)
        return
    bounds = [n * k // parts for k in range(parts + 1)]
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(run, bounds[:-1], bounds[1:]))


def draw(lib: ctypes.CDLL, address: int, kind: int, shape: Sequence[int], out_strides: Sequence[int],
         strides: Sequence[int], dist: Any, key: tuple[int, int], clip: tuple[float, float] | None, threads: int = 1,
         offsets: Sequence[int] | None = None, gates: tuple[int, Sequence[int]] | None = None) -> None:
    """The stream of ``dist`` for a box of a weight, written at ``address``: ``shape`` the box's
    axes, ``out_strides`` where its elements sit (in elements), ``strides`` the canonical strides
    of the weight's axes, ``offsets`` the box's start in the weight (None: the whole weight),
    ``gates`` the stacked-gate order (:func:`initscale.streams.gate_index`). Builds the per-axis
    tables of canonical offsets and visits the axes in canonical order, so that neighbouring
    elements share their Philox block; see :func:`fill`."""
    import numpy as np

    from initscale.streams import kernel_params

    code, params = kernel_params(dist)
    dims = tuple(shape) or (1,)  # a scalar weight: one element, canonical index 0
    canon = tuple(strides) or (0,)
    places = tuple(out_strides) or (1,)
    tables = []
    for axis, (n, stride) in enumerate(zip(dims, canon, strict=True)):
        if gates is not None and axis == gates[0]:
            index = np.asarray(gates[1], dtype=np.int64)
        else:
            start = 0 if offsets is None else offsets[axis]
            index = np.arange(start, start + n, dtype=np.int64)
        tables.append(index * stride)
    order = sorted(range(len(dims)), key=lambda a: -canon[a])
    contrib = np.ascontiguousarray(np.concatenate([tables[a] for a in order]), dtype=np.int64)
    fill(lib, address, kind, [dims[a] for a in order], contrib.ctypes.data, [places[a] for a in order], 0, key,
         code, params, clip, threads)
