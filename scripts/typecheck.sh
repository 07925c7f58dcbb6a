#!/usr/bin/env bash
# mypy --strict (pyproject.toml's [tool.mypy], its per-module overrides included) on initscale as a
# wheel installs it: the core and initscale.adapters (the adapters/ folder, which setuptools maps
# to that package, so an editable install or a run from the repo root would not see it). Run by
# .ci/run and `nox -s typecheck`; needs mypy and the frameworks the adapters import (torch, JAX +
# Flax, Keras, tf_keras, triton) in the running Python (PYTHON, default `python`). The work tree's
# files (tracked and untracked, not ignored ones such as a stale build/) are copied to a temporary
# directory, installed there with pip --no-deps --target (the real packaging config, so a module
# the config leaves out is an import error), and mypy runs from that directory. Any error fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src" "$tmp/site"
git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && tar --null --ignore-failed-read -T - -cf -) | tar -C "$tmp/src" -xf -
"$python" -m pip install --quiet --no-deps --target "$tmp/site" "$tmp/src"
cd "$tmp/site"
"$python" -m mypy --config-file "$root/pyproject.toml" --cache-dir "$tmp/mypy_cache" -p initscale
