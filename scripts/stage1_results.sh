#!/usr/bin/env bash
# The stage-1 table of docs/results.md (issue 5, acceptance 5): every head with both bottlenecks, and
# PCA with the same latent size, trained on the real screen with 10% of cells held out, then scored on
# the held-out cells with `latentcell evaluate --profile reconstruction` (nb_error = RE, PCC and MSE
# on log1p-normalised values). Environment: DATA (h5ad), STEPS (training steps per model), OUT (runs),
# HEADS (default "nb hurdle ce_quant mse"), LATENTCELL_BIN, OMP_NUM_THREADS (default 1: one thread per
# training, the models run one after another).
#
# Scoring: every model reconstructs with --predict mean. Count heads (nb, ce_quant) write counts, which
# the evaluator log1p-normalises with the real cell's library size; the hurdle and mse heads and PCA write
# log1p-normalised values, scored as they are. RE needs an NB mean and dispersion, so it is n/a for
# log1p-space models (PCA included); ce_quant's RE uses a gene-wise theta fitted by moments.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
bin=${LATENTCELL_BIN:-build/train/latentcell}
data=${DATA:-../shared/data/papalexi2021_thp1_eccite_299genes.h5ad}
steps=${STEPS:-1500}
out=${OUT:-runs/stage1-results}
mkdir -p "$out"

score() {  # run directory -> reconstruction metrics of its held-out cells
  local run=$1
  if [ ! -f "$run/eval/summary.json" ]; then
    "$bin" reconstruct --run "$run" --data "$data" --cells val --predict mean \
      --out "$run/recon-val.h5ad" --real-out "$run/real-val.h5ad" --log-level warn
    "$bin" evaluate --profile reconstruction --pred "$run/recon-val.h5ad" --real "$run/real-val.h5ad" \
      --pert-col perturbation --control-pert non-targeting --outdir "$run/eval" --log-level warn > /dev/null
  fi
}

train() {  # name config [overrides...]
  local name=$1 config=$2
  shift 2
  if [ ! -d "$out/$name/checkpoints" ]; then
    "$bin" train "$config" run_dir="$out/$name" data.path="$data" trainer.max_steps="$steps" "$@" --log-level warn
  fi
  score "$out/$name"
}

for head in ${HEADS:-nb hurdle ce_quant mse}; do
  train "gaussian-$head" configs/stage1/scldm-vae-cpu.yaml head.kind="$head" head.library=auto
  train "fsq-$head" "configs/stage1/expressionvae-fsq-${head/_/-}-cpu.yaml"
done
train pca configs/stage1/pca-cpu.yaml

printf '\n| model | latent (32 numbers per cell) | scored values | RE (NB NLL) | PCC | MSE |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
for run in "$out"/*/; do
  name=$(basename "$run")
  [ -f "$run/eval/summary.json" ] || continue
  python3 - "$run" "$name" <<'PY'
import json, sys
run, name = sys.argv[1], sys.argv[2]
summary = json.load(open(f"{run}/eval/summary.json"))["reconstruction"]
s = summary["all"]
latent = "PCA, 32 components" if name == "pca" else (
    "8 tokens x 4, Gaussian" if name.startswith("gaussian") else "8 tokens x 4, FSQ levels 8,5,5,5")
scored = "log1p of counts (real library)" if summary["pred_space"] == "counts" else "log1p, as written"
fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"
print(f"| {name} | {latent} | {scored} | {fmt(s.get('nb_error'))} | {fmt(s.get('pcc'))} | {fmt(s.get('mse'))} |")
PY
done
