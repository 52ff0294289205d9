"""What one sandboxed test run costs, per isolation mode, measured interleaved.

Every round runs the same one-test check once in each mode this machine offers (namespaces
as root, in a user namespace, none) and, with ``--baseline``, in an older sandbox module
loaded from a file (one exposing ``CodeCheck(solution, tests, entry_point)``,
``run_tests`` and ``run_many``, e.g. the exit-status sandbox of commit 0a740be:
``git show 0a740be:r2sft/tasks/sandbox.py > /tmp/old_sandbox.py``). Then ``run_many``
throughput over ``--batch`` checks, alternating the baseline and the strongest mode.
Prints JSON: medians in milliseconds and ratios to the baseline (or the strongest mode).

    python bench/sandbox_cost.py [--rounds 40] [--batch 40] [--workers 2] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from r2sft.sandbox import runner as sandbox

SOLUTION = "def add_one(x):\n    return x + 1\n"
TESTS = "def check(candidate):\n    assert candidate(1) == 2\n\ncheck(add_one)\n"


def _modes() -> dict[str, sandbox.Isolation]:
    found = {}
    for prefix in [*sandbox.namespace_prefixes(), ()]:
        name = "no-namespaces" if not prefix else "userns" if "--user" in prefix else "namespaces"
        isolation = sandbox.probe(prefix)
        if isinstance(isolation, sandbox.Isolation):
            found[name] = isolation
    return found


def _new_run(isolation: sandbox.Isolation, count: int, workers: int) -> Callable[[], None]:
    def run() -> None:
        sandbox.current_isolation = lambda: isolation  # type: ignore[assignment]
        check = sandbox.CodeCheck(SOLUTION, TESTS, ("add_one",))
        results = sandbox.run_many([check] * count, max_workers=workers)
        assert all(result.passed for result in results), results[0]

    return run


def _old_run(module: object, count: int, workers: int) -> Callable[[], None]:
    def run() -> None:
        check = module.CodeCheck(SOLUTION, TESTS, "add_one")  # type: ignore[attr-defined]
        results = module.run_many([check] * count, max_workers=workers)  # type: ignore[attr-defined]
        assert all(result.passed for result in results), results[0]

    return run


def _time(variants: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    for run in variants.values():
        run()  # warm up (probes, page cache)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", type=Path, default=None, help="older sandbox module file")
    args = parser.parse_args()
    modes = _modes()
    baseline = None
    if args.baseline is not None:
        spec = importlib.util.spec_from_file_location("baseline_sandbox", args.baseline)
        baseline = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = baseline  # dataclasses look their module up
        spec.loader.exec_module(baseline)
    single = {name: _new_run(isolation, 1, 1) for name, isolation in modes.items()}
    if baseline is not None:
        single = {"baseline": _old_run(baseline, 1, 1), **single}
    per_run = _time(single, args.rounds)
    reference = per_run[next(iter(per_run))]
    strongest = next(iter(modes))
    batch = {strongest: _new_run(modes[strongest], args.batch, args.workers)}
    if baseline is not None:
        batch = {"baseline": _old_run(baseline, args.batch, args.workers), **batch}
    throughput = _time(batch, 3)
    report = {
        "per_run_ms": {name: round(value * 1000, 1) for name, value in per_run.items()},
        "per_run_ratio": {name: round(value / reference, 2) for name, value in per_run.items()},
        f"run_many_{args.batch}_checks_{args.workers}_workers_s": {
            name: round(value, 2) for name, value in throughput.items()
        },
        "rounds": args.rounds,
        "isolation": sandbox.isolation_report(modes[strongest]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
