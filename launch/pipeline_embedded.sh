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
model=data/tiny-llada

say() { echo "[r2sft] $*" >&2; }
clock() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
# stage NAME COMMAND...: run one stage, saying when it starts and how long it took.
stage() {
    local name=$1 start=$SECONDS
    shift
    say "stage $name: started $(date +%H:%M:%S)"
    "$@"
    say "stage $name: done in $(clock $((SECONDS - start)))"
}

# Threads that fit the model and this machine, waiting without spinning (r2sft/threads.py:
# spinning OpenMP threads slowed training 25-40x beside other processes); accelerate launch
# would pin OMP_NUM_THREADS to 1. Your own OMP_NUM_THREADS / OMP_WAIT_POLICY are kept.
threads=$(python -m r2sft.threads --model "$model")
eval "$threads"
say "CPU threads: OMP_NUM_THREADS=$OMP_NUM_THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}" \
    "on $(nproc) cores (set them to change)"

collect=(accelerate launch --num_processes 1 collect.py --output_dir "$out/collect")
# A re-run retrains from the same (resumed, already complete) collection: start train over.
train=(accelerate launch --num_processes 1 train.py --data_dir "$out/collect"
       --output_dir "$out/train" --overwrite_output_dir true)
report=(python -m r2sft.report --finetuned "$out/train/final" --levers true
        --output "$out/pipeline_report.json" --commands "${collect[*]}" "${train[*]}")
stage "1/3 collect (2000 prompts x 4 candidates)" "${collect[@]}"
stage "2/3 train (8000 steps, tracking decode every 2000)" "${train[@]}"
stage "3/3 report (base and fine-tuned model, test split)" "${report[@]}"
say "done in $(clock "$SECONDS"): $out/pipeline_report.json, $out/collect/summary.json," \
    "$out/train/metrics.png"
