#!/usr/bin/env bash
# The whole r2sft pipeline on the embedded default (tiny LLaDA + arithmetic task), on CPU:
#   1. collect: candidate decodes, correctness, minimal-R_total trajectory per prompt
#   2. train:   SFT of the model on those trajectories, every checkpoint evaluated
#   3. report:  base and fine-tuned model on the whole test split with the same decoders
#               (threshold and r2, the model's preset) -> $out/pipeline_report.json
# Run through launch/run.sh (which builds the environment): `bash launch/run.sh pipeline`.
# To change a stage, edit its YAML config (configs/collect_embedded.yaml,
# configs/train_embedded.yaml) or run the stage by hand with flags.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${R2SFT_OUTPUT:-outputs}"
# accelerate launch pins OMP_NUM_THREADS to 1 unless it is set; one process may use every core.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

collect=(accelerate launch --num_processes 1 collect.py --output_dir "$out/collect")
# A re-run retrains from the same (resumed, already complete) collection: start train over.
train=(accelerate launch --num_processes 1 train.py --data_dir "$out/collect"
       --output_dir "$out/train" --overwrite_output_dir true)
"${collect[@]}"
"${train[@]}"
python -m r2sft.report --finetuned "$out/train/final" --levers true \
    --output "$out/pipeline_report.json" \
    --commands "${collect[*]}" "${train[*]}"
echo "[r2sft] done: $out/pipeline_report.json, $out/collect/summary.json, $out/train/metrics.png"
