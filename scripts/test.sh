#!/usr/bin/env bash
# The README's test command: installs and builds what is missing (scripts/setup.sh), then runs the
# whole suite with ctest. Tests that need the reference Python env skip with a message without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd "${LATENTCELL_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" --timeout 600
