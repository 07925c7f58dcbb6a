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


def _compare(
    name: str,
    device: str,
    ours: Callable[[], Any],
    theirs: Callable[[], Any],
    native: str,
    repeats: int,
    sync: Callable[[], None] = lambda: None,
    note: str = "",
) -> Case:
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
    return Case(
        name,
        device,
        statistics.median(mine),
        statistics.median(native_times),
        native,
        note,
        paired_ratio=statistics.median(ratios) if ratios else None,
    )


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
            (
                "normal (kaiming_normal)",
                lambda w=w: fill_n(w, generator=gen),
                lambda w=w: torch.nn.init.kaiming_normal_(w, generator=gen),
                "nn.init.kaiming_normal_",
            ),
            (
                "uniform (kaiming_uniform)",
                lambda w=w: fill_u(w, generator=gen),
                lambda w=w: torch.nn.init.kaiming_uniform_(w, generator=gen),
                "nn.init.kaiming_uniform_",
            ),
            (
                "truncated normal (he_normal)",
                lambda w=w: fill_t(w, generator=gen),
                lambda w=w, std=std: torch.nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std, generator=gen),
                "nn.init.trunc_normal_",
            ),
            (
                "truncated normal vs normal_",
                lambda w=w: fill_t(w, generator=gen),
                lambda w=w: w.normal_(generator=gen),
                "Tensor.normal_ (untruncated)",
            ),
        ]
        if dtype == torch.float32:
            pairs.append(
                (
                    "constant",
                    lambda w=w: ist.init_(w, initscale.Constant(0.5)),
                    lambda w=w: w.fill_(0.5),
                    "Tensor.fill_",
                )
            )
        # the memory limit: what fill_ writes per second on this tensor, in the same run
        fill_ms = _compare(
            "fill_", device, lambda w=w: w.fill_(0.5), lambda w=w: w.fill_(0.5), "", repeats, sync
        ).initscale_ms
        nbytes = w.numel() * w.element_size()
        kind = "fp32" if dtype == torch.float32 else "bf16"
        for name, ours, theirs, label in pairs:
            case = _compare(f"torch {name}, {size:,} {kind}", device, ours, theirs, label, repeats, sync)
            case.gbps = nbytes / case.initscale_ms / 1e6
            case.fill_share = fill_ms / case.initscale_ms
            cases.append(case)
    square = torch.empty(1024, 1024, device=device)
    ortho = ist.initializer(initscale.Orthogonal())
    cases.append(
        _compare(
            "torch orthogonal, 1024 × 1024 fp32 (one QR)",
            device,
            lambda: ortho(square, generator=gen),
            lambda: torch.nn.init.orthogonal_(square, generator=gen),
            "nn.init.orthogonal_",
            max(3, repeats // 2),
            sync,
        )
    )
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
        cases.append(
            _compare(
                "torch reinit_ of 400 small params (200 × Linear(64, 64))", device, ours, loop, label, repeats, sync
            )
        )
    return cases


def _sampler_cases(n: int, repeats: int) -> list[Case]:
    """The compiled CPU sampler (issue 19, item 3) against torch's own generator, same tensor:
    normal and truncated normal against ``Tensor.normal_``, uniform against ``Tensor.uniform_``
    (targets: at most 0.6x, goal 0.3x), in fp32, bf16 and fp16; and the sampler on all of
    torch's threads against itself on one (target: at least 1.7x faster from 1 to 2 threads,
    a ratio of at most 0.59)."""
    import torch

    import initscale
    from initscale._kernels import cpu as _stream_kernel
    from initscale.adapters import torch as ist

    if _stream_kernel.load() is None:
        return []
    gen = torch.Generator().manual_seed(0)
    specs = {
        "normal": initscale.VarianceScaling(2.0, "fan_in", "normal"),
        "truncated normal": initscale.presets.get("he_normal"),
        "uniform": initscale.VarianceScaling(2.0, "fan_in", "uniform"),
    }
    fills = {dist: ist.initializer(spec) for dist, spec in specs.items()}
    cases = []
    threads = torch.get_num_threads()
    for dtype, kind in ((torch.float32, "fp32"), (torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        w = torch.empty(n // 1024, 1024, dtype=dtype)
        for dist, fill in fills.items():
            native = (
                (lambda w=w: w.uniform_(-0.1, 0.1, generator=gen), "Tensor.uniform_")
                if dist == "uniform"
                else (lambda w=w: w.normal_(0.0, 0.05, generator=gen), "Tensor.normal_")
            )
            cases.append(
                _compare(
                    f"torch sampler {dist}, {n:,} {kind}",
                    "cpu",
                    lambda f=fill, w=w: f(w, generator=gen),
                    native[0],
                    native[1],
                    repeats,
                    note="target: at most 0.6x (goal 0.3x)",
                )
            )
    if threads > 1:
        w = torch.empty(n // 1024, 1024)
        for dist, fill in fills.items():

            def one(f: Any = fill) -> None:
                torch.set_num_threads(1)
                try:
                    f(w, generator=gen)
                finally:
                    torch.set_num_threads(threads)

            cases.append(
                _compare(
                    f"torch sampler {dist}, {n:,} fp32: {threads} threads vs 1",
                    "cpu",
                    lambda f=fill: f(w, generator=gen),
                    one,
                    "the same on 1 thread",
                    repeats,
                    note="target: at most 0.59x (1.7x faster)",
                )
            )
    return cases


def _jax_cases(n: int, repeats: int) -> list[Case]:
    import jax

    import initscale
    from initscale.adapters import jax as isj

    shape = (n // 1024, 1024)
    key = jax.random.key(0)
    cases = []
    for preset, native in (
        ("jax.he_normal", jax.nn.initializers.he_normal()),
        ("jax.glorot_uniform", jax.nn.initializers.glorot_uniform()),
    ):
        mine = isj.initializer(initscale.presets.get(preset))
        ours = jax.jit(lambda k, i=mine: i(k, shape))
        theirs = jax.jit(lambda k, i=native: i(k, shape))
        cases.append(
            _compare(
                f"jax {preset} under jit, {n:,} fp32",
                str(jax.devices()[0].platform),
                lambda f=ours: f(key).block_until_ready(),
                lambda f=theirs: f(key).block_until_ready(),
                f"jax.nn.initializers.{preset.split('.')[1]}",
                repeats,
            )
        )
    return cases


def _numpy_cases(n: int, repeats: int) -> list[Case]:
    import numpy as np

    import initscale
    from initscale.adapters import numpy as isnp

    shape = (n // 1024, 1024)
    rng = np.random.default_rng(0)
    init = isnp.initializer(initscale.presets.get("numpy.randn_he"))
    return [
        _compare(
            f"numpy normal (randn_he), {n:,} fp32",
            "cpu",
            lambda: init(shape, rng=rng),
            lambda: (rng.standard_normal(shape) * 0.04).astype(np.float32),
            "rng.standard_normal(...) * std",
            repeats,
        )
    ]


def _stream_cases(n: int, repeats: int) -> list[Case]:
    """Portable streams (issue #8: counter-based Philox, same values in every framework) against
    each framework's own generator for the same distribution (target: within 2x)."""
    import initscale
    from initscale.streams import Stream

    shape = (n // 1024, 1024)
    specs = {
        "normal": initscale.presets.get("torch.kaiming_normal"),
        "uniform": initscale.presets.get("torch.kaiming_uniform"),
        "truncated normal": initscale.presets.get("he_normal"),
    }
    cases = []
    if importlib.util.find_spec("torch"):
        import torch

        from initscale.adapters import torch as ist

        std = 0.02
        for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            size = n if device == "cpu" else 2**30
            w = torch.empty(size // 1024, 1024, device=device)
            natives = {
                "normal": (lambda w=w: w.normal_(0.0, std), "Tensor.normal_"),
                "uniform": (lambda w=w: w.uniform_(-std, std), "Tensor.uniform_"),
                "truncated normal": (
                    lambda w=w: torch.nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std),
                    "nn.init.trunc_normal_",
                ),
            }
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            for dist, spec in specs.items():
                fill = ist.initializer(spec, "torch.linear", stream=Stream(0, "w"))
                theirs, label = natives[dist]
                cases.append(
                    _compare(
                        f"torch stream {dist}, {size:,} fp32",
                        device,
                        lambda f=fill, w=w: f(w),
                        theirs,
                        label,
                        repeats,
                        sync,
                        note="target: within 2x",
                    )
                )
    if importlib.util.find_spec("jax"):
        import jax

        from initscale.adapters import jax as isj

        key = jax.random.key(0)
        natives_jax = {
            "normal": (jax.random.normal, "jax.random.normal"),
            "uniform": (jax.random.uniform, "jax.random.uniform"),
            "truncated normal": (
                lambda k, s: jax.random.truncated_normal(k, -2.0, 2.0, s),
                "jax.random.truncated_normal",
            ),
        }
        for dist, spec in specs.items():
            init = isj.initializer(spec, layout="flax.dense", stream=Stream(0, "w"))
            ours = jax.jit(lambda k, i=init: i(k, shape[::-1]))
            native, label = natives_jax[dist]
            theirs = jax.jit(lambda k, g=native: g(k, shape))
            cases.append(
                _compare(
                    f"jax stream {dist} under jit, {n:,} fp32",
                    str(jax.devices()[0].platform),
                    lambda f=ours: f(key).block_until_ready(),
                    lambda f=theirs: f(key).block_until_ready(),
                    label,
                    repeats,
                    note="target: within 2x",
                )
            )
    import numpy as np

    from initscale.adapters import numpy as isnp

    rng = np.random.default_rng(0)
    natives_np = {
        "normal": (lambda: rng.standard_normal(shape, dtype=np.float32), "Generator.standard_normal"),
        "uniform": (lambda: rng.random(shape, dtype=np.float32), "Generator.random"),
    }
    for dist, (theirs, label) in natives_np.items():
        init = isnp.initializer(specs[dist], "torch.linear", stream=Stream(0, "w"))
        cases.append(
            _compare(
                f"numpy stream {dist}, {n:,} fp32",
                "cpu",
                lambda i=init: i(shape),
                theirs,
                label,
                repeats,
                note="the compiled kernel (float64: the reference); target: within 2x",
            )
        )
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
    natives = {
        "normal": (lambda: keras.random.normal(shape, seed=0), "keras.random.normal", "torch.kaiming_normal"),
        "uniform": (lambda: keras.random.uniform(shape, seed=0), "keras.random.uniform", "torch.kaiming_uniform"),
        "truncated normal": (
            lambda: keras.random.truncated_normal(shape, seed=0),
            "keras.random.truncated_normal",
            "he_normal",
        ),
    }
    cases = []
    for dist, (theirs, label, preset) in natives.items():
        init = isk.initializer(initscale.presets.get(preset), layout="keras.dense", stream=Stream(0, "w"))
        cases.append(
            _compare(
                f"keras ({backend}) stream {dist}, {n:,} fp32",
                "cpu",
                lambda i=init: keras.ops.convert_to_numpy(i(shape)),
                lambda f=theirs: keras.ops.convert_to_numpy(f()),
                label,
                repeats,
                note="target: within 2x",
            )
        )
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
        done = subprocess.run(
            [sys.executable, __file__, "--keras-streams", str(n), str(repeats)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "KERAS_BACKEND": backend},
        )
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
            if dist == "truncated normal" and not stream:
                label = "torch sampler"  # he_normal on the CPU: the compiled sampler
            cases.append(
                Case(
                    f"{label} {dist}: peak extra memory, {n:,} fp32 ({n * 4 / 2**20:.0f} MiB)",
                    "cpu",
                    peak(preset=preset, native=False, dist=dist, stream=stream),
                    native,
                    "Tensor.normal_" if dist == "normal" else "nn.init.trunc_normal_",
                    unit="MiB",
                )
            )
    native = peak(preset="torch.kaiming_normal", native=True, dist="normal", stream=False)
    cases.append(
        Case(
            f"torch sampler normal: peak extra memory, {n:,} fp32 ({n * 4 / 2**20:.0f} MiB)",
            "cpu",
            peak(preset="numpy.randn_he", native=False, dist="normal", stream=False),
            native,
            "Tensor.normal_",
            unit="MiB",
        )
    )
    return cases


_MODEL_CODE = r"""
import json, math, statistics, sys, time
import torch
import initscale
from initscale.adapters import torch as ist

name, dtype, repeats = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3])
N = initscale.Normal(0.02)
T = initscale.TruncatedNormal(0.02, lower=-2.0, upper=2.0, bounds_in="absolute")  # HF ViT: trunc_normal_(std=.02)
nn = torch.nn


def bottleneck(cin, mid, stride):
    cout = 4 * mid
    body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                         nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                         nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
    if cin == cout:
        return body
    return nn.ModuleDict({"body": body, "down": nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                              nn.BatchNorm2d(cout))})


def resnet50_like():  # torchvision's resnet50 layout by hand: 3-4-6-3 bottlenecks (25.6M parameters)
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)], 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(bottleneck(cin, mid, stride if i == 0 else 1))
            cin = 4 * mid
    layers.append(nn.Linear(2048, 1000))
    return nn.Sequential(*layers)


hf = None
if name == "resnet50-like":
    model = resnet50_like()
    he_fan_out = initscale.VarianceScaling(2.0, "fan_out", "normal")  # torchvision: kaiming_normal_(fan_out, relu)
    rules = {"Conv2d": he_fan_out, "Linear": initscale.presets.get("torch.linear_default")}
    variants = {"initscale (sampler)": rules,
                "initscale torch.* presets (torch's stream)": {**rules, "Conv2d": initscale.presets.get(
                    "torch.kaiming_normal", mode="fan_out", nonlinearity="relu")}}
else:
    import transformers as tf
    if name == "llama-100m":
        cfg = tf.LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                             num_key_value_heads=12, vocab_size=16000)
        model = tf.LlamaForCausalLM(cfg)
        variants = {"initscale": {"Linear": N, "Embedding": N},
                    "initscale he_normal": {"Linear": initscale.presets.get("he_normal"), "Embedding": N}}
    elif name == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config())
        c_proj = initscale.Normal(0.02 / math.sqrt(2 * model.config.n_layer))  # HF's scaled residual projections
        variants = {"initscale": {"*c_proj.weight": c_proj, "Conv1D": N, "Linear": N, "Embedding": N}}
    else:  # vit
        model = tf.ViTForImageClassification(tf.ViTConfig())
        variants = {"initscale": {"Linear": T, "Conv2d": T, "*position_embeddings": T, "*cls_token": T}}
    hf = model
model = model.to(dtype)
params = sum(p.numel() for p in model.parameters())
gen = torch.Generator().manual_seed(0)


def hf_init():
    for p in model.parameters():  # transformers' init functions skip tensors flagged as done
        p._is_hf_initialized = False
    with torch.no_grad():
        model.apply(hf._init_weights)


def loop():
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) or "Norm" in type(m).__name__:
                torch.nn.init.ones_(w)
                if getattr(m, "bias", None) is not None:
                    torch.nn.init.zeros_(m.bias)
            elif isinstance(w, torch.Tensor) and w.dim() >= 2:
                if name == "vit":
                    torch.nn.init.trunc_normal_(w, std=0.02, generator=gen)
                elif name == "resnet50-like" and isinstance(m, nn.Conv2d):
                    torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=gen)
                else:
                    torch.nn.init.normal_(w, 0.0, 0.02, generator=gen)
                if getattr(m, "bias", None) is not None:
                    torch.nn.init.zeros_(m.bias)


natives = ([("HF _init_weights", hf_init)] if hf is not None else []) + [("loop of nn.init", loop)]
ours = {label: (lambda r=r: ist.reinit_(model, r, generator=gen)) for label, r in variants.items()}


def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak(fn):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    fn()
    return (status("VmHWM") - before) / 1024


fns = {**dict(natives), **ours}
if len(sys.argv) > 4:  # the peak extra memory of one side's first call, in this fresh process
    print(json.dumps(peak(fns[sys.argv[4]])))
    sys.exit(0)
for fn in fns.values():
    fn()  # warm-up
times = {k: [] for k in fns}
for _ in range(repeats):
    for k, fn in fns.items():
        start = time.perf_counter()
        fn()
        times[k].append((time.perf_counter() - start) * 1e3)
rows = []
for label in ours:
    for native, _ in natives:
        ratios = [a / b for a, b in zip(times[label], times[native])]
        rows.append({"name": f"{name} ({params / 1e6:.0f}M, {sys.argv[2]}): {label}", "device": "cpu",
                     "initscale_ms": statistics.median(times[label]), "native_ms": statistics.median(times[native]),
                     "native": native, "paired_ratio": statistics.median(ratios), "note": label + "|" + native})
print(json.dumps(rows))
"""


def _model_cases(repeats: int) -> list[Case]:
    """Whole models built from config (issue 19, item 4), re-initialized in place: HF Llama ~100M
    (fp32 and bf16), GPT-2, ViT-Base and a ResNet-50-like model written by hand, each in its own
    process; initscale's ``reinit_`` with the model's own distributions against HF's
    ``_init_weights`` and a loop of ``nn.init`` calls, timed in alternation; each row's peak extra
    resident memory (VmHWM growth over one call, after the warm-up) for both sides."""
    if not importlib.util.find_spec("torch") or not os.path.exists("/proc/self/clear_refs"):
        return []
    runs = [("resnet50-like", "float32")]
    if importlib.util.find_spec("transformers"):
        runs = [("llama-100m", "float32"), ("llama-100m", "bfloat16"), ("gpt2", "float32"), ("vit", "float32"), *runs]

    def run(*args: str) -> Any:
        done = subprocess.run([sys.executable, "-c", _MODEL_CODE, *args], capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    cases = []
    for model, dtype in runs:
        rows = run(model, dtype, str(max(3, repeats // 2)))
        sides = {side for row in rows for side in row["note"].split("|")}
        peaks = {side: run(model, dtype, "1", side) for side in sorted(sides)}  # each in a fresh process
        for row in rows:
            ours, native = row.pop("note").split("|")
            row["name"] += f"; peak extra memory {peaks[ours]:.0f} MiB (native {peaks[native]:.0f} MiB)"
            cases.append(Case(**row))
    return cases


def _import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1e3)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(3)
    ]
    return statistics.median(runs)


def _import_cases() -> list[Case]:
    cases = [
        Case(
            "import initscale",
            "cpu",
            _import_ms("initscale"),
            _import_ms("numpy"),
            "import numpy",
            "target: under 50 ms",
        )
    ]
    for fw in ("torch", "jax", "keras"):
        if importlib.util.find_spec(fw):
            cases.append(
                Case(
                    f"import initscale.adapters.{fw}",
                    "cpu",
                    _import_ms(f"initscale.adapters.{fw}"),
                    _import_ms(fw),
                    f"import {fw}",
                )
            )
    return cases


def markdown(cases: list[Case]) -> str:
    lines = [
        f"Measured on {platform.machine()} {platform.processor() or ''} ({_cpus()} CPUs), Python "
        f"{platform.python_version()}.",
        "",
        "| case | device | initscale | native | native | ratio | GB/s (share of fill_) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        ratio = f"**{c.ratio:.2f}x**" if c.native_ms >= 0.05 else "—"
        rate = f"{c.gbps:.3g} ({c.fill_share:.0%})" if c.gbps is not None and c.fill_share is not None else ""
        lines.append(
            f"| {c.name} | {c.device} | {c.initscale_ms:.3g} {c.unit} | {c.native_ms:.3g} {c.unit} | "
            f"{c.native} | {ratio} | {rate} |"
        )
    return "\n".join(lines)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4M elements and 5 rounds (about 90 s on 2 cores)")
    parser.add_argument("--json", help="write the cases as JSON to this file")
    parser.add_argument("--markdown", help="write the markdown table to this file")
    parser.add_argument(
        "--only",
        choices=["sampler", "models"],
        help="only the sampler's cases (issue 19 item 3) or the whole-model rows (item 4)",
    )
    parser.add_argument("--keras-streams", nargs=2, type=int, metavar=("N", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keras_streams:  # one backend's Keras cases, as JSON (run by _keras_backend_cases)
        print(json.dumps([asdict(c) for c in _keras_stream_cases(*args.keras_streams)]))
        return 0
    n, repeats = (2**22, 5) if args.quick else (2**24, 11)
    cases: list[Case] = []
    if args.only == "sampler":
        cases += _sampler_cases(n, repeats) + _memory_cases(n)
    elif args.only == "models":
        cases += _model_cases(repeats)
    else:
        for name, run in (("torch", _torch_cases), ("jax", _jax_cases), ("numpy", _numpy_cases)):
            if importlib.util.find_spec(name):
                cases += run(n, repeats)
        if importlib.util.find_spec("torch"):
            cases += _sampler_cases(n, repeats)
        cases += _stream_cases(n, repeats)
        cases += _keras_backend_cases(n, repeats)
        cases += _memory_cases(n)
        cases += _model_cases(repeats)
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
