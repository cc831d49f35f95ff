#!/bin/bash
# Install what the tests need, then run the whole test suite (unit, simulator, agent,
# packaging, Pacemaker end-to-end). Run as root on Debian 12; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec .venv/bin/python -m pytest "$@" tests
