"""Write the arith task's split files (data/arith/{train,dev,test}.jsonl).

    python -m r2sft.embedded.make_task [--out data/arith]

Deterministic: rerunning it reproduces the shipped files byte for byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from r2sft.paths import EMBEDDED_TASK_DIR
from r2sft.tasks.arith import write_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_TASK_DIR)
    args = parser.parse_args()
    for split, path in write_splits(args.out).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
