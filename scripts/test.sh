#!/usr/bin/env bash
# Run the test suite on real servers (private RabbitMQ and MariaDB, started once per run).
#   bash scripts/test.sh                 # everything, as CI runs it
#   bash scripts/test.sh -m "not slow"   # the quick everyday subset
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest "$@"
