#!/usr/bin/env bash
# The stage-1 table of docs/results.md (issue 5, acceptance 5): every head with both bottlenecks, and
# PCA with the same latent size, trained on the real screen with 10% of cells held out, then scored on
# the held-out cells with `latentcell evaluate --profile reconstruction` (nb_error = RE, PCC and MSE
# on log1p-normalised values). Environment: DATA (h5ad), STEPS (training steps per model), OUT (runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LATENTCELL_BIN:-build/train/latentcell}
data=${DATA:-../shared/data/papalexi2021_thp1_eccite_299genes.h5ad}
steps=${STEPS:-1500}
out=${OUT:-runs/stage1-results}
mkdir -p "$out"

score() {  # run directory -> reconstruction metrics of its held-out cells
  local run=$1
  "$bin" reconstruct --run "$run" --data "$data" --cells val --predict mean \
    --out "$run/recon-val.h5ad" --real-out "$run/real-val.h5ad" --log-level warn
  "$bin" evaluate --profile reconstruction --pred "$run/recon-val.h5ad" --real "$run/real-val.h5ad" \
    --pert-col perturbation --control-pert non-targeting --outdir "$run/eval" --log-level warn > /dev/null
}

train() {  # name config [overrides...]
  local name=$1 config=$2
  shift 2
  if [ ! -d "$out/$name/checkpoints" ]; then
    "$bin" train "$config" run_dir="$out/$name" data.path="$data" trainer.max_steps="$steps" "$@" --log-level warn
  fi
  score "$out/$name"
}

for head in nb hurdle ce_quant mse; do
  train "gaussian-$head" configs/stage1/scldm-vae-cpu.yaml head.kind="$head" head.library=auto
  train "fsq-$head" "configs/stage1/expressionvae-fsq-${head/_/-}-cpu.yaml"
done
train pca configs/stage1/pca-cpu.yaml

printf '\n| model | latent | RE (NB) | PCC | MSE |\n| --- | --- | --- | --- | --- |\n'
for run in "$out"/*/; do
  name=$(basename "$run")
  python3 - "$run" "$name" <<'PY'
import json, sys
run, name = sys.argv[1], sys.argv[2]
s = json.load(open(f"{run}/eval/summary.json"))["reconstruction"]["all"]
latent = "PCA 32 components" if name == "pca" else ("8 tokens x 4 (Gaussian)" if name.startswith("gaussian") else "8 tokens x 4 levels (FSQ)")
fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"
print(f"| {name} | {latent} | {fmt(s.get('nb_error'))} | {fmt(s.get('pcc'))} | {fmt(s.get('mse'))} |")
PY
done
