#!/usr/bin/env bash
# Seed corpora for the fuzz targets, made with the latentcell binary itself:
#   OUT/h5ad/    small simulated h5ad files (CSR counts, categorical obs, varm, uns), and the inputs in
#                fuzz/regressions/h5ad/ that once crashed the reader (inside libhdf5 1.10.8), so that
#                every run replays them
#   OUT/shards/  one-shard directories from `latentcell data convert` of those files, packed as
#                fuzz_shards reads them: flags byte, index length (uint32 LE), index.lcs, shard-00000.lcs;
#                each under the four flag values (checksums fixed or not, verified or not)
# Usage: fuzz/make_corpus.sh LATENTCELL_BINARY OUT_DIR
set -euo pipefail
bin=$1
out=$2
rm -rf "$out"
mkdir -p "$out/h5ad" "$out/shards"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# uint32 little-endian as raw bytes.
u32le() { printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"; }

i=0
for spec in "12 6 2 1 1" "30 9 1 2 2" "8 70 1 1 1"; do
  read -r cells genes types perts batches <<<"$spec"
  h5ad="$out/h5ad/sim-$i.h5ad"
  "$bin" simulate --out "$h5ad" --cells "$cells" --genes "$genes" --cell-types "$types" \
    --perturbations "$perts" --batches "$batches" --seed "$i" --log-level warn
  for grouping in "" "--condition perturbation --control control --context cell_type,batch"; do
    dir="$work/s$i-${#grouping}"
    # shellcheck disable=SC2086
    "$bin" data convert "$h5ad" "$dir" $grouping --log-level warn >/dev/null
    size=$(stat -c %s "$dir/index.lcs")
    for flags in 0 1 2 3; do
      { printf "$(printf '\\%03o' "$flags")"; u32le "$size"; cat "$dir/index.lcs" "$dir/shard-00000.lcs"; } \
        >"$out/shards/sim-$i-${#grouping}-flags$flags"
    done
  done
  i=$((i + 1))
done
cp "$(dirname "$0")"/regressions/h5ad/*.h5ad "$out/h5ad/"
echo "seed corpora in $out: $(ls "$out/h5ad" | wc -l) h5ad, $(ls "$out/shards" | wc -l) shard inputs"
