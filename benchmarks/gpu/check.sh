#!/usr/bin/env bash
# One-shot GPU check (CUDA paths + throughput), for a session lent one H200: `bash benchmarks/gpu/check.sh`.
# Needs < 8 minutes. Writes the table + JSON to $OUT if set, else benchmarks/results/gpu_check.{md,json}.
# Wheels for what the device image lacks (diffusers, ...) come from .whl/ (benchmarks/gpu/fetch_wheels.sh).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  mapfile -t WHEELS < <("$PY" benchmarks/gpu/install_wheels.py .whl)
  if [ "${#WHEELS[@]}" -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${WHEELS[@]}" \
      || echo "check.sh: wheel install failed; continuing with what the image has" >&2
  fi
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
else
  echo "check.sh: no .whl/ folder; diffusers must already be importable (run benchmarks/gpu/fetch_wheels.sh first)" >&2
fi
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PY" benchmarks/gpu/check.py --device cuda --time_budget_s "${TIME_BUDGET_S:-420}" "$@"
