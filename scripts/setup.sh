#!/usr/bin/env bash
# Create .venv with the pinned PyTorch (torch==2.13.0) and this package.
# Usage: scripts/setup.sh [cuda] [EXTRAS]
#   Default: PyTorch's CPU build (one ~190 MB wheel): inference runs well on the CPU.
#   cuda: the build on pip's ordinary index (on Linux: CUDA, ~3 GB with its nvidia-* and triton wheels).
#   EXTRAS: e.g. fast (numba: the fused CPU engine), train, test, or "fast,train".
set -euo pipefail
cd "$(dirname "$0")/.."
build=cpu
if [ "${1:-}" = cuda ]; then
    build=cuda
    shift
fi
extras="${1:-}"
torch="torch==2.13.0"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [ "$build" = cpu ]; then
    # PyTorch's CPU index, given up on quickly where it cannot be reached (offline mirrors, CI).
    if ! "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu --timeout 5 --retries 0 "$torch" 2>/dev/null; then
        echo "setup: PyTorch's CPU index not reachable; installing $torch from pip's ordinary index" >&2
        "${pip[@]}" "$torch"
    fi
else
    # A CPU build already there would satisfy the pin: replace it.
    if .venv/bin/python -m pip show torch 2>/dev/null | grep -q '^Version: .*+cpu'; then
        .venv/bin/python -m pip uninstall --quiet --yes torch
    fi
    "${pip[@]}" "$torch"
fi
"${pip[@]}" -e ".${extras:+[$extras]}"
# Compile the fused CPU kernels once where numba is installed (the "fast" extra); cached on disk.
.venv/bin/python -m nca_core.inference.fused >/dev/null 2>&1 || true
