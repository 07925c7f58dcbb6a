#!/usr/bin/env bash
# The main job from a fresh clone, with only Python: make a virtualenv, install initscale with every
# framework from requirements/frameworks.txt (torch 2.13.0 CPU, TensorFlow 2.21 + Keras 3 + tf_keras,
# JAX + Flax, Triton, matplotlib), then run `initscale parity` on every installed backend: NumPy,
# torch, JAX and Keras on TensorFlow in one process, then Keras on JAX and on torch, each in a process
# of its own (Keras fixes its backend at import).
#
#   bash scripts/parity.sh                                  # summaries and failed rows; exit 1 on a failure
#   bash scripts/parity.sh --format markdown --out parity.md
#
# Arguments go to every `initscale parity` run. With --out FILE the Keras-on-JAX and Keras-on-torch
# runs write FILE with ".keras-jax" / ".keras-torch" before its extension (parity.keras-jax.md).
# The virtualenv is kept for later runs (default .venv in the repository; INITSCALE_VENV=path to
# choose): the install happens again only when requirements/frameworks.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${INITSCALE_VENV:-.venv}"
py="$venv/bin/python"
if [ ! -x "$py" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.initscale-frameworks.txt"
if ! cmp -s requirements/frameworks.txt "$stamp" || ! "$py" -c "import initscale" 2>/dev/null; then
    echo "scripts/parity.sh: installing initscale and every framework into $venv (a few GB, once)" >&2
    "$py" -m pip install --quiet --upgrade pip
    for group in $(python3 scripts/pins.py --groups); do
        mapfile -t reqs < <(python3 scripts/pins.py "$group")
        if [ "${#reqs[@]}" -gt 0 ]; then "$py" -m pip install --quiet "${reqs[@]}"; fi
    done
    mapfile -t reqs < <(python3 scripts/pins.py --no-deps)  # tf-keras: without the full tensorflow wheel
    if [ "${#reqs[@]}" -gt 0 ]; then "$py" -m pip install --quiet --no-deps "${reqs[@]}"; fi
    "$py" -m pip install --quiet -e .
    cp requirements/frameworks.txt "$stamp"
fi

# The same arguments for every run; --out FILE gets a per-Keras-backend name in the extra runs.
args=("$@")
suffixed() {  # suffixed FILE BACKEND: dir/name.ext -> dir/name.keras-BACKEND.ext
    local file="$1" dir="" name ext=""
    case "$file" in */*) dir="${file%/*}/" ;; esac
    name="${file##*/}"
    if [[ "$name" == ?*.* ]]; then ext=".${name##*.}"; name="${name%.*}"; fi
    printf '%s%s.keras-%s%s' "$dir" "$name" "$2" "$ext"
}
renamed_out() {  # renamed_out BACKEND: the arguments, NUL-separated, with --out's file suffixed
    local i a
    for ((i = 0; i < ${#args[@]}; i++)); do
        a="${args[$i]}"
        if [ "$a" = --out ] && [ $((i + 1)) -lt ${#args[@]} ]; then
            printf '%s\0%s\0' --out "$(suffixed "${args[$((i + 1))]}" "$1")"
            i=$((i + 1))
        elif [[ "$a" == --out=* ]]; then
            printf '%s\0' "--out=$(suffixed "${a#--out=}" "$1")"
        else
            printf '%s\0' "$a"
        fi
    done
}

status=0
echo "== initscale parity: numpy, torch, jax, keras on tensorflow" >&2
KERAS_BACKEND=tensorflow "$venv/bin/initscale" parity "${args[@]}" || status=1
for backend in jax torch; do
    echo "== initscale parity: keras on $backend (its own process)" >&2
    run_args=()
    mapfile -d '' run_args < <(renamed_out "$backend")
    KERAS_BACKEND="$backend" "$venv/bin/initscale" parity --backend keras "${run_args[@]}" || status=1
done
exit "$status"
