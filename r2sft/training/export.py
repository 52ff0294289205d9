"""Export ``OUTPUT_DIR/final/``: a loadable model folder with tokenizer and model card.

LoRA runs keep the adapter in ``final/adapter/`` and write the merged model to ``final/``;
the merge reloads the base weights on the main process, so it works the same after DDP,
ZeRO-2 and ZeRO-3 (where the trained weights only exist as shards until the Trainer
gathers them). :func:`push_to_hub` uploads the folder with huggingface_hub; the token comes
from ``HF_TOKEN`` or the cached ``hf auth login`` and is never printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from r2sft.decoding.presets import PRESET_FILE, model_preset, write_preset
from r2sft.hub import hub_upload, require_token
from r2sft.specs import load_model
from r2sft.training.config import TrainConfig
from r2sft.training.registry import get_objective
from r2sft.training.tracking import TRACKED_KEYS, read_metrics

FINAL_DIR = "final"
ADAPTER_DIR = "adapter"


def save_final(trainer: Any, config: TrainConfig, tokenizer: Any) -> Path:
    """Write the trained model (LoRA merged) and tokenizer to ``output_dir/final``."""
    final = config.output_path / FINAL_DIR
    if config.lora:
        adapter = final / ADAPTER_DIR
        trainer.save_model(str(adapter))  # peft adapter only; gathers ZeRO-3 shards
        trainer.accelerator.wait_for_everyone()
        if trainer.accelerator.is_main_process:
            merge_adapter(config, adapter, final)
    else:
        trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(final))
        copy_decoder_preset(config.model, final)
    return final


def copy_decoder_preset(base_model: str, final: Path) -> Path | None:
    """The base model's decoder preset (``r2sft_decoding.json``), written into ``final``
    so the fine-tuned model decodes with it by default and carries it to the Hub."""
    preset = model_preset(base_model)
    return write_preset(final, preset) if preset is not None else None


@contextmanager
def _without_zero3_loading() -> Iterator[None]:
    """Load weights whole, even inside a ZeRO-3 run.

    Under ZeRO-3, transformers' from_pretrained partitions new models across processes
    (deepspeed.zero.Init), a collective step: the merge, which runs on the main process
    only, would wait forever for the others. Hiding the run's DeepSpeed config from
    transformers for the duration of the load avoids that.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    ref = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    saved = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if saved is not None:
            hf_deepspeed.set_hf_deepspeed_config(saved)


def merge_adapter(config: TrainConfig, adapter_dir: Path, out_dir: Path) -> None:
    """Base model + adapter -> merged weights in ``out_dir`` (CPU, the base dtype)."""
    from peft import PeftModel

    with _without_zero3_loading():
        base = load_model(config.model, dtype="auto", trust_remote_code=config.trust_remote_code)
        merged = PeftModel.from_pretrained(base.model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def _data_kind(data: dict[str, Any]) -> str:
    """The card's name for the data: selected trajectories, or why they are not a selected set."""
    problems = []
    if data.get("incorrect_rows"):
        problems.append(f"{data['incorrect_rows']} incorrect")
    if data.get("repeated_prompts"):
        problems.append(f"{data['repeated_prompts']} prompts with several rows")
    if not problems:
        return "selected trajectories"
    return f"trajectories, **not a selected set** ({', '.join(problems)}; --allow_unselected_data)"


def model_card(
    config: TrainConfig,
    data: dict[str, Any],
    records: list[dict[str, Any]],
) -> str:
    """Markdown model card with Hub metadata, data, objective and a before/after table."""
    from huggingface_hub import ModelCardData

    card_data = ModelCardData(
        base_model=config.model if not Path(config.model).exists() else None,
        library_name="transformers",
        tags=["r2sft", "diffusion-llm", "masked-diffusion", f"objective-{config.objective}"],
        license=None,
    )
    before = records[0] if records else {}
    after = records[-1] if records else {}
    rows = "\n".join(
        f"| {key} | {_fmt(before.get(key))} | {_fmt(after.get(key))} |" for key in TRACKED_KEYS
    )
    objective = get_objective(config.objective).describe(config)
    decoding = "The model ships no decoder preset: it decodes with the official R² values."
    preset_file = config.output_path / FINAL_DIR / PRESET_FILE
    if preset_file.is_file():
        preset = json.loads(preset_file.read_text())
        tuned = preset.get("tuned") or {}
        decoding = (
            f"`{PRESET_FILE}` holds the decoder settings r2sft uses for this model by default "
            f"(`--preset model`), copied from the base model `{config.model}`"
            + (f", tuned on `{tuned.get('task')}` split `{tuned.get('split')}`" if tuned else "")
            + ". Re-tune them for the fine-tuned weights with `python -m r2sft.tune --model "
            "<this folder> --write`.\n\n```json\n"
            + json.dumps(preset.get("decoders"), indent=2, sort_keys=True)
            + "\n```"
        )
    tuning = (
        f"LoRA r={config.lora_r}, alpha={config.lora_alpha} (merged; adapter in `adapter/`)"
        if config.lora
        else "full fine-tuning"
    )
    settings = {
        k: getattr(config, k)
        for k in (
            "learning_rate",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_steps",
            "loss_normalisation",
            "seed",
        )
    }
    return f"""---
{card_data.to_yaml()}
---

# {Path(config.output_dir).name} (r2sft)

A masked-diffusion LM fine-tuned with r2sft's redundancy-aware SFT (the training stage of
R²-dLLM, arXiv 2604.18995): trained on the correct decodes with the lowest redundancy
(R_total) per prompt, so that it decodes in fewer forward passes.

- **Base model:** `{config.model}`
- **Data:** {data.get("num_trajectories", "?")} {_data_kind(data)} from `{config.data_dir}`
  (gen length {data.get("gen_length", "?")}, mean NFE {_fmt(data.get("mean_nfe"))},
  mean R_total {_fmt(data.get("mean_r_total"))})
- **Objective:** {objective}
- **Tuning:** {tuning}
- **Settings:** `{json.dumps(settings)}`

## Before / after

Held-out `{config.task}` split `{config.eval_split}`, {before.get("num_prompts", "?")} prompts,
decoder `{config.decoder}`; before = step {before.get("step", "?")}, after = step
{after.get("step", "?")}.

| metric | before | after |
|---|---|---|
{rows}

## Decoder settings

{decoding}

## Use

```python
import r2sft  # registers the LLaDA classes with transformers
from r2sft.specs import load_model
loaded = load_model("path/or/repo")
```

```bash
python -m r2sft.evaluate --model path/or/repo --decoder r2
```
"""


def write_model_card(config: TrainConfig, data: dict[str, Any]) -> Path:
    final = config.output_path / FINAL_DIR
    records = read_metrics(config.output_dir)
    path = final / "README.md"
    path.write_text(model_card(config, data, records))
    (final / "r2sft_metrics.json").write_text(json.dumps(records, indent=2))
    return path


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload ``folder`` to the Hub repo ``repo_id`` (created when missing); returns its URL.

    Raises:
        r2sft.hub.HubError: no token (set ``HF_TOKEN`` or run ``hf auth login``), or the
            upload failed (offline, token refused); the message says how to upload later.
    """
    from huggingface_hub import HfApi

    require_token(repo_id)
    later = f"The model is saved in {folder}; upload it later with `hf upload {repo_id} {folder}`."
    with hub_upload(repo_id, str(folder), later):
        api = HfApi()
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message="r2sft: upload fine-tuned model",
        )
    return str(url)
