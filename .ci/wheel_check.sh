#!/usr/bin/env bash
# The package as a user gets it: build the wheel, install it into a fresh venv outside the checkout, and run the demo
# and one evaluation console script from there (no source tree on sys.path, nothing read from the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/aligntok-wheel-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
TORCH_PINS="${TORCH_PINS:-torch==2.14.1 torchvision==0.29.1}"

python3 -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$REPO"
WHEEL="$(ls "$WORK"/dist/diffusers_aligntok-*.whl)"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$WORK/venv/bin/python" -m pip install --quiet $TORCH_PINS "${WHEEL}[demo,evaluation]"

cd "$WORK"  # outside the checkout: only the installed wheel is importable
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$WORK/venv/bin/python" - <<'PY'
import diffusers_aligntok, pathlib
location = pathlib.Path(diffusers_aligntok.__file__).resolve()
assert "site-packages" in location.parts, f"imported from {location}, not from the installed wheel"
print(f"diffusers_aligntok {diffusers_aligntok.__version__ if hasattr(diffusers_aligntok, '__version__') else ''} from {location.parent}")
PY
"$WORK/venv/bin/aligntok-demo" --scale 0.01 --output_dir "$WORK/demo"
test -f "$WORK/demo/demo_metrics.json"
# An evaluation console script on the demo's tokenizer against the FLUX VAE layout, with the named offline stand-ins.
"$WORK/venv/bin/aligntok-evaluate-tokenizer" --tokenizers "$WORK/demo/stage3/model" flux-vae-random \
    --data builtin:shapes --resolution 32 --num_samples 16 --output_dir "$WORK/eval" \
    --feature_extractor random-inception-standin --perceptual lpips-vgg-random-trunk
test -f "$WORK/eval/results.json"
echo "wheel check passed: $(basename "$WHEEL")"
