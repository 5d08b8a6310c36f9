#!/usr/bin/env bash
# The README's main-job command: installs what it needs, builds, then runs the whole pipeline on a
# simulated screen with known effects, as a user would:
#   simulate -> train two autoencoders (scLDM Gaussian VAE + NB; ExpressionVAE FSQ + NB)
#   -> train a prior on each (scLDM flow matching; ExpressionVAE autoregressive)
#   -> generate the held-out cells (pert_1 and pert_3 in cell type type_1, never trained on)
#   -> evaluate them and the mean baselines with cell-eval's metrics and the distribution metrics,
# and prints one table. CPU-sized: a few minutes on two cores. DEMO_STEPS scales the training.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bin="${LATENTCELL_BUILD_DIR:-build}/train/latentcell"
python="${LATENTCELL_CACHE:-$HOME/.cache/latentcell}/venv/bin/python"
steps=${DEMO_STEPS:-200}
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
holdout='["cell_type=type_1; perturbation=pert_1,pert_3"]'
conditions='[perturbation,cell_type]'

"$bin" info
"$bin" simulate --out "$out/screen.h5ad" --cells 4000 --genes 120 --cell-types 2 --perturbations 6 --batches 2 \
  --seed 0
"$bin" data inspect "$out/screen.h5ad"

common=(data.path="$out/screen.h5ad" "data.holdout=$holdout" data.val_fraction=0.05 trainer.max_steps="$steps"
        trainer.eval_every=0 trainer.log_every=100)
"$bin" train configs/stage1/scldm-vae-cpu.yaml run_dir="$out/ae-gaussian" "${common[@]}"
"$bin" train configs/stage1/expressionvae-fsq-nb-cpu.yaml run_dir="$out/ae-fsq" "${common[@]}"

prior_common=(data.path="$out/screen.h5ad" "data.conditions=$conditions" data.control=control
              "data.holdout=$holdout" trainer.max_steps="$steps" trainer.eval_every=0
              trainer.log_every=100 trainer.ema.decay=0.99)
"$bin" train configs/stage2/scldm-flow-cpu.yaml run_dir="$out/scldm" autoencoder="$out/ae-gaussian" "${prior_common[@]}"
"$bin" train configs/stage2/expressionvae-ar-cpu.yaml run_dir="$out/expressionvae-ar" autoencoder="$out/ae-fsq" \
  "${prior_common[@]}"

evaluate() {  # pred real outdir
  "$bin" evaluate --pred "$1" --real "$2" --pert-col perturbation --control-pert control --profile full \
    --outdir "$3" --log-level warn > /dev/null
}
for model in scldm expressionvae-ar; do
  "$bin" generate --prior "$out/$model" --like "$out/screen.h5ad" --cells test --predict sample \
    --out "$out/$model/pred.h5ad" --real-out "$out/$model/real.h5ad"
  evaluate "$out/$model/pred.h5ad" "$out/$model/real.h5ad" "$out/$model/eval"
done

# Baselines: means of the training cells (the same split as the priors').
"$python" - "$out/screen.h5ad" "$out/scldm/split.json" "$out/train.h5ad" <<'PY'
import json, sys
import anndata as ad
data, split, dest = sys.argv[1:]
a = ad.read_h5ad(data)
s = json.load(open(split))
drop = set(s["test"]) | set(s["val"])
a[[i for i in range(a.n_obs) if i not in drop]].copy().write_h5ad(dest)
PY
for kind in perturb-mean context-mean cell-mean; do
  "$bin" baseline --kind "$kind" --train "$out/train.h5ad" --like "$out/scldm/real.h5ad" --out "$out/$kind.h5ad" \
    --pert-col perturbation --control-pert control --celltype-col cell_type --log-level warn
  evaluate "$out/$kind.h5ad" "$out/scldm/real.h5ad" "$out/$kind-eval"
done

"$python" scripts/metrics_table.py \
  "scldm=$out/scldm/eval" "expressionvae-ar=$out/expressionvae-ar/eval" \
  "perturb-mean=$out/perturb-mean-eval" "context-mean=$out/context-mean-eval" "cell-mean=$out/cell-mean-eval"
echo "runs, predictions and metrics: $out"
