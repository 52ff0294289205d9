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
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/.venv"
stamp="$venv/.r2sft-installed"
python_bin="${PYTHON:-python3}"

if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    echo "[r2sft] building the environment in $venv (first run only)" >&2
    [[ -x "$venv/bin/python" ]] || "$python_bin" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # shellcheck disable=SC2086  # R2SFT_TORCH may hold extra pip arguments on purpose
    "$venv/bin/python" -m pip install -q ${R2SFT_TORCH:-torch==2.13.0}
    "$venv/bin/python" -m pip install -q -e ".[dev]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"

case "${1:-}" in
    test)
        shift
        exec python -m pytest -q "$@"
        ;;
    pipeline)
        shift
        exec bash launch/pipeline_embedded.sh "$@"
        ;;
    "")
        echo "usage: bash launch/run.sh {test|pipeline|COMMAND ...}" >&2
        exit 2
        ;;
    *)
        exec "$@"
        ;;
esac
