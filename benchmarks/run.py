"""initscale's speed as ratios against the native equivalent, measured in the same run.

    python benchmarks/run.py [--quick] [--json FILE] [--markdown FILE]

Each case times initscale and the framework's own function in alternation on the same tensor,
same dtype, same device, and reports each side's median and the median of the per-round ratios
(initscale / native: below 1 is faster); large torch fills (fp32 and bf16) also give initscale's
GB/s and its share of ``fill_``'s on the same tensor (the memory limit); peak extra memory is
measured in fresh processes.
Frameworks that are not installed are skipped. ``--quick`` (4M elements, 5 rounds) finishes in
about 90 s on 2 CPU cores; the full run uses 16M fp32 elements on CPU and 2^30 on CUDA when a
GPU is present.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Case:
    name: str
    device: str
    initscale_ms: float
    native_ms: float
    native: str
    note: str = ""
    unit: str = "ms"
    paired_ratio: float | None = None
    gbps: float | None = None  # bytes written per second by initscale, for large fills
    fill_share: float | None = None  # initscale's speed as a share of fill_'s on the same tensor

    @property
    def ratio(self) -> float:
        """The median of the per-round ratios where the two were timed in alternation (robust to
        a shared machine's drift); else the ratio of the medians."""
        if self.paired_ratio is not None:
            return self.paired_ratio
        return self.initscale_ms / self.native_ms if self.native_ms else float("nan")


def _compare(name: str, device: str, ours: Callable[[], Any], theirs: Callable[[], Any], native: str,
             repeats: int, sync: Callable[[], None] = lambda: None, note: str = "") -> Case:
    """Time ``ours`` and ``theirs`` in alternation, ``repeats`` rounds after a warm-up of each:
    the medians of each, and the median of the per-round ratios."""
    ours()
    theirs()
    sync()
    mine, native_times = [], []
    for _ in range(repeats):
        for fn, times in ((ours, mine), (theirs, native_times)):
            start = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    ratios = [a / b for a, b in zip(mine, native_times, strict=True) if b > 0]
    return Case(name, device, statistics.median(mine), statistics.median(native_times), native, note,
                paired_ratio=statistics.median(ratios) if ratios else None)


def _torch_cases(n: int, repeats: int) -> list[Case]:
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [case for device in devices for case in _torch_device_cases(device, n, repeats)]


def _torch_device_cases(device: str, n: int, repeats: int) -> list[Case]:
    import torch

    import initscale
    from initscale.adapters import torch as ist

    cases = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    size = n if device == "cpu" else 2**30
    gen = torch.Generator(device=device).manual_seed(0)
    he_n = initscale.presets.get("torch.kaiming_normal")
    he_u = initscale.presets.get("torch.kaiming_uniform")
    he_t = initscale.presets.get("he_normal")
    fill_n, fill_u, fill_t = (ist.initializer(s) for s in (he_n, he_u, he_t))
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.empty(size // 1024, 1024, device=device, dtype=dtype)
        std = he_n.std(initscale.compute_fans(tuple(w.shape), "torch"))
        pairs = [
            ("normal (kaiming_normal)", lambda w=w: fill_n(w, generator=gen),
             lambda w=w: torch.nn.init.kaiming_normal_(w, generator=gen), "nn.init.kaiming_normal_"),
            ("uniform (kaiming_uniform)", lambda w=w: fill_u(w, generator=gen),
             lambda w=w: torch.nn.init.kaiming_uniform_(w, generator=gen), "nn.init.kaiming_uniform_"),
            ("truncated normal (he_normal)", lambda w=w: fill_t(w, generator=gen),
             lambda w=w, std=std: torch.nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std, generator=gen),
             "nn.init.trunc_normal_"),
            ("truncated normal vs normal_", lambda w=w: fill_t(w, generator=gen),
             lambda w=w: w.normal_(generator=gen), "Tensor.normal_ (untruncated)"),
        ]
        if dtype == torch.float32:
            pairs.append(("constant", lambda w=w: ist.init_(w, initscale.Constant(0.5)), lambda w=w: w.fill_(0.5),
                          "Tensor.fill_"))
        # the memory limit: what fill_ writes per second on this tensor, in the same run
        fill_ms = _compare("fill_", device, lambda w=w: w.fill_(0.5), lambda w=w: w.fill_(0.5), "", repeats,
                           sync).initscale_ms
        nbytes = w.numel() * w.element_size()
        kind = "fp32" if dtype == torch.float32 else "bf16"
        for name, ours, theirs, label in pairs:
            case = _compare(f"torch {name}, {size:,} {kind}", device, ours, theirs, label, repeats, sync)
            case.gbps = nbytes / case.initscale_ms / 1e6
            case.fill_share = fill_ms / case.initscale_ms
            cases.append(case)
    square = torch.empty(1024, 1024, device=device)
    ortho = ist.initializer(initscale.Orthogonal())
    cases.append(_compare("torch orthogonal, 1024 × 1024 fp32 (one QR)", device, lambda: ortho(square, generator=gen),
                          lambda: torch.nn.init.orthogonal_(square, generator=gen), "nn.init.orthogonal_",
                          max(3, repeats // 2), sync))
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(200)]).to(device)  # 400 params
    spec = initscale.presets.get("he_normal")

    def loop_trunc() -> None:
        with torch.no_grad():
            for layer in model:
                s = (2.0 / 64) ** 0.5 / 0.8796
                torch.nn.init.trunc_normal_(layer.weight, std=s, a=-2 * s, b=2 * s)
                torch.nn.init.zeros_(layer.bias)

    def loop_kaiming() -> None:
        with torch.no_grad():
            for layer in model:
                torch.nn.init.kaiming_normal_(layer.weight)
                torch.nn.init.zeros_(layer.bias)

    def ours() -> None:
        ist.reinit_(model, spec, generator=gen)

    loops = ((loop_trunc, "loop of trunc_normal_ + zeros_"), (loop_kaiming, "loop of kaiming_normal_ + zeros_"))
    for loop, label in loops:
        cases.append(_compare("torch reinit_ of 400 small params (200 × Linear(64, 64))", device, ours, loop, label,
                              repeats, sync))
    return cases


def _jax_cases(n: int, repeats: int) -> list[Case]:
    import jax

    import initscale
    from initscale.adapters import jax as isj

    shape = (n // 1024, 1024)
    key = jax.random.key(0)
    cases = []
    for preset, native in (("jax.he_normal", jax.nn.initializers.he_normal()),
                           ("jax.glorot_uniform", jax.nn.initializers.glorot_uniform())):
        mine = isj.initializer(initscale.presets.get(preset))
        ours = jax.jit(lambda k, i=mine: i(k, shape))
        theirs = jax.jit(lambda k, i=native: i(k, shape))
        cases.append(_compare(f"jax {preset} under jit, {n:,} fp32", str(jax.devices()[0].platform),
                              lambda f=ours: f(key).block_until_ready(), lambda f=theirs: f(key).block_until_ready(),
                              f"jax.nn.initializers.{preset.split('.')[1]}", repeats))
    return cases


def _numpy_cases(n: int, repeats: int) -> list[Case]:
    import numpy as np

    import initscale
    from initscale.adapters import numpy as isnp

    shape = (n // 1024, 1024)
    rng = np.random.default_rng(0)
    init = isnp.initializer(initscale.presets.get("numpy.randn_he"))
    return [_compare(f"numpy normal (randn_he), {n:,} fp32", "cpu", lambda: init(shape, rng=rng),
                     lambda: (rng.standard_normal(shape) * 0.04).astype(np.float32), "rng.standard_normal(...) * std",
                     repeats)]


def _stream_cases(n: int, repeats: int) -> list[Case]:
    """Portable streams (issue #8: counter-based Philox, same values in every framework) against
    each framework's own generator for the same distribution (target: within 2x)."""
    import initscale
    from initscale.streams import Stream

    shape = (n // 1024, 1024)
    specs = {"normal": initscale.presets.get("torch.kaiming_normal"),
             "uniform": initscale.presets.get("torch.kaiming_uniform"),
             "truncated normal": initscale.presets.get("he_normal")}
    cases = []
    if importlib.util.find_spec("torch"):
        import torch

        from initscale.adapters import torch as ist

        std = 0.02
        for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            size = n if device == "cpu" else 2**30
            w = torch.empty(size // 1024, 1024, device=device)
            natives = {"normal": (lambda w=w: w.normal_(0.0, std), "Tensor.normal_"),
                       "uniform": (lambda w=w: w.uniform_(-std, std), "Tensor.uniform_"),
                       "truncated normal": (lambda w=w: torch.nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std),
                                            "nn.init.trunc_normal_")}
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            for dist, spec in specs.items():
                fill = ist.initializer(spec, "torch.linear", stream=Stream(0, "w"))
                theirs, label = natives[dist]
                cases.append(_compare(f"torch stream {dist}, {size:,} fp32", device, lambda f=fill, w=w: f(w), theirs,
                                      label, repeats, sync, note="target: within 2x"))
    if importlib.util.find_spec("jax"):
        import jax

        from initscale.adapters import jax as isj

        key = jax.random.key(0)
        natives_jax = {"normal": (jax.random.normal, "jax.random.normal"),
                       "uniform": (jax.random.uniform, "jax.random.uniform"),
                       "truncated normal": (lambda k, s: jax.random.truncated_normal(k, -2.0, 2.0, s),
                                            "jax.random.truncated_normal")}
        for dist, spec in specs.items():
            init = isj.initializer(spec, layout="flax.dense", stream=Stream(0, "w"))
            ours = jax.jit(lambda k, i=init: i(k, shape[::-1]))
            native, label = natives_jax[dist]
            theirs = jax.jit(lambda k, g=native: g(k, shape))
            cases.append(_compare(f"jax stream {dist} under jit, {n:,} fp32", str(jax.devices()[0].platform),
                                  lambda f=ours: f(key).block_until_ready(),
                                  lambda f=theirs: f(key).block_until_ready(), label, repeats,
                                  note="target: within 2x"))
    import numpy as np

    from initscale.adapters import numpy as isnp

    rng = np.random.default_rng(0)
    natives_np = {"normal": (lambda: rng.standard_normal(shape, dtype=np.float32), "Generator.standard_normal"),
                  "uniform": (lambda: rng.random(shape, dtype=np.float32), "Generator.random")}
    for dist, (theirs, label) in natives_np.items():
        init = isnp.initializer(specs[dist], "torch.linear", stream=Stream(0, "w"))
        cases.append(_compare(f"numpy stream {dist}, {n:,} fp32", "cpu", lambda i=init: i(shape), theirs, label,
                              repeats, note="the compiled kernel (float64: the reference); target: within 2x"))
    return cases


def _keras_stream_cases(n: int, repeats: int) -> list[Case]:
    """Keras portable streams on this process's backend (``KERAS_BACKEND``) against keras.random.
    TensorFlow draws a shape eagerly once and through one XLA program after; the warm-up round
    of :func:`_compare` is that first draw, so the times are the steady state."""
    import keras

    import initscale
    from initscale.adapters import keras as isk
    from initscale.streams import Stream

    shape = (1024, n // 1024)  # a Dense kernel (in, out)
    backend = keras.backend.backend()
    natives = {"normal": (lambda: keras.random.normal(shape, seed=0), "keras.random.normal", "torch.kaiming_normal"),
               "uniform": (lambda: keras.random.uniform(shape, seed=0), "keras.random.uniform",
                           "torch.kaiming_uniform"),
               "truncated normal": (lambda: keras.random.truncated_normal(shape, seed=0),
                                    "keras.random.truncated_normal", "he_normal")}
    cases = []
    for dist, (theirs, label, preset) in natives.items():
        init = isk.initializer(initscale.presets.get(preset), layout="keras.dense", stream=Stream(0, "w"))
        cases.append(_compare(f"keras ({backend}) stream {dist}, {n:,} fp32", "cpu",
                              lambda i=init: keras.ops.convert_to_numpy(i(shape)),
                              lambda f=theirs: keras.ops.convert_to_numpy(f()), label, repeats,
                              note="target: within 2x"))
    return cases


def _keras_backend_cases(n: int, repeats: int) -> list[Case]:
    """:func:`_keras_stream_cases` once per installed Keras backend, each in its own process
    (Keras fixes its backend at import)."""
    if not importlib.util.find_spec("keras"):
        return []
    cases = []
    for backend in ("tensorflow", "jax", "torch"):
        if not importlib.util.find_spec(backend):
            continue
        done = subprocess.run([sys.executable, __file__, "--keras-streams", str(n), str(repeats)],
                              capture_output=True, text=True, check=True, env={**os.environ, "KERAS_BACKEND": backend})
        cases += [Case(**fields) for fields in json.loads(done.stdout.strip().splitlines()[-1])]
    return cases


_MEMORY_CODE = """
import torch, initscale
from initscale.adapters import torch as ist
from initscale.streams import Stream
w = torch.zeros({rows}, 1024)
small = torch.zeros(64, 1024)
spec = initscale.presets.get({preset!r})
if {native!r}:
    std = 0.02
    fill = {{"normal": lambda t: t.normal_(0, std), "truncated normal":
            lambda t: torch.nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)}}[{dist!r}]
else:
    fill = ist.initializer(spec, "torch.linear", stream=Stream(0, "w") if {stream!r} else None)
fill(small)  # load the code paths first


def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident size (VmHWM) to the current one
before = status("VmRSS")
fill(w)
print((status("VmHWM") - before) / 1024)
"""


def _memory_cases(n: int) -> list[Case]:
    """Peak extra memory of one fill in a fresh process: growth of the peak resident size (MiB,
    Linux's VmHWM after resetting it) while filling an already-touched fp32 weight of ``n``
    elements."""
    if not importlib.util.find_spec("torch") or not os.path.exists("/proc/self/clear_refs"):
        return []

    def peak(**fields: Any) -> float:
        code = _MEMORY_CODE.format(rows=n // 1024, **fields)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(done.stdout.split()[-1])

    cases = []
    for dist, preset in (("normal", "torch.kaiming_normal"), ("truncated normal", "he_normal")):
        native = peak(preset=preset, native=True, dist=dist, stream=False)
        for stream in (False, True):
            label = "torch stream" if stream else "torch"
            cases.append(Case(f"{label} {dist}: peak extra memory, {n:,} fp32 ({n * 4 / 2**20:.0f} MiB)", "cpu",
                              peak(preset=preset, native=False, dist=dist, stream=stream), native,
                              "Tensor.normal_" if dist == "normal" else "nn.init.trunc_normal_", unit="MiB"))
    return cases


def _import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1e3)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(3)]
    return statistics.median(runs)


def _import_cases() -> list[Case]:
    cases = [Case("import initscale", "cpu", _import_ms("initscale"), _import_ms("numpy"), "import numpy",
                  "target: under 50 ms")]
    for fw in ("torch", "jax", "keras"):
        if importlib.util.find_spec(fw):
            cases.append(Case(f"import initscale.adapters.{fw}", "cpu", _import_ms(f"initscale.adapters.{fw}"),
                              _import_ms(fw), f"import {fw}"))
    return cases


def markdown(cases: list[Case]) -> str:
    lines = [f"Measured on {platform.machine()} {platform.processor() or ''} ({_cpus()} CPUs), Python "
             f"{platform.python_version()}.", "",
             "| case | device | initscale | native | native | ratio | GB/s (share of fill_) |",
             "|---|---|---|---|---|---|---|"]
    for c in cases:
        ratio = f"**{c.ratio:.2f}x**" if c.native_ms >= 0.05 else "—"
        rate = f"{c.gbps:.3g} ({c.fill_share:.0%})" if c.gbps is not None and c.fill_share is not None else ""
        lines.append(f"| {c.name} | {c.device} | {c.initscale_ms:.3g} {c.unit} | {c.native_ms:.3g} {c.unit} | "
                     f"{c.native} | {ratio} | {rate} |")
    return "\n".join(lines)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4M elements and 5 rounds (about 90 s on 2 cores)")
    parser.add_argument("--json", help="write the cases as JSON to this file")
    parser.add_argument("--markdown", help="write the markdown table to this file")
    parser.add_argument("--keras-streams", nargs=2, type=int, metavar=("N", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keras_streams:  # one backend's Keras cases, as JSON (run by _keras_backend_cases)
        print(json.dumps([asdict(c) for c in _keras_stream_cases(*args.keras_streams)]))
        return 0
    n, repeats = (2**22, 5) if args.quick else (2**24, 11)
    cases: list[Case] = []
    for name, run in (("torch", _torch_cases), ("jax", _jax_cases), ("numpy", _numpy_cases)):
        if importlib.util.find_spec(name):
            cases += run(n, repeats)
    cases += _stream_cases(n, repeats)
    cases += _keras_backend_cases(n, repeats)
    cases += _memory_cases(n)
    cases += _import_cases()
    table = markdown(cases)
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{**asdict(c), "ratio": c.ratio} for c in cases], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
