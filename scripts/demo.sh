#!/usr/bin/env bash
# The README's main-job command. Until the end-to-end pipeline lands (simulate -> train -> generate
# -> evaluate), it shows what the build sees and trains the smoke model on random data, printing
# the loss going down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin="${LATENTCELL_BUILD_DIR:-build}/train/latentcell"
"$bin" info
"$bin" train configs/smoke.yaml run_dir="runs/demo-smoke-$(date +%Y%m%d-%H%M%S)"
