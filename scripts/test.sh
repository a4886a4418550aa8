#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the whole test suite with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The data-plane tests start their own redis-server (on 127.0.0.1, a free port).
if ! command -v redis-server >/dev/null; then
    if command -v apt-get >/dev/null; then
        sudo_if_needed=$([ "$(id -u)" -eq 0 ] || echo sudo)
        $sudo_if_needed apt-get update -qq && $sudo_if_needed apt-get install -y -qq redis-server >/dev/null
    else
        echo "redis-server is needed by the tests; install it (e.g. apt-get install redis-server)" >&2
        exit 1
    fi
fi
.venv/bin/ruff check colmena_fed tests bench examples
.venv/bin/ruff format --check colmena_fed tests bench examples
.venv/bin/mypy
exec .venv/bin/python -m pytest --cov=colmena_fed --cov-report=term-missing:skip-covered "$@"
