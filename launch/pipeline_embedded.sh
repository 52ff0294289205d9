#!/usr/bin/env bash
# The whole r2sft pipeline on the embedded default (tiny LLaDA + arithmetic task), on CPU:
#   1. collect: candidate decodes, correctness, minimal-R_total trajectory per prompt
#   2. train:   SFT of the model on those trajectories, every checkpoint evaluated
#   3. evaluate: the fine-tuned model on the held-out test split, threshold and R² decoders
# Run through launch/run.sh (which builds the environment): `bash launch/run.sh pipeline`.
# To change a stage, edit its YAML config (configs/collect_embedded.yaml,
# configs/train_embedded.yaml) or run the stage by hand with flags.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${R2SFT_OUTPUT:-outputs}"
# accelerate launch pins OMP_NUM_THREADS to 1 unless it is set; one process may use every core.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

accelerate launch --num_processes 1 collect.py --output_dir "$out/collect"
# A re-run retrains from the same (resumed, already complete) collection: start train over.
accelerate launch --num_processes 1 train.py --data_dir "$out/collect" --output_dir "$out/train" \
    --overwrite_output_dir true
for decoder in threshold r2; do
    python -m r2sft.evaluate --model "$out/train/final" --decoder "$decoder" \
        --output "$out/eval_final_$decoder.json"
done
echo "[r2sft] done: $out/collect/summary.json, $out/train/metrics.png, $out/eval_final_*.json"
