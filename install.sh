#!/usr/bin/env bash
# Installs diffsampler and its dependencies into the current Python environment.
# If no torch is installed, torch==2.13.0 is tried first (a CPU build where one is on local disk),
# so a CPU-only machine never pulls the multi-GB CUDA build; GPU users install their torch first.
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch>=2.2"
  else
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q "torch>=2.2"
  fi
fi
cd "$(dirname "$0")"
"$PY" -m pip install -q -e ".[dev]"
# pyenv installs console scripts behind shims: refresh them so `diffsampler` is on PATH at once.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
