#!/usr/bin/env bash
# The stage-2 tables of docs/results.md (issue 6, acceptance 3; issue 8, acceptance 2): each prior
# family trained on the real screen's hold-out split (rep_3 x the perturbations at odd positions of
# the sorted target list), `generate --cells test` for the held-out cells, the mean baselines on the
# same cells, and `latentcell evaluate` (cell-eval's full profile plus distribution.csv) for all.
#
# Environment: DATA (h5ad), GAUSSIAN and FSQ (stage-1 run directories trained with the same hold-out
# rule, e.g. by scripts/stage2_autoencoders.sh), STEPS (prior training steps), SEEDS (e.g. "0 1 2"),
# PRIORS (subset of "flow jit ar mdlm"), OUT (runs), PYTHON (the reference env, for the train file and
# the table).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LATENTCELL_BIN:-build/train/latentcell}
data=${DATA:-../shared/data/papalexi2021_thp1_eccite_299genes.h5ad}
gaussian=${GAUSSIAN:?set GAUSSIAN to a Gaussian stage-1 run}
fsq=${FSQ:?set FSQ to an FSQ stage-1 run}
steps=${STEPS:-1000}
seeds=${SEEDS:-0}
priors=${PRIORS:-flow jit ar mdlm}
out=${OUT:-runs/stage2-results}
python=${PYTHON:-$HOME/.cache/latentcell/venv/bin/python}
mkdir -p "$out"

config_of() {
  case $1 in
    flow) echo configs/stage2/scldm-flow-cpu.yaml ;;
    jit) echo configs/stage2/scale-jit-cpu.yaml ;;
    ar) echo configs/stage2/expressionvae-ar-cpu.yaml ;;
    mdlm) echo configs/stage2/expressionvae-mdlm-cpu.yaml ;;
  esac
}

evaluate() {  # pred real outdir
  "$bin" evaluate --pred "$1" --real "$2" --pert-col perturbation --control-pert non-targeting \
    --profile full --outdir "$3" --log-level warn > /dev/null
}

for seed in $seeds; do
  for prior in $priors; do
    run="$out/$prior-s$seed"
    ae=$gaussian
    if [ "$prior" = ar ] || [ "$prior" = mdlm ]; then ae=$fsq; fi
    if [ ! -d "$run/checkpoints" ]; then
      "$bin" train "$(config_of "$prior")" run_dir="$run" autoencoder="$ae" data.path="$data" seed="$seed" \
        trainer.max_steps="$steps" --log-level warn
    fi
    if [ ! -f "$run/eval/agg_results.csv" ]; then
      "$bin" generate --prior "$run" --like "$data" --cells test --predict sample --seed "$seed" \
        --out "$run/pred.h5ad" --real-out "$run/real.h5ad" --log-level warn
      evaluate "$run/pred.h5ad" "$run/real.h5ad" "$run/eval"
    fi
  done
done

# Baselines from the training cells of the split (the same for every prior run).
first=$(ls -d "$out"/*-s*/ | head -1)
if [ ! -f "$out/baselines/train.h5ad" ]; then
  mkdir -p "$out/baselines"
  "$python" - "$data" "$first/split.json" "$out/baselines/train.h5ad" <<'PY'
import json, sys
import anndata as ad
data, split, dest = sys.argv[1:]
a = ad.read_h5ad(data)
a = a[a.obs["perturbation"] != "unassigned"].copy()
s = json.load(open(split))
test, val = set(s["test"]), set(s["val"])
train = [i for i in range(a.n_obs) if i not in test and i not in val]
a[train].copy().write_h5ad(dest)
PY
fi
for kind in perturb-mean context-mean cell-mean; do
  if [ ! -f "$out/baselines/$kind/agg_results.csv" ]; then
    "$bin" baseline --kind "$kind" --train "$out/baselines/train.h5ad" --like "$first/real.h5ad" \
      --out "$out/baselines/$kind.h5ad" --pert-col perturbation --control-pert non-targeting --celltype-col bio_rep \
      --log-level warn
    evaluate "$out/baselines/$kind.h5ad" "$first/real.h5ad" "$out/baselines/$kind"
  fi
done

pairs=()
for seed in $seeds; do
  for prior in $priors; do pairs+=("$prior=$out/$prior-s$seed/eval"); done
done
for kind in perturb-mean context-mean cell-mean; do pairs+=("$kind=$out/baselines/$kind"); done
"$python" scripts/metrics_table.py "${pairs[@]}"
