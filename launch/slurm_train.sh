#!/usr/bin/env bash
# Multi-node SFT under SLURM: one accelerate launcher per node, one process per GPU.
#
#   sbatch launch/slurm_train.sh      # configs/llada_8b_gsm8k_train.yaml on 2 nodes x 8 GPUs
#   sbatch --nodes 4 launch/slurm_train.sh configs/llada_8b_gsm8k_train.yaml [--flag value ...]
#   ACCELERATE_CONFIG=launch/accelerate/zero3.yaml sbatch --nodes 2 launch/slurm_train.sh CFG
#
# Re-submitting the same command resumes from the newest checkpoint (--resume_from_checkpoint
# latest is added when output_dir already holds one). The Hub token, if any, comes from HF_TOKEN.
#SBATCH --job-name=r2sft-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

config="${1:-configs/llada_8b_gsm8k_train.yaml}"
[[ $# -gt 0 ]] && shift
accelerate_config="${ACCELERATE_CONFIG:-launch/accelerate/zero2.yaml}"
gpus_per_node="${SLURM_GPUS_ON_NODE:-8}"
num_nodes="${SLURM_NNODES:-1}"
main_ip="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
main_port="${MAIN_PORT:-29500}"

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
mkdir -p logs
resume=()
output_dir="$(python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['output_dir'])" "$config")"
if compgen -G "$output_dir/checkpoint-*" > /dev/null; then
    resume=(--resume_from_checkpoint latest)
fi

# srun starts one launcher per node; SLURM_NODEID is each node's rank.
srun --kill-on-bad-exit=1 bash -c "accelerate launch \
    --config_file $accelerate_config \
    --num_machines $num_nodes \
    --num_processes $((num_nodes * gpus_per_node)) \
    --machine_rank \$SLURM_NODEID \
    --main_process_ip $main_ip \
    --main_process_port $main_port \
    --rdzv_backend c10d \
    train.py --config $config ${resume[*]} $*"
