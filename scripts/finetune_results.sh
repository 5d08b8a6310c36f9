#!/usr/bin/env bash
# Fine-tuning vs training from scratch (issue 6, acceptance 4), on the real screen's hold-out split.
# A base flow prior is trained on the screen without four perturbations (NEW); then the prior for the
# full screen (those four as new labels) is trained twice for the same steps with the same schedule:
# from scratch, and with finetune.init_from the base prior. Both validate every EVAL_EVERY steps on
# the same validation cells with the same fixed noise, so the two curves compare the weights alone.
# Prints the two validation-loss curves as a Markdown table.
# Environment: DATA, GAUSSIAN (stage-1 run), BASE_STEPS, STEPS, EVAL_EVERY, OUT, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LATENTCELL_BIN:-build/train/latentcell}
data=${DATA:-../shared/data/papalexi2021_thp1_eccite_299genes.h5ad}
gaussian=${GAUSSIAN:?set GAUSSIAN to a Gaussian stage-1 run}
base_steps=${BASE_STEPS:-600}
steps=${STEPS:-300}
every=${EVAL_EVERY:-25}
out=${OUT:-runs/finetune-results}
python=${PYTHON:-$HOME/.cache/latentcell/venv/bin/python}
new='ATF2,CAV1,CMTM6,ETV7'
config=configs/stage2/scldm-flow-cpu.yaml
mkdir -p "$out"

if [ ! -d "$out/base/checkpoints" ]; then
  "$bin" train "$config" run_dir="$out/base" autoencoder="$gaussian" data.path="$data" trainer.max_steps="$base_steps" \
    "data.exclude_values=[unassigned,${new}]" --log-level warn
fi
for mode in scratch finetune; do
  extra=()
  if [ "$mode" = finetune ]; then extra=(finetune.init_from="$out/base"); fi
  if [ ! -d "$out/$mode/checkpoints" ]; then
    "$bin" train "$config" run_dir="$out/$mode" autoencoder="$gaussian" data.path="$data" trainer.max_steps="$steps" \
      trainer.eval_every="$every" trainer.log_every="$every" trainer.schedule.warmup_steps=25 "${extra[@]}" \
      --log-level warn
  fi
done

"$python" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def curve(mode):
    c = {}
    for line in open(f"{out}/{mode}/metrics.jsonl"):
        r = json.loads(line)
        if r.get("split") == "val":
            c[r["step"]] = r["loss"]
    return c
s, f = curve("scratch"), curve("finetune")
print("| step | validation loss, from scratch | validation loss, fine-tuned |")
print("| --- | --- | --- |")
for step in sorted(set(s) | set(f)):
    print(f"| {step} | {s.get(step, float('nan')):.4f} | {f.get(step, float('nan')):.4f} |")
PY
