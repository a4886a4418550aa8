#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the whole test suite with coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The data-plane tests start their own redis-server, and the testbed its own RabbitMQ node
# (both on 127.0.0.1); only Debian's packages are needed, not their system services.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
# The report's HTML page is checked in a real headless browser.
command -v chromium >/dev/null || missing+=(chromium)
# The MPI tests build a small C program with mpicc and run it with MPICH's mpiexec (Hydra).
command -v mpicc >/dev/null || missing+=(mpich libmpich-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null; then
        sudo_if_needed=$([ "$(id -u)" -eq 0 ] || echo sudo)
        # Should the packages start system services, those use the default ports, not ours.
        $sudo_if_needed apt-get update -qq
        $sudo_if_needed apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "the tests need ${missing[*]}; install them (e.g. apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi
.venv/bin/ruff check colmena_fed tests bench examples
.venv/bin/ruff format --check colmena_fed tests bench examples
.venv/bin/mypy
exec .venv/bin/python -m pytest --cov=colmena_fed --cov-report=term-missing:skip-covered --durations=25 "$@"
