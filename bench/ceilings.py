"""What the device can do at best, measured in the run that compares against it: matmul
FLOP/s on random data and device-to-device copy bandwidth, plus the timing helpers the
benches share (median of synchronised runs after warm-up).

    python bench/ceilings.py                  # cuda: bf16 8192^3 matmul, 1 GiB copy
    python bench/ceilings.py --tiny           # cpu: fp32 256^3 matmul, 16 MiB copy
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (no-op on a CPU, whose ops are synchronous)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(
    fn: Callable[[], Any], device: str | torch.device, warmup: int = 2, repeats: int = 5
) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` synchronised calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(device: str, dtype: torch.dtype, size: int, inner: int = 10) -> float:
    """Dense matmul TFLOP/s of ``size``^3 products on random data (``inner`` per timing, so a
    millisecond-long GPU product is not dominated by the host's launch)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)

    def products() -> None:
        for _ in range(inner):
            torch.mm(a, b)

    seconds = median_seconds(products, device, warmup=1, repeats=5) / inner
    return 2 * size**3 / seconds / 1e12


def copy_gbps(device: str, mebibytes: int, inner: int = 5) -> float:
    """Device-to-device copy bandwidth, bytes read plus bytes written per second (GB/s)."""
    source = torch.ones(mebibytes * 2**20 // 2, device=device, dtype=torch.bfloat16)
    target = torch.empty_like(source)

    def copies() -> None:
        for _ in range(inner):
            target.copy_(source)

    seconds = median_seconds(copies, device, warmup=1, repeats=5) / inner
    return 2 * source.numel() * source.element_size() / seconds / 1e9


def ceilings(device: str, tiny: bool) -> dict[str, Any]:
    """bf16 matmul at 8192^3 and a 1 GiB copy on a GPU; fp32 at 256^3 and 16 MiB with
    ``tiny`` or on a CPU (the same code, sized to finish in a second there)."""
    small = tiny or not device.startswith("cuda")
    dtype = torch.float32 if small else torch.bfloat16
    size, mebibytes = (256, 16) if small else (8192, 1024)
    report = {
        "device": device,
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "matmul_size": size,
        "matmul_tflops": matmul_tflops(device, dtype, size),
        "copy_mib": mebibytes,
        "copy_gbps_read_plus_write": copy_gbps(device, mebibytes),
    }
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return report


if __name__ == "__main__":
    target = "cuda" if torch.cuda.is_available() and "--tiny" not in sys.argv else "cpu"
    print(json.dumps(ceilings(target, "--tiny" in sys.argv), indent=2))
