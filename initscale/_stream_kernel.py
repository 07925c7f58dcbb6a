"""A compiled CPU kernel for the portable streams: Philox4x32-10, the float transform and the
layout mapping in one pass over the output, built with the system C compiler on first use.

The stream is defined by :mod:`initscale.streams` (and computed there, in NumPy, as the
reference); this kernel computes the same values element by element: the canonical index of each
output element, its Philox block (reused by the next element when they share it), the bits of its
lane, u = ((x >> 8) | 1)·2⁻²⁴, and the documented transform with Wichura's AS241 Φ⁻¹ — the
reference's own, evaluated in the same order (Horner, no fused multiply-add) — then the clip to
the stored dtype's bounds and one rounding to float32 (none for float64; for float16 and
bfloat16, float32 rounded to odd, which the final cast turns into one correct rounding).

It needs a C compiler (``$CC``, else ``cc``) once: the library is cached under
``$INITSCALE_CACHE`` (else ``$XDG_CACHE_HOME/initscale``, else ``~/.cache/initscale``), keyed by
the source's hash. Without a compiler, or with ``INITSCALE_STREAM_KERNEL=0``, :func:`load` returns
None and the adapters use their framework ops instead (same values, slower). The call releases
the GIL, so :func:`fill` runs chunks of the output on several threads. It walks at most
:data:`MAX_AXES` axes; the adapters draw weights of more with their array ops (same values).

Only the standard library is imported here (ctypes); callers pass raw CPU addresses.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from initscale.normal_math import _A, _B, _C, _D, _E, _F

# dist codes (the kernel's switch) and their parameter vectors, built by initscale.streams.kernel_params
CONSTANT, UNIFORM, NORMAL, TRUNCATED = 0, 1, 2, 3
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
    return f"static const double {name}[8] = {{{', '.join(repr(float(v)) for v in values)}}};"


SOURCE = "\n".join([
    "#include <stdint.h>",
    "#include <string.h>",
    "#include <math.h>",
    f"#define MAX_AXES {MAX_AXES}",
    _array("A", _A), _array("B", _B), _array("C", _C), _array("D", _D), _array("E", _E), _array("F", _F),
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
   high - low); normal (mean, std); truncated (pa, pb - pa, zlo, zhi, loc, scale). */
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
_lock = threading.Lock()
_state: dict[str, ctypes.CDLL | None] = {}


def _cache_dir() -> Path:
    root = os.environ.get("INITSCALE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "initscale")
    return Path(root)


def _build() -> ctypes.CDLL | None:
    tag = hashlib.sha256((SOURCE + " ".join(_FLAGS) + platform.machine()).encode()).hexdigest()[:16]
    suffix = ".dll" if sys.platform == "win32" else ".so"
    target = _cache_dir() / f"stream-kernel-{tag}-{sys.platform}{suffix}"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src = Path(tmp) / "stream.c"
                src.write_text(SOURCE, encoding="utf-8")
                built = Path(tmp) / f"stream{suffix}"
                compiler = os.environ.get("CC", "cc")
                subprocess.run([compiler, *_FLAGS, str(src), "-o", str(built), "-lm"], check=True,
                               capture_output=True, timeout=120)
                os.replace(built, target)  # atomic: concurrent builders never see half a file
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        lib = ctypes.CDLL(str(target))
    except OSError:
        return None
    fn = lib.initscale_stream_fill
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                   ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64),
                   ctypes.c_int64,
                   ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int, ctypes.POINTER(ctypes.c_double),
                   ctypes.c_int, ctypes.c_double, ctypes.c_double]
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None where it cannot be (no compiler) or is
    switched off (``INITSCALE_STREAM_KERNEL=0``)."""
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
    prm = (ctypes.c_double * 6)(*(list(params) + [0.0] * (6 - len(params))))
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
