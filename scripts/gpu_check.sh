#!/usr/bin/env bash
# The GPU half of issue #19 as one prepared command, for a lent CUDA machine (the `device` tool runs
# it in a copy of the repository root). Nothing is fetched there: its own python3 (torch, Triton,
# pytest, scipy, hypothesis) is used, and initscale is installed from this tree without deps.
#
#   bash scripts/gpu_check.sh            # logs and results in $OUT (else /tmp/initscale-gpu-check)
#
# Not yet run on a GPU (none has been lent): the first session that gets one runs it, with a
# timeout_s that leaves time to rerun. It runs (1) the CUDA tests: tests/test_torch_devices.py's
# CUDA cases (torch presets bit for bit with nn.init on a CUDA generator, a mixed model's every
# parameter, streams equal to the CPU's, materialize_ onto cuda, the generator-device refusal, peak
# memory of reinit_ and of orthogonal inits) and the Triton samplers natively (tests/triton_cases.py, the kernels' self-check on this GPU
# included); (2) benchmarks/run.py --quick, the longest step, whose CUDA rows give the truncated
# normal's GB/s and its ratio to Tensor.normal_ (targets: >= 2 TB/s fp32 and <= 0.85x on an H100)
# and reinit_ of 400 small tensors against a kaiming_normal_ loop (target: >= 4x faster). Each
# step's exit status is printed; the script fails if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/initscale-gpu-check}"
mkdir -p "$out"
site=/tmp/initscale-site
python3 -m pip install -q --no-deps --no-index --no-build-isolation --target "$site" . >"$out/install.txt" 2>&1 ||
    { cat "$out/install.txt"; exit 1; }
export PYTHONPATH="$site" PYTHONUNBUFFERED=1 INITSCALE_CHILD_RUNS=inline
status=0
step() {  # step NAME COMMAND...: run it, keep its log, say its exit status
    local name="$1"
    shift
    "$@" >"$out/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc ($(tail -n 1 "$out/$name.txt"))"
    [ "$rc" -eq 0 ] || status=1
}
step gpu nvidia-smi -L
# -P: the interpreter does not put the checkout's initscale/ (which lacks initscale.adapters) first.
step device-tests python3 -P -m pytest -q -p no:cacheprovider -rs tests/test_torch_devices.py
step cuda-tests python3 -P -m pytest -q -p no:cacheprovider tests/test_torch_adapter.py -k cuda
step triton-cases python3 -P -m pytest -q -p no:cacheprovider tests/triton_cases.py
step benchmarks python3 -P benchmarks/run.py --quick --json "$out/bench.json" --markdown "$out/bench.md"
exit "$status"
