#!/usr/bin/env bash
# The stage-1 table of docs/results.md (issue 5, acceptance 5): every head with both bottlenecks, and
# PCA with the same latent size, trained on the real screen with 10% of cells held out, then scored on
# the held-out cells with `latentcell evaluate --profile reconstruction` (nb_error = RE, PCC and MSE
# on log1p-normalised values). Environment: DATA (h5ad), STEPS (training steps per model), OUT (runs),
# HEADS (default "nb hurdle ce_quant mse"), FSQ_ARGS (overrides for the FSQ models, e.g.
# "bottleneck.levels=[16,16,16,16] bottleneck.dither=0.5"), LATENTCELL_BIN, OMP_NUM_THREADS (default 1:
# one thread per training, the models run one after another). A run directory that already has
# checkpoints is scored, not trained, so runs made elsewhere can be linked into OUT.
#
# Scoring, twice per model:
# - `--predict mean` (eval/): count heads (nb, ce_quant) write mean counts, which the evaluator
#   log1p-normalises with the real cell's library size (scLDM's protocol); the hurdle and mse heads and
#   PCA write log1p-normalised values, scored as they are. RE needs an NB mean and dispersion, so it is
#   n/a for log1p-space models (PCA included); ce_quant's RE uses a gene-wise theta fitted by moments.
# - `--predict log1p_mean` (eval-log1p/): every head's predictive mean of the scored value,
#   E[log1p(x / l * 1e4)]; the same as `mean` for hurdle, mse and PCA.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
bin=${LATENTCELL_BIN:-build/train/latentcell}
data=${DATA:-../shared/data/papalexi2021_thp1_eccite_299genes.h5ad}
steps=${STEPS:-1500}
out=${OUT:-runs/stage1-results}
mkdir -p "$out"

score() {  # run directory -> reconstruction metrics of its held-out cells, both predictions
  local run=$1
  if [ ! -f "$run/eval/summary.json" ]; then
    "$bin" reconstruct --run "$run" --data "$data" --cells val --predict mean \
      --out "$run/recon-val.h5ad" --real-out "$run/real-val.h5ad" --log-level warn
    "$bin" evaluate --profile reconstruction --pred "$run/recon-val.h5ad" --real "$run/real-val.h5ad" \
      --pert-col perturbation --control-pert non-targeting --outdir "$run/eval" --log-level warn > /dev/null
  fi
  if [ ! -f "$run/eval-log1p/summary.json" ]; then
    "$bin" reconstruct --run "$run" --data "$data" --cells val --predict log1p_mean \
      --out "$run/recon-val-log1p.h5ad" --real-out "$run/real-val.h5ad" --log-level warn
    "$bin" evaluate --profile reconstruction --pred "$run/recon-val-log1p.h5ad" --real "$run/real-val.h5ad" \
      --pert-col perturbation --control-pert non-targeting --outdir "$run/eval-log1p" --log-level warn > /dev/null
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
  # shellcheck disable=SC2086  # FSQ_ARGS is a list of key=value overrides
  train "fsq-$head" "configs/stage1/expressionvae-fsq-${head/_/-}-cpu.yaml" ${FSQ_ARGS:-}
done
train pca configs/stage1/pca-cpu.yaml

printf '\n| model | latent (32 numbers per cell) | steps | RE (NB NLL), mean | PCC, mean | MSE, mean | PCC, log1p_mean | MSE, log1p_mean |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for run in "$out"/*/; do
  name=$(basename "$run")
  [ -f "$run/eval-log1p/summary.json" ] || continue
  python3 - "$run" "$name" <<'PY'
import json, re, sys
run, name = sys.argv[1], sys.argv[2]
config = open(f"{run}/config.yaml").read()
def value(key):  # a top-level-indented scalar or flow list of the resolved config
    m = re.search(rf"^\s+{key}: ([^#\n]+)", config, re.M)
    return m.group(1).strip() if m else "?"
kind = re.search(r"^bottleneck:[^\n]*\n\s+kind: \"?(\w+)", config, re.M)
if name == "pca":
    latent = "PCA, 32 components"
elif kind and kind.group(1) == "fsq":
    latent = f"8 tokens x 4, FSQ levels {value('levels')}"
    extra = [f"{k} {value(k)}" for k in ("dither", "bound_penalty") if value(k) not in ("0", "0.0", "?")]
    latent += "".join(f", {e}" for e in extra)
else:
    latent = "8 tokens x 4, Gaussian"
steps = re.search(r"^\s+max_steps: (\d+)", config, re.M)
mean = json.load(open(f"{run}/eval/summary.json"))["reconstruction"]["all"]
log1p = json.load(open(f"{run}/eval-log1p/summary.json"))["reconstruction"]["all"]
fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"
print(f"| {name} | {latent} | {steps.group(1) if steps and name != 'pca' else '-'} | {fmt(mean.get('nb_error'))} | "
      f"{fmt(mean.get('pcc'))} | {fmt(mean.get('mse'))} | {fmt(log1p.get('pcc'))} | {fmt(log1p.get('mse'))} |")
PY
done
