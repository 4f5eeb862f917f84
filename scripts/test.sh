#!/usr/bin/env bash
# Set up and run the tests (fast suite by default; pass -m slow for the slow suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
