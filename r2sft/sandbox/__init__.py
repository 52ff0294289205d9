"""The code sandbox: run untrusted, model-written code against its tests (code-task scoring).

- :mod:`r2sft.sandbox.runner`: the parent side, in the r2sft process: probes the isolation
  this machine allows, starts one harness process per run, enforces the wall-clock limit
  and reads the verdict.
- :mod:`r2sft.sandbox.harness`: the sandbox's first process, run as a script
  (``python -I -S -B harness.py``); standard library only, since r2sft is not importable
  inside the sandbox.

Threat model, isolation levels and measurements: docs/sandbox.md.
"""

from r2sft.sandbox.runner import (
    CodeCheck,
    Isolation,
    SandboxLimits,
    SandboxResult,
    current_isolation,
    isolation_report,
    run_many,
    run_tests,
)

__all__ = [
    "CodeCheck",
    "Isolation",
    "SandboxLimits",
    "SandboxResult",
    "current_isolation",
    "isolation_report",
    "run_many",
    "run_tests",
]
