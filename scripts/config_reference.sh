#!/usr/bin/env bash
# Regenerates docs/config-reference.md from the config structs (`latentcell config reference`).
# tests/test_docs.cpp fails when the committed file differs from the binary's output.
#   scripts/config_reference.sh [BINARY]    (default: build/train/latentcell, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-}
if [ -z "$binary" ]; then
  binary=build/train/latentcell
  ninja -C build latentcell >/dev/null
fi
"$binary" config reference > docs/config-reference.md.tmp
mv docs/config-reference.md.tmp docs/config-reference.md
echo "wrote docs/config-reference.md"
