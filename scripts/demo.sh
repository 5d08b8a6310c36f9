#!/usr/bin/env bash
# The README's main-job command: installs what it needs, builds, then runs two of the papers' recipes
# end to end on a simulated screen with known effects, as a user would (`latentcell run`):
#   scldm            Gaussian VAE + NB head, flow-matching prior
#   expressionvae-ar FSQ autoencoder + NB head, autoregressive prior
# each: train the autoencoder -> encode -> train the prior -> generate the held-out cells (pert_1 and
# pert_3 in cell type type_1, never trained on) -> evaluate them and the mean baselines with
# cell-eval's metrics and the distribution metrics; then prints one table. CPU-sized: a few minutes on two cores. DEMO_STEPS scales the training.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin="${LATENTCELL_BUILD_DIR:-build}/train/latentcell"
python="${LATENTCELL_CACHE:-$HOME/.cache/latentcell}/venv/bin/python"
steps=${DEMO_STEPS:-200}
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
split='cell_type=type_1; perturbation=pert_1,pert_3'
conditions='[perturbation,cell_type]'

"$bin" info
"$bin" simulate --out "$out/screen.h5ad" --cells 4000 --genes 120 --cell-types 2 --perturbations 6 --batches 2 \
  --seed 0
"$bin" data inspect "$out/screen.h5ad"

# The small scldm and expressionvae-ar recipes (configs/recipes/), each run end to end by
# `latentcell run` in its own run directory: autoencoder, encode, prior, generate the held-out cells,
# evaluate them and the three mean baselines. The overrides fit the recipes to the simulated screen.
stage1=(stage1.trainer.max_steps="$steps" stage1.trainer.eval_every=0 stage1.trainer.log_every=100)
stage2=("stage2.data.conditions=$conditions" stage2.data.control=control "stage2.data.exclude_column=''"
        "stage2.data.exclude_values=[]" stage2.trainer.max_steps="$steps" stage2.trainer.eval_every=0
        stage2.trainer.log_every=100 stage2.trainer.ema.decay=0.99)
for recipe in scldm expressionvae-ar; do
  "$bin" run "configs/recipes/$recipe-cpu.yaml" --data "$out/screen.h5ad" --split "$split" --run-dir "$out/$recipe" \
    "${stage1[@]}" "${stage2[@]}"
done

"$python" scripts/metrics_table.py \
  "scldm=$out/scldm/eval" "expressionvae-ar=$out/expressionvae-ar/eval" \
  "perturb-mean=$out/scldm/baselines/perturb-mean" "context-mean=$out/scldm/baselines/context-mean" \
  "cell-mean=$out/scldm/baselines/cell-mean"
echo "runs, predictions and metrics: $out"
