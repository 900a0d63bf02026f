#!/usr/bin/env bash
# Downloads, on a machine with registry access, the wheels that benchmarks/gpu/check.sh installs on the GPU machine
# (Python 3.12, x86_64; its image has torch, transformers, accelerate, peft, torchvision, timm but not diffusers).
# Run from anywhere: the wheels go to <repo>/.whl/ (git-ignored). check.sh installs only those the image lacks
# (diffusers always), so extra wheels here are harmless.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
# The diffusers version this repository is developed and tested against.
DIFFUSERS_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("diffusers"))')"
HUB_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("huggingface_hub"))')"
mkdir -p .whl
# diffusers' runtime needs (Requires-Dist, no extras): importlib_metadata is imported only on Python < 3.8;
# filelock, huggingface_hub, numpy, regex, safetensors, Pillow come with transformers/torchvision. requests is
# version-checked at `import diffusers` but transformers 5 / huggingface_hub 1.x no longer need it, so it and its
# own needs are fetched too; huggingface_hub in case the image's is older than diffusers' minimum.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "diffusers==$DIFFUSERS_VERSION" requests urllib3 idna certifi charset_normalizer \
  "huggingface_hub==$HUB_VERSION"
ls -l .whl
unzip -p .whl/diffusers-"$DIFFUSERS_VERSION"-*.whl '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
du -sh .whl
