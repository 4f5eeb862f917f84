#!/usr/bin/env bash
# The engine tests under Python 3.9, the Python of Slicer 5.8, in .venv39.
# Usage: scripts/test39.sh [PYTEST ARGS]   (PYTHON39=/path/to/python3.9 picks the interpreter)
#
# torch 2.13.0 (the pin of scripts/setup.sh) has no Python 3.9 wheel; torch 2.8.0 is the newest
# release that has one, so this job alone runs on it. On Linux x86_64 PyPI's 2.8.0 wheel is the
# CUDA build and pulls the nvidia-* packages (about 3.5 GB, downloaded once into pip's cache).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH39="torch==2.8.0"

is_39() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' 2>/dev/null; }

python39="${PYTHON39:-}"
if ! is_39 "$python39" && command -v pyenv >/dev/null 2>&1; then
    python39="$(pyenv prefix 3.9 2>/dev/null | head -n 1)/bin/python3.9"
fi
if ! is_39 "$python39"; then
    python39="$(command -v python3.9 || true)"
fi
if ! is_39 "$python39"; then
    echo "scripts/test39.sh: no Python 3.9 found (tried \$PYTHON39, 'pyenv prefix 3.9', python3.9 on PATH);" \
         "install one (e.g. 'pyenv install 3.9') or set PYTHON39" >&2
    exit 2
fi

if ! is_39 .venv39/bin/python; then
    rm -rf .venv39
    "$python39" -m venv .venv39
fi
# Installed once per torch pin and pyproject.toml (the package is editable: code changes need no reinstall).
stamp=.venv39/m3dnca-installed
want="$TORCH39 $(.venv39/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    pip=(.venv39/bin/python -m pip install --quiet --disable-pip-version-check)
    "${pip[@]}" "$TORCH39"
    "${pip[@]}" -e ".[test]"
    echo "$want" > "$stamp"
fi
.venv39/bin/python -c 'import sys, torch; print("Python", sys.version.split()[0], "torch", torch.__version__)'

# The engine tests and the Slicer-side helpers that run in Slicer's Python (worker, job, options,
# display, geometry: test_slicer_module.py, whose worker runs on this venv's Python); not the slow
# ones (pyproject's addopts), nor the real-MRML tiers, which need slicer-core (wheels for
# Python >= 3.10 only) and run in the fast suite.
# One thread unless told otherwise: this job checks Python 3.9, not speed, and torch's threads on a
# busy machine made it 3-4x slower (17 min instead of 4.5 on 2 shared cores).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv39/bin/python -m pytest \
    --ignore=Testing/Python/test_slicer_mrml.py --ignore=Testing/Python/test_slicer_panel.py \
    -p no:cacheprovider "$@"
