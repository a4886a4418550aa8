#!/usr/bin/env bash
# Set up (if needed) and run the demo campaign on the embedded two-site local federation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/colmena-fed run examples/active_learning/campaign.py:make_thinker \
    --sites examples/sites.yaml "$@"
