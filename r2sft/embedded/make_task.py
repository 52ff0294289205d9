"""Write the arith task's split files (data/arith/{train,dev,test}.jsonl).

    python -m r2sft.embedded.make_task [--out data/arith]
    # fresh train prompts, e.g. one folder per self-training round (r2sft.rounds)
    python -m r2sft.embedded.make_task --out data/rounds/round-1 --splits train --seed 101

Deterministic: rerunning it reproduces the shipped files byte for byte. Every seed draws
from the same split (a problem's split is a hash of its arithmetic), so train problems of any
seed never appear in dev or test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from r2sft.paths import EMBEDDED_TASK_DIR
from r2sft.tasks.arith import SPLITS, write_splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_TASK_DIR)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                        help="splits to write (default: all three)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None,
                        help="draw with this seed (default: the shipped seeds)")  # fmt: skip
    parser.add_argument("--size", type=int, default=None,
                        help="problems per split (default: the shipped sizes)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        paths = write_splits(args.out, tuple(args.splits), seed=args.seed, size=args.size)
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
