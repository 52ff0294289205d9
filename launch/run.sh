#!/usr/bin/env bash
# Run a command inside r2sft's virtual environment, building it first when it is missing.
#
#   bash launch/run.sh test                 # the test suite
#   bash launch/run.sh pipeline             # collect -> train -> evaluate on the embedded default
#   bash launch/run.sh python -m r2sft.evaluate --decoder r2 --limit 50   # anything else
#
# The environment is .venv at the repository root. torch is installed first, pinned, so that
# pip never swaps in a different (multi-GB CUDA) build; set R2SFT_TORCH to change the pin,
# e.g. R2SFT_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
# The pipeline and other commands get r2sft and its dependencies; `test` adds the `dev` extra
# (pytest, ruff, and deepspeed and lm-eval, which tests/test_train_distributed.py and
# tests/test_harness.py use). Each install is done once, and again when pyproject.toml changes.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/.venv"
python_bin="${PYTHON:-python3}"

say() { echo "[r2sft] $*" >&2; }

# install STAMP WHAT PIP-ARGUMENTS...: pip install (its own progress lines shown) unless STAMP
# is newer than pyproject.toml.
install() {
    local stamp="$venv/.r2sft-installed-$1" what=$2 start=$SECONDS
    shift 2
    [[ -f "$stamp" && ! pyproject.toml -nt "$stamp" ]] && return 0
    say "installing $what"
    "$venv/bin/python" -m pip install "$@" >&2
    say "installed $what in $((SECONDS - start)) s"
    touch "$stamp"
}

base_environment() {
    if [[ ! -x "$venv/bin/python" ]]; then
        say "building the environment in $venv (first run only: a few minutes)"
        "$python_bin" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
    fi
    # shellcheck disable=SC2086  # R2SFT_TORCH may hold extra pip arguments on purpose
    install torch "torch first, pinned (${R2SFT_TORCH:-torch==2.13.0})" \
        ${R2SFT_TORCH:-torch==2.13.0}
    install base "r2sft and its dependencies (transformers, accelerate, peft, datasets, ...)" \
        -e .
}

case "${1:-}" in
    test)
        shift
        base_environment
        install dev "the test extras: pytest, ruff, deepspeed and lm-eval (pyproject.toml [dev])" \
            -e ".[dev]"
        export PATH="$venv/bin:$PATH"
        exec python -m pytest -q "$@"
        ;;
    pipeline)
        shift
        base_environment
        export PATH="$venv/bin:$PATH"
        exec bash launch/pipeline_embedded.sh "$@"
        ;;
    "")
        echo "usage: bash launch/run.sh {test|pipeline|COMMAND ...}" >&2
        exit 2
        ;;
    *)
        base_environment
        export PATH="$venv/bin:$PATH"
        exec "$@"
        ;;
esac
