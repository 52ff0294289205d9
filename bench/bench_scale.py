"""Decode throughput and memory at LLaDA-8B's shape, with random weights made on the device.

    python bench/bench_scale.py --output scale.json        # a GPU: bf16, batch 1 / 8 / 32
    python bench/bench_scale.py --tiny                     # the same code at a tiny shape (CPU)

The model is LLaDA-8B-Instruct's architecture (``LLaDAConfig()`` defaults: d_model 4096, 32
layers, vocab 126464) built on the meta device and materialised directly on the target
device with random weights (no checkpoint download, no CPU copy). Reported:

- ``decode``: per cache mode (none, dual) and batch size, generated tokens/s, mean NFE,
  seconds and the peak device memory of the decode (GPU only). The commit schedule is
  scripted as in ``bench/bench_cache.py`` (fixed policy, 10 forwards per block of 32), since
  random weights have no meaningful confidences; repeats interleave the modes.
- ``lora_step``: one LoRA SFT step (LLaDA masked-diffusion loss, AdamW, gradient
  checkpointing) on ``train_batch`` x ``train_length`` tokens: seconds and peak memory.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from bench_cache import bench_main, random_prompts, synchronize, time_decodes

from r2sft.modeling import LLaDAConfig, LLaDAModelLM
from r2sft.modeling.forward import predict_logits
from r2sft.specs import apply_lora, default_device, resolve_spec
from r2sft.training import objectives as obj

TINY_SHAPE = {
    "d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 128,
    "vocab_size": 512, "embedding_size": 512, "mask_token_id": 511, "eos_token_id": 510,
    "pad_token_id": 510, "eot_token_id": 509, "max_sequence_length": 1024,
}  # fmt: skip


@dataclass
class BenchScaleArgs:
    tiny: bool = field(default=False, metadata={"help": "tiny shape and sizes (CPU, tests)"})
    device: str | None = None  # default: cuda when available, else cpu
    dtype: str | None = None  # default: bfloat16 on cuda, float32 on cpu
    batch_sizes: str | None = None  # default 1,8,32 (1,2 with --tiny)
    cache: str = "none,dual"  # as bench_cache.py: mode or mode:cache_refresh
    prompt_length: int | None = None  # default 200 (24 with --tiny)
    gen_length: int | None = None  # default 256 (32 with --tiny)
    block_length: int | None = None  # default 32 (8 with --tiny)
    steps: int | None = None  # default 80, i.e. 10 forwards per block (8 with --tiny)
    repeats: int = 1
    lora_r: int = 16
    train_batch: int | None = None  # default 4 (2 with --tiny)
    train_length: int | None = None  # default 512 (32 with --tiny)
    seed: int = 0
    output: str | None = None

    def resolve(self) -> None:
        """Fill what the mode (--tiny or the 8B shape) decides."""
        defaults = {
            "batch_sizes": ("1,8,32", "1,2"), "prompt_length": (200, 24),
            "gen_length": (256, 32), "block_length": (32, 8), "steps": (80, 8),
            "train_batch": (4, 2), "train_length": (512, 32),
        }  # fmt: skip
        for name, (full, tiny) in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, tiny if self.tiny else full)


def build_random_model(config: LLaDAConfig, device: str, dtype: torch.dtype) -> LLaDAModelLM:
    """The model built on the meta device, then materialised on ``device`` and filled with
    random weights there (normal(0, init_std) matrices, unit norm weights)."""
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    model = model.to(dtype).to_empty(device=device)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, config.init_std)
            else:  # norm weights 1, biases 0
                parameter.fill_(0.0 if name.endswith("bias") else 1.0)
    return model.eval()


def time_decode(args: BenchScaleArgs, model, spec, device: str) -> list[dict[str, Any]]:
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    prompts = random_prompts(max(sizes), args.prompt_length, spec.mask_token_id - 8, args.seed)
    schedule = {"gen_length": args.gen_length, "block_length": args.block_length,
                "steps": args.steps}  # fmt: skip
    rows, _ = time_decodes(model, spec, prompts, args.cache.split(","), sizes, schedule,
                           args.repeats, device)  # fmt: skip
    return rows


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def lora_step(args: BenchScaleArgs, model, spec, device: str) -> dict[str, Any]:
    """One LoRA SFT step with gradient checkpointing: the LLaDA masked-diffusion loss on
    random canvases (the first quarter prompt, the rest answer), AdamW on the adapters."""
    # transformers 5 renamed gradient checkpointing (the old name warns until v6).
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    checkpointing = all(block.gradient_checkpointing for block in model.model.transformer.blocks)
    peft_model = apply_lora(model, spec, r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0)
    peft_model.enable_input_require_grads()
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch, length = args.train_batch, args.train_length
    generator = torch.Generator().manual_seed(args.seed)
    labels = torch.randint(0, spec.mask_token_id - 8, (batch, length), generator=generator)
    labels = labels.to(device)
    attention = torch.ones_like(labels)
    answer = torch.arange(length, device=device)[None].expand(batch, length) >= length // 4
    noise = obj.hashed_noise(torch.arange(batch, device=device), 0, args.seed, length)
    masked, t = obj.llada_mask(answer, noise=noise)
    noised = obj.apply_mask(labels, masked, spec.mask_token_id)
    synchronize(device)
    _reset_peak(device)
    start = time.perf_counter()
    logits = predict_logits(peft_model, spec, noised, attention)
    loss = obj.llada_loss(logits, labels, masked, t, answer)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return {
        "batch": batch,
        "length": length,
        "lora_r": args.lora_r,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "loss": float(loss.detach()),
        "activation_checkpointing": checkpointing,
        "seconds": time.perf_counter() - start,
        "peak_memory_gib": _peak_gib(device),
    }


def run(args: BenchScaleArgs) -> dict[str, Any]:
    args.resolve()
    device = default_device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    config = LLaDAConfig(**TINY_SHAPE) if args.tiny else LLaDAConfig()
    torch.manual_seed(args.seed)
    _reset_peak(device)
    start = time.perf_counter()
    model = build_random_model(config, device, dtype)
    synchronize(device)
    build_seconds = time.perf_counter() - start
    spec = resolve_spec(config)
    report: dict[str, Any] = {
        "shape": {
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "n_heads": config.n_heads,
            "vocab_size": config.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(dtype).removeprefix("torch."),
            "prompt_length": args.prompt_length,
            "gen_length": args.gen_length,
            "block_length": args.block_length,
            "steps": args.steps,
        },  # fmt: skip
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "build_seconds": build_seconds,
        "weights_memory_gib": _peak_gib(device),
    }
    with torch.no_grad():
        report["decode"] = time_decode(args, model, spec, device)
    report["lora_step"] = lora_step(args, model, spec, device)
    report["args"] = asdict(args)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return bench_main(BenchScaleArgs, run, argv)


if __name__ == "__main__":
    main()
