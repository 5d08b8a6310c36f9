#!/usr/bin/env bash
# One seed of the stage-2 tables of docs/results.md (issue 8, acceptance 2) on the real screen's
# hold-out split: both autoencoders (Gaussian VAE + NB, 1,200 steps; FSQ + NB, 800 steps) trained with
# that seed, the four priors (scripts/stage2_results.sh, 1,000 steps), JiT with v-prediction and
# v-loss, flow guidance w = 2 and 5, and decoding with the head's mean for every prior.
#
# Usage: scripts/stage2_seed.sh SEED   (environment: OUT, default runs/stage2-seeds; LATENTCELL_BIN; DATA)
set -euo pipefail
seed=${1:?usage: scripts/stage2_seed.sh SEED}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=PASSIVE
bin=${LATENTCELL_BIN:-build/train/latentcell}
data=${DATA:-../shared/data/papalexi2021_thp1_eccite_299genes.h5ad}
out=${OUT:-runs/stage2-seeds}
results=$out/results
holdout="bio_rep=rep_3; perturbation=BRD4,CD86,CUL3,IFNGR1,IRF1,JAK2,MYC,PDCD1LG2,SMAD4,STAT1,STAT3,TNFRSF14"
ev() {  # pred real outdir
  "$bin" evaluate --pred "$1" --real "$2" --pert-col perturbation --control-pert non-targeting --profile full \
    --outdir "$3" --log-level warn > /dev/null
}
mkdir -p "$out"
[ -d "$out/ae-gauss-s$seed/checkpoints" ] || "$bin" train configs/stage1/scldm-vae-cpu.yaml run_dir="$out/ae-gauss-s$seed" \
  "data.holdout=[\"$holdout\"]" data.val_fraction=0.05 trainer.max_steps=1200 seed="$seed" --log-level warn
[ -d "$out/ae-fsq-s$seed/checkpoints" ] || "$bin" train configs/stage1/expressionvae-fsq-nb-cpu.yaml run_dir="$out/ae-fsq-s$seed" \
  "data.holdout=[\"$holdout\"]" data.val_fraction=0.05 trainer.max_steps=800 seed="$seed" --log-level warn
LATENTCELL_BIN=$bin GAUSSIAN=$out/ae-gauss-s$seed FSQ=$out/ae-fsq-s$seed SEEDS=$seed STEPS=1000 OUT=$results \
  DATA=$data scripts/stage2_results.sh
run=$results/jit-vv-s$seed
[ -d "$run/checkpoints" ] || "$bin" train configs/stage2/scale-jit-cpu.yaml run_dir="$run" autoencoder="$out/ae-gauss-s$seed" \
  data.path="$data" seed="$seed" trainer.max_steps=1000 prior.jit.prediction=v prior.jit.loss=v --log-level warn
[ -f "$run/eval/agg_results.csv" ] || {
  "$bin" generate --prior "$run" --like "$data" --cells test --predict sample --seed "$seed" --out "$run/pred.h5ad" \
    --real-out "$run/real.h5ad" --log-level warn
  ev "$run/pred.h5ad" "$run/real.h5ad" "$run/eval"
}
flow=$results/flow-s$seed
for w in 2 5; do
  [ -f "$flow/eval-w$w/agg_results.csv" ] || {
    "$bin" generate --prior "$flow" --like "$data" --cells test --predict sample --seed "$seed" --guidance "$w" \
      --out "$flow/pred-w$w.h5ad" --log-level warn
    ev "$flow/pred-w$w.h5ad" "$flow/real.h5ad" "$flow/eval-w$w"
  }
done
for prior in flow jit ar mdlm; do
  run=$results/$prior-s$seed
  [ -f "$run/eval-mean/agg_results.csv" ] || {
    "$bin" generate --prior "$run" --like "$data" --cells test --predict mean --seed "$seed" --out "$run/pred-mean.h5ad" \
      --real-out "$run/real-mean.h5ad" --log-level warn
    ev "$run/pred-mean.h5ad" "$run/real-mean.h5ad" "$run/eval-mean"
  }
done
