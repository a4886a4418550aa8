#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the whole test suite with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check colmena_fed tests bench examples
.venv/bin/ruff format --check colmena_fed tests bench examples
.venv/bin/mypy
exec .venv/bin/python -m pytest --cov=colmena_fed --cov-report=term-missing:skip-covered "$@"
