"""A compiled CPU kernel for the portable streams: Philox4x32-10, the float transform and the
layout mapping in one pass over the output, built with the system C compiler on first use.

The stream is defined by :mod:`initscale.streams` (and computed there, in NumPy, as the
reference); this kernel computes the same values element by element: the canonical index of each
output element, its Philox block (reused by the next element when they share it), the bits of its
lane, u = ((x >> 8) | 1)·2⁻²⁴, and the documented transform with Wichura's AS241 Φ⁻¹ — the
reference's own, evaluated in the same order (Horner, no fused multiply-add) — then the clip to
the stored dtype's bounds and one rounding to float32 (none for float64; for float16 and
bfloat16, float32 rounded to odd, which the final cast turns into one correct rounding).

The same library holds the torch adapter's sampler, :func:`sample` (``initscale_sample_fill``):
not a portable stream but iid draws keyed by 128 bits from a torch generator, Philox4x32-10 on
64 elements at a time in lock-step loops the compiler vectorizes (compiled for AVX2 and the
baseline, chosen per CPU when loaded), float32 transforms (uniform on a 2²⁴-point grid,
Box–Muller normals, an inverse-CDF truncated normal from the small-probability side), each value
stored once as float32, bfloat16 or float16 after the clip to the stored dtype's bounds. Element
i depends only on the key and i, so :func:`sample` splits the output over threads freely.

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
# output formats
FLOAT32, FLOAT64, FLOAT32_ODD = 0, 1, 2
# the most axes the kernel walks (its index arrays' size); the adapters use their framework ops for more
MAX_AXES = 16


def output_format(dtype: str) -> int:
    """The buffer the kernel writes for a weight of ``dtype`` ("float32", "torch.bfloat16", ...):
    float32 and float64 as themselves, a narrower float as float32 rounded to odd, for the one
    final cast."""
    name = dtype.rsplit(".", 1)[-1]
    return {"float32": FLOAT32, "float64": FLOAT64}.get(name, FLOAT32_ODD)


def _array(name: str, values: Sequence[float]) -> str:
    return f"static const double {name}[{len(values)}] = {{{', '.join(repr(float(v)) for v in values)}}};"


SOURCE = "\n".join(
    [
        "#include <stdint.h>",
        "#include <string.h>",
        "#include <math.h>",
        f"#define MAX_AXES {MAX_AXES}",
        _array("A", _A),
        _array("B", _B),
        _array("C", _C),
        _array("D", _D),
        _array("E", _E),
        _array("F", _F),
        _array("MILLS", _MILLS),
        f"#define MILLS_TERMS {len(_MILLS)}",
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
   base + sum_d contrib[offset_d + i_d]; out is float32 (code 0), float64
   (code 1) or float32 rounded to odd (code 2, for a float16 or bfloat16 weight). prm: constant (value); uniform (low,
   high - low); normal (mean, std); truncated (pa, pb - pa, zlo, zhi, loc, scale); far (a, kept, zlo, zhi,
   loc, scale, log S(a)). */
void initscale_stream_fill(void *out, int out_format, int64_t start, int64_t stop, int ndim,
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
            if (out_format == 1) for (int k = 0; k < m; ++k) ((double *)out)[at + k * step] = v[k];
            else if (out_format == 2) for (int k = 0; k < m; ++k) ((float *)out)[at + k * step] = to_odd(v[k]);
            else for (int k = 0; k < m; ++k) ((float *)out)[at + k * step] = (float)v[k];
            i += m;
            j += m;
        }
        idx[last] = 0;
        for (int d = last - 1; d >= 0; --d) { if (++idx[d] < dims[d]) break; idx[d] = 0; }
    }
}
""",
        r"""
/* ---- The sampler (initscale_sample_fill): draws seeded from a torch generator, not the portable
   streams. Batch b of a call (elements 64b .. 64b + 63) takes the Philox4x32-10 blocks with
   counters (16b + j, n0, n1), j = 0..15, and key (k0, k1); element 64b + e reads word e / 16 of
   block 16b + e % 16. A value depends on (key, nonce, index) only, never on how the output is
   split between threads. Every loop runs over a whole batch in lock-step and has no branch, so
   the compiler vectorizes it (Philox by AVX2 intrinsics: compilers leave its widening products
   scalar). The batch loop is built twice, for AVX2 and for the baseline, and the entry point picks
   one for the CPU at run time (an AVX-512F build measured 2x slower than AVX2 on the AMD EPYC of
   the benchmarks). No fused multiply-add is formed (-ffp-contract=off) and every operation is IEEE
   single precision, so both builds give the same bits. */
#define SB 64
#define SBLK 16
#define INL static inline __attribute__((always_inline))
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define AVX2_PATH 1
#endif

INL void philox_batch(uint64_t block0, uint32_t n0, uint32_t n1, uint32_t k0, uint32_t k1, uint32_t *w) {
    uint32_t c0[SBLK], c1[SBLK], c2[SBLK], c3[SBLK];
    for (int j = 0; j < SBLK; ++j) {
        uint64_t b = block0 + (uint64_t)j;
        c0[j] = (uint32_t)b; c1[j] = (uint32_t)(b >> 32); c2[j] = n0; c3[j] = n1;
    }
    for (int r = 0; r < 10; ++r) {
        uint32_t a0 = k0 + (uint32_t)r * 0x9E3779B9u, a1 = k1 + (uint32_t)r * 0xBB67AE85u;
        for (int j = 0; j < SBLK; ++j) {
            uint64_t p0 = (uint64_t)0xD2511F53u * c0[j], p1 = (uint64_t)0xCD9E8D57u * c2[j];
            uint32_t x0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ a0, x2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ a1;
            c1[j] = (uint32_t)p1; c3[j] = (uint32_t)p0; c0[j] = x0; c2[j] = x2;
        }
    }
    for (int j = 0; j < SBLK; ++j) {
        w[j] = c0[j]; w[SBLK + j] = c1[j]; w[2 * SBLK + j] = c2[j]; w[3 * SBLK + j] = c3[j];
    }
}

#ifdef AVX2_PATH
/* The same 16 blocks, 8 at a time in AVX2 registers (compilers do not vectorize the widening
   32x32 -> 64-bit products of the portable form): the products of the even and the odd lanes by
   _mm256_mul_epu32, their high and low words blended back into lane order. */
__attribute__((target("avx2"), always_inline)) static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi,
                                                                           __m256i *lo) {
    __m256i pe = _mm256_mul_epu32(a, m), po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
}

__attribute__((target("avx2"))) static inline void philox_batch_avx2(uint64_t block0, uint32_t n0, uint32_t n1,
                                                                      uint32_t k0, uint32_t k1, uint32_t *w) {
    const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u), m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
    for (int h = 0; h < SBLK; h += 8) {
        uint32_t lo[8], hi[8];
        for (int j = 0; j < 8; ++j) {
            uint64_t b = block0 + (uint64_t)(h + j);
            lo[j] = (uint32_t)b;
            hi[j] = (uint32_t)(b >> 32);
        }
        __m256i c0 = _mm256_loadu_si256((const __m256i *)lo), c1 = _mm256_loadu_si256((const __m256i *)hi);
        __m256i c2 = _mm256_set1_epi32((int)n0), c3 = _mm256_set1_epi32((int)n1);
        for (int r = 0; r < 10; ++r) {
            __m256i a0 = _mm256_set1_epi32((int)(k0 + (uint32_t)r * 0x9E3779B9u));
            __m256i a1 = _mm256_set1_epi32((int)(k1 + (uint32_t)r * 0xBB67AE85u));
            __m256i h0, l0, h1, l1;
            mulhilo8(c0, m0, &h0, &l0);
            mulhilo8(c2, m1, &h1, &l1);
            c0 = _mm256_xor_si256(_mm256_xor_si256(h1, c1), a0);
            c2 = _mm256_xor_si256(_mm256_xor_si256(h0, c3), a1);
            c1 = l1;
            c3 = l0;
        }
        _mm256_storeu_si256((__m256i *)(w + h), c0);
        _mm256_storeu_si256((__m256i *)(w + SBLK + h), c1);
        _mm256_storeu_si256((__m256i *)(w + 2 * SBLK + h), c2);
        _mm256_storeu_si256((__m256i *)(w + 3 * SBLK + h), c3);
    }
}
#endif

INL uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
INL float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ln y for a normal float32 y > 0: y = m·2^e, m in [√½, √2), ln m = 2·atanh(s), s = (m − 1)/(m + 1),
   |s| <= 0.1716, by its series to s⁹ (the next term is below 3e-9 relative); e·ln 2 in two parts. */
INL float ln_f(float y) {
    uint32_t bits = f2u(y);
    int32_t e = (int32_t)(bits >> 23) - 127;
    float m = u2f((bits & 0x7FFFFFu) | 0x3F800000u);
    int big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e = big ? e + 1 : e;
    float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    float lnm = 2.0f * t * (1.0f + t2 * (0.333333333f + t2 * (0.2f + t2 * (0.142857143f + t2 * 0.111111111f))));
    return (float)e * 0.693145752f + ((float)e * 1.42860677e-06f + lnm);
}

/* U(mid − half, mid + half): s = (2k + 1)·2⁻²⁴, k the word's top 24 bits read as a signed number
   (an odd multiple of 2⁻²⁴ in (−1, 1), exact in float32, each of the 2²⁴ points with probability
   2⁻²⁴), v = mid + half·s. */
INL void uniform_batch(const uint32_t *w, float *v, float mid, float half) {
    for (int j = 0; j < SB; ++j) {
        int32_t q = (int32_t)((w[j] & 0xFFFFFF00u) | 0x80u);
        v[j] = mid + half * ((float)q * 0x1p-31f);
    }
}

/* N(mean, std²) by Box–Muller on the pairs (w[p], w[p + 32]): u = (⌊w/2⌋ + ½)·2⁻³¹ in float32
   (in [2⁻³², 1]), r = √(−2 ln u) <= 6.66 (the mass beyond is 2.7e-11); the angle φ = x + q·π/2,
   q the top 2 bits of the second word and x = (π/2)·((2k + 1)·2⁻²⁵ − ½), k its next 24 bits
   (|x| < π/4); z = r·cos φ and r·sin φ. sin, cos on |x| < π/4 by Taylor to x⁹ and x¹⁰
   (remainders below 2e-9). */
INL void normal_batch(const uint32_t *w, float *v, float mean, float std) {
    const int H = SB / 2;
    float r[SB / 2], c[SB / 2], s[SB / 2];
    for (int p = 0; p < H; ++p) {
        float u = ((float)(int32_t)(w[p] >> 1) + 0.5f) * 0x1p-31f;
        r[p] = sqrtf(-2.0f * ln_f(u));
    }
    for (int p = 0; p < H; ++p) {
        uint32_t b = w[p + H];
        int32_t k = (int32_t)((b >> 6) & 0xFFFFFFu);
        float x = (float)(2 * k + 1 - (1 << 24)) * 0x1p-25f * 1.57079633f;
        float x2 = x * x;
        float sn = x * (1.0f + x2 * (-1.66666667e-1f + x2 * (8.33333333e-3f + x2 * (-1.98412698e-4f
                                                                                 + x2 * 2.75573192e-6f))));
        float cs = 1.0f + x2 * (-0.5f + x2 * (4.16666667e-2f + x2 * (-1.38888889e-3f + x2 * (2.48015873e-5f
                                                                                        - x2 * 2.75573192e-7f))));
        uint32_t q = b >> 30, swap = 0u - (q & 1u);                 /* quadrant: select, flip signs */
        uint32_t cc = (f2u(sn) & swap) | (f2u(cs) & ~swap), ss = (f2u(cs) & swap) | (f2u(sn) & ~swap);
        c[p] = u2f(cc ^ ((((q + 1u) >> 1) & 1u) << 31));              /* q = 1, 2: -cos part */
        s[p] = u2f(ss ^ ((q >> 1) << 31));                            /* q = 2, 3: -sin part */
    }
    for (int p = 0; p < H; ++p) { v[p] = mean + std * (r[p] * c[p]); v[p + H] = mean + std * (r[p] * s[p]); }
}

/* N(loc, sigma²) truncated to [za, zb] sigmas (an ordinary interval: |za|, |zb| <= 4, mass >= 1e-3,
   initscale.normal_math.truncated_plan's "erf" case) by inverse CDF in float32, from the side where
   the probability is small: u = (2k + 1)·2⁻²⁴ (k the word's top 23 bits; 1 − u exact too),
   p = Φ(za) + u·m and its complement q = Φ(−zb) + (1 − u)·m (m the mass), t = min(p, q) <= ~½,
   z = ∓√2·erfinv(1 − 2t) with Giles's single-precision erfinv (2010; relative error < 4e-7),
   whose w = −ln(1 − x²) is −ln(4t(1 − t)) here: no cancellation in either tail. prm: Φ(za), m,
   Φ(−zb), za, zb, loc, sigma. */
INL void truncated_batch(const uint32_t *w, float *v, const float *f) {
    const float pa = f[0], m = f[1], pbc = f[2], za = f[3], zb = f[4], loc = f[5], sigma = f[6];
    float ww[SB], x[SB], e[SB];
    int lower[SB], tail = 0;
    for (int j = 0; j < SB; ++j) {
        float u = (float)(int32_t)(((w[j] >> 9) << 1) | 1u) * 0x1p-24f;
        float p = pa + u * m, q = pbc + (1.0f - u) * m;
        lower[j] = p <= q;
        float t = lower[j] ? p : q;
        ww[j] = -ln_f((4.0f * t) * (1.0f - t));
        x[j] = (1.0f - 2.0f * t) * 1.41421356f;
    }
    for (int j = 0; j < SB; ++j) {  /* the central polynomial (w < 5: |z| < 2.9) */
        float c = ww[j] - 2.5f;
        float pc = 2.81022636e-08f;
        pc = 3.43273939e-07f + pc * c; pc = -3.5233877e-06f + pc * c; pc = -4.39150654e-06f + pc * c;
        pc = 0.00021858087f + pc * c;  pc = -0.00125372503f + pc * c; pc = -0.00417768164f + pc * c;
        pc = 0.246640727f + pc * c;    pc = 1.50140941f + pc * c;
        e[j] = pc;
        tail |= ww[j] >= 5.0f;
    }
    if (tail)  /* some value beyond 2.9 sigma in this batch: the tail polynomial where w >= 5 */
        for (int j = 0; j < SB; ++j) {
            float d = sqrtf(ww[j]) - 3.0f;
            float pt = -0.000200214257f;
            pt = 0.000100950558f + pt * d; pt = 0.00134934322f + pt * d; pt = -0.00367342844f + pt * d;
            pt = 0.00573950773f + pt * d;  pt = -0.0076224613f + pt * d; pt = 0.00943887047f + pt * d;
            pt = 1.00167406f + pt * d;     pt = 2.83297682f + pt * d;
            e[j] = ww[j] < 5.0f ? e[j] : pt;
        }
    for (int j = 0; j < SB; ++j) {
        float z = e[j] * x[j];
        z = lower[j] ? -z : z;
        z = z < za ? za : z;
        z = z > zb ? zb : z;
        v[j] = loc + sigma * z;
    }
}

/* float32 -> bfloat16 and float16 bits, round to nearest even (inputs finite and in range). */
INL uint16_t to_bf16(float f) {
    uint32_t x = f2u(f);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

INL uint16_t to_f16(float f) {
    uint32_t x = f2u(f), sign = x & 0x80000000u;
    x ^= sign;
    uint32_t sub = f2u(u2f(x) + 0.5f) - 0x3F000000u;          /* below 2^-14: the subnormal grid */
    uint32_t nrm = (x + 0xC8000FFFu + ((x >> 13) & 1u)) >> 13;  /* rebias (15 - 127) << 23, round */
    uint32_t o = x < 0x38800000u ? sub : (x >= 0x477FF000u ? 0x7C00u : nrm);
    return (uint16_t)(o | (sign >> 16));
}

INL void sample_range(void *out, int out_format, int64_t start, int64_t stop, uint32_t k0, uint32_t k1, uint32_t n0,
                      uint32_t n1, int dist, const double *prm, int clip, double lo, double hi, int avx2) {
    uint32_t w[SB];
    float v[SB], f[8];
    for (int j = 0; j < 8; ++j) f[j] = (float)prm[j];
    const float flo = (float)lo, fhi = (float)hi;
    for (int64_t i = start; i < stop; i += SB) {
        int m = stop - i < SB ? (int)(stop - i) : SB;
#ifdef AVX2_PATH
        if (avx2) philox_batch_avx2((uint64_t)i / 4u, n0, n1, k0, k1, w);
        else
#endif
        philox_batch((uint64_t)i / 4u, n0, n1, k0, k1, w);
        if (dist == 1) uniform_batch(w, v, f[0], f[1]);
        else if (dist == 2) normal_batch(w, v, f[0], f[1]);
        else truncated_batch(w, v, f);
        if (clip)
            for (int j = 0; j < SB; ++j) { float x = v[j] < flo ? flo : v[j]; v[j] = x > fhi ? fhi : x; }
        if (out_format == 0) memcpy((float *)out + i, v, (size_t)m * 4);
        else if (out_format == 1) {
            uint16_t o[SB];
            for (int j = 0; j < SB; ++j) o[j] = to_bf16(v[j]);
            memcpy((uint16_t *)out + i, o, (size_t)m * 2);
        } else {
            uint16_t o[SB];
            for (int j = 0; j < SB; ++j) o[j] = to_f16(v[j]);
            memcpy((uint16_t *)out + i, o, (size_t)m * 2);
        }
    }
}

/* The portable build of the sampler (any CPU); the entry point below uses it where AVX2 is missing.
   Both give the same bits (the same integer words, the same IEEE single-precision operations). */
void initscale_sample_fill_baseline(void *out, int out_format, int64_t start, int64_t stop, uint32_t k0, uint32_t k1,
                                    uint32_t n0, uint32_t n1, int dist, const double *prm, int clip, double lo,
                                    double hi) {
    sample_range(out, out_format, start, stop, k0, k1, n0, n1, dist, prm, clip, lo, hi, 0);
}

#ifdef AVX2_PATH
__attribute__((target("avx2"))) static void sample_avx2(void *out, int out_format, int64_t start, int64_t stop,
                                                        uint32_t k0, uint32_t k1, uint32_t n0, uint32_t n1, int dist,
                                                        const double *prm, int clip, double lo, double hi) {
    sample_range(out, out_format, start, stop, k0, k1, n0, n1, dist, prm, clip, lo, hi, 1);
}
#endif

/* Elements [start, stop) (start a multiple of 64) of a flat output of out_format 0 float32, 1 bfloat16,
   2 float16, each rounded once from its float32 value. dist 1: uniform, prm (mid, half); 2: normal
   (mean, std); 3: truncated normal, prm as truncated_batch's. clip: clamp to [lo, hi] (bounds that
   hold in the stored dtype) before the one rounding, so the stored value stays inside them. The
   AVX2 build where the CPU has it (checked at run time), else the baseline. */
void initscale_sample_fill(void *out, int out_format, int64_t start, int64_t stop, uint32_t k0, uint32_t k1,
                           uint32_t n0, uint32_t n1, int dist, const double *prm, int clip, double lo,
                           double hi) {
#ifdef AVX2_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        sample_avx2(out, out_format, start, stop, k0, k1, n0, n1, dist, prm, clip, lo, hi);
        return;
    }
#endif
    initscale_sample_fill_baseline(out, out_format, start, stop, k0, k1, n0, n1, dist, prm, clip, lo, hi);
}
""",
    ]
)

_FLAGS = [
    "-O3",
    "-std=c99",
    "-fPIC",
    "-shared",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fno-math-errno",
    "-fno-trapping-math",
]
_SYMBOL = "initscale_stream_fill"
_SAMPLER = "initscale_sample_fill"
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
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "initscale"
    )
    return Path(root)


def _uid() -> int | None:
    """The user a trusted cache entry belongs to: the effective user id (None where the system has
    none, Windows: no owner check there)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def _tag() -> str:
    """The build inputs' hash: source (which names the instruction sets the sampler is compiled
    for: every clone is in the one library and the loader picks one for the CPU it runs on, so
    the library does not depend on the CPU), flags and machine."""
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
        raise _Refused(
            f"the cache folder {folder} {problem} (make it yours with mode 700, or set INITSCALE_CACHE "
            "to a folder of yours)"
        )
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
    if (
        not newline
        or len(fields) != 4
        or fields[:2] != [_MAGIC, f"tag={_tag()}"]
        or not fields[2].startswith("size=")
        or not fields[2][5:].isdigit()
        or not fields[3].startswith("sha256=")
    ):
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
        view = view[os.write(fd, view) :]


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
            subprocess.run(
                [compiler, *_FLAGS, str(src), "-o", str(built), "-lm"], check=True, capture_output=True, timeout=120
            )
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
                    fcntl.fcntl(
                        fd,
                        fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
                    )
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
    try:
        sampler = getattr(lib, _SAMPLER)
    except AttributeError:
        raise _Refused(f"has no {_SAMPLER}") from None
    sampler.restype = None
    sampler.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_double),
        ctypes.c_int,
        ctypes.c_double,
        ctypes.c_double,
    ]
    fn.restype = None
    fn.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int64),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_int64,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_double),
        ctypes.c_int,
        ctypes.c_double,
        ctypes.c_double,
    ]
    return lib


def _warn(problems: list[str], outcome: str) -> None:
    warnings.warn(
        f"initscale: {'; '.join(problems)}; {outcome} (INITSCALE_STREAM_KERNEL=0 switches the kernel off).",
        RuntimeWarning,
        stacklevel=4,
    )


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
        problems.append(
            f"the cache folder {path.parent} cannot be used ({err}); the kernel is built for this process only"
        )
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


def fill(
    lib: ctypes.CDLL,
    address: int,
    out_format: int,
    dims: Sequence[int],
    contrib_address: int,
    out_strides: Sequence[int],
    base: int,
    key: tuple[int, int],
    dist: int,
    params: Sequence[float],
    clip: tuple[float, float] | None,
    threads: int = 1,
) -> None:
    """Write the stream's values of every element of a buffer at ``address``: float32 (``out_format``
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
        fn(
            address,
            out_format,
            start,
            stop,
            len(dims),
            dims_c,
            contrib_c,
            strides_c,
            base,
            key[0],
            key[1],
            dist,
            prm,
            int(clip is not None),
            lo,
            hi,
        )

    parts = max(1, min(threads, n // _MIN_CHUNK))
    if parts == 1:
        run(0, n)
        return
    bounds = [n * k // parts for k in range(parts + 1)]
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(run, bounds[:-1], bounds[1:]))


def draw(
    lib: ctypes.CDLL,
    address: int,
    out_format: int,
    shape: Sequence[int],
    out_strides: Sequence[int],
    strides: Sequence[int],
    dist: Any,
    key: tuple[int, int],
    clip: tuple[float, float] | None,
    threads: int = 1,
    offsets: Sequence[int] | None = None,
    gates: tuple[int, Sequence[int]] | None = None,
) -> None:
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
    fill(
        lib,
        address,
        out_format,
        [dims[a] for a in order],
        contrib.ctypes.data,
        [places[a] for a in order],
        0,
        key,
        code,
        params,
        clip,
        threads,
    )


# --- the sampler ---------------------------------------------------------------------------------

# the sampler's output formats: the stored dtype itself, written once
SAMPLE_FORMATS = {"float32": 0, "bfloat16": 1, "float16": 2}
SAMPLE_BATCH = 64  # elements per Philox batch (16 blocks): threads split the output at multiples of it
_pool: list[tuple[ThreadPoolExecutor, int, int]] = []  # the process's pool, its size and the pid that made it


# |z| of the sampler's normals is at most √(−2 ln 2⁻³²) = 6.6604 (the mass beyond is 2.7e-11)
BOX_MULLER_REACH = 6.7


def sample_params(dist: Any) -> tuple[int, tuple[float, ...]] | None:
    """The sampler's (dist code, parameters) for ``dist``: :data:`UNIFORM` (mid, half-width),
    :data:`NORMAL` (mean, std), :data:`TRUNCATED` (Φ(α), mass, Φ(−β), α, β, loc, sigma) for an
    ordinary interval (:func:`initscale.normal_math.truncated_plan`'s ``"erf"`` case: |α|, |β| <= 4
    and mass >= 1e-3); a truncation to an interval wider than ±:data:`BOX_MULLER_REACH` sigmas
    (which cuts only the 2.7e-11 of mass the normal sampler never reaches anyway) as the normal of
    loc and sigma, clipped; None for anything else (far-tail, one-sided and narrow truncations,
    which the callers draw with their framework ops)."""
    from initscale.distributions import NormalDist, TruncatedNormalDist, UniformDist
    from initscale.normal_math import normal_cdf, truncated_mass, truncated_plan

    if isinstance(dist, UniformDist):
        return UNIFORM, ((dist.low + dist.high) / 2.0, (dist.high - dist.low) / 2.0)
    if isinstance(dist, NormalDist):
        return NORMAL, (dist.mean, dist.std)
    if isinstance(dist, TruncatedNormalDist):
        a, b = dist.standard_bounds
        if a <= -BOX_MULLER_REACH and b >= BOX_MULLER_REACH:  # e.g. torch's trunc_normal_(std=0.02): ±100σ
            return NORMAL, (dist.loc, dist.sigma)  # the normal sampler never leaves ±6.66σ: the same law
        if truncated_plan(a, b, "float32").method != "erf":
            return None
        return TRUNCATED, (normal_cdf(a), truncated_mass(a, b), normal_cdf(-b), a, b, dist.loc, dist.sigma)
    return None


def _executor(workers: int) -> ThreadPoolExecutor:
    """One pool for the process, grown to ``workers`` threads when more are asked for, and made
    afresh in a forked child (whose copy of the pool has no threads: work sent to it would wait
    forever)."""
    with _lock:
        if not _pool or _pool[0][1] < workers or _pool[0][2] != os.getpid():
            old = [pool for pool, _, pid in _pool if pid == os.getpid()]
            _pool[:] = [(ThreadPoolExecutor(workers, thread_name_prefix="initscale-sampler"), workers, os.getpid())]
            for pool in old:
                pool.shutdown(wait=False)
        return _pool[0][0]


def sample(
    lib: ctypes.CDLL,
    address: int,
    out_format: int,
    n: int,
    key: Sequence[int],
    dist: int,
    params: Sequence[float],
    clip: tuple[float, float] | None,
    threads: int = 1,
) -> None:
    """Fill ``n`` contiguous elements at ``address`` with draws of the sampler (not the portable
    streams): ``out_format`` from :data:`SAMPLE_FORMATS` (the stored dtype, written once); ``key`` four
    32-bit words (Philox key k0, k1 and counter words n0, n1), drawn from the caller's generator;
    ``dist`` and ``params`` from :func:`sample_params`; ``clip`` the bounds that hold in the stored
    dtype, applied before the one rounding.

    Element i is computed from (key, i) alone: batch i // 64 takes Philox4x32-10 blocks 16·(i // 64)
    to 16·(i // 64) + 15. The output is split between ``threads`` threads (this one and a pool's)
    at multiples of 64 elements, so the values are the same whatever the thread count. The call
    releases the GIL.

    Accuracy (float32 arithmetic, see the C source): uniforms are exact on the grid
    mid + half·(2k + 1)·2⁻²⁴ (one rounding of mid + half·s); normals by Box–Muller with ln, sin and
    cos to about 1 ulp of float32 (series remainders below 3e-9), |z| <= 6.66 (the mass beyond is
    2.7e-11); truncated normals by a float32 inverse CDF from the side where the probability is
    small (Giles's erfinv, relative error below 4e-7)."""
    if n <= 0:
        return
    fn = getattr(lib, _SAMPLER)
    prm = (ctypes.c_double * 8)(*(list(params) + [0.0] * (8 - len(params))))
    lo, hi = clip if clip is not None else (0.0, 0.0)
    k0, k1, n0, n1 = (int(k) & 0xFFFFFFFF for k in key)

    def run(start: int, stop: int) -> None:
        fn(address, out_format, start, stop, k0, k1, n0, n1, dist, prm, int(clip is not None), lo, hi)

    parts = max(1, min(threads, n // _MIN_CHUNK))
    if parts == 1:
        run(0, n)
        return
    batches = -(-n // SAMPLE_BATCH)
    bounds = [min(n, batches * k // parts * SAMPLE_BATCH) for k in range(parts + 1)]
    futures = [_executor(parts - 1).submit(run, bounds[k], bounds[k + 1]) for k in range(1, parts)]
    try:
        run(bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()
