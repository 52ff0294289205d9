"""Stage 1 of r2sft: sample candidate trajectories, score them, keep the least redundant
correct one per prompt (docs/method.md section 4).

Flow of :func:`run_collect`, on every process started by ``accelerate launch``:

1. Load the task's prompts and the model; render each prompt with the chat template and
   check it (empty, too long) -> a clear error, or a skip with ``--skip_invalid``.
2. The main process checks the output directory (a resumed run must have the same
   settings); all processes then list the prompts already collected and stride the rest
   between them (``remaining[rank::world]``): no communication beyond two barriers.
3. Each process decodes its prompts a shard at a time: K candidates per prompt with seeds
   derived from (seed, prompt id, k), batched across prompts and candidates, then scores
   correctness and R_total, and writes the shard atomically (``shards.py``).
4. After a barrier the main process merges all shards into ``candidates/`` and
   ``selected/``, writes ``summary.json`` and the dataset card, and pushes if asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from r2sft.collect.card import push_selected, render_card
from r2sft.collect.config import CollectConfig, CollectPlan
from r2sft.collect.selection import select_per_prompt, summarize
from r2sft.collect.shards import ShardStore, save_dataset_atomically
from r2sft.decoding import DecoderConfig
from r2sft.hub import check_hub_access
from r2sft.io import atomic_write_text
from r2sft.paths import EMBEDDED_MODEL_DIR
from r2sft.records import check_record
from r2sft.sandbox import isolation_report
from r2sft.scoring import (
    InvalidPromptError,
    PromptItem,
    decode_and_score,
    model_max_length,
    prepare_prompts,
)
from r2sft.specs import ModelLoadError, load_model, require_model_download
from r2sft.tasks.base import Example, Task

logger = logging.getLogger(__name__)


def candidate_seed(base_seed: int, prompt_id: str, candidate: int) -> int:
    """A 63-bit seed from (run seed, prompt id, candidate index): stable across runs,
    machines, process counts and batch layouts, so a resumed run redraws nothing."""
    digest = hashlib.blake2b(f"{base_seed}/{prompt_id}/{candidate}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


def prompt_hashes(examples: list[Example]) -> dict[str, str]:
    """A content hash of each example (question, reference) by id: resume refuses a prompt
    whose data changed under the same id (ids of file-based tasks are positions)."""
    hashes = {}
    for example in examples:
        content = json.dumps([example.question, example.reference], ensure_ascii=False)
        hashes[example.id] = hashlib.blake2b(content.encode(), digest_size=12).hexdigest()
    return hashes


def hub_revision(repo_id: str) -> str | None:
    """The commit a Hub id resolves to now (the snapshot folder of its ``config.json``, which
    honours ``HF_HUB_OFFLINE`` and the local cache), or None when it cannot be resolved; the
    model load that follows then names the problem."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, "config.json")).parent.name
    except Exception:  # noqa: BLE001 - any failure here resurfaces, named, in the model load
        return None


def model_fingerprint(model: str) -> dict[str, Any]:
    """What identifies the weights: for a local folder its resolved path and the size and
    modification time of every weight and config file (hashing GBs of weights would cost
    minutes); for a Hub id, the id and the commit it resolves to, so a repository updated
    upstream between a run and its resume is not silently mixed."""
    path = Path(model)
    if not path.is_dir():
        return {"hub_id": model, "revision": hub_revision(model)}
    files = {}
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix in (".safetensors", ".bin", ".pt", ".json"):
            stat = file.stat()
            files[file.name] = [stat.st_size, stat.st_mtime_ns]
    return {"path": str(path.resolve()), "files": files}


def decode_candidates(
    model: Any,
    spec: Any,
    tokenizer: Any,
    task: Task,
    items: list[PromptItem],
    config: CollectConfig,
    plan: CollectPlan,
) -> list[dict[str, Any]]:
    """K scored candidate records for each of ``items`` (in prompt, then k order), decoded
    with ``plan``'s decoders (``config``: seeds and batch size).

    Rows sharing a decoder (one group per decoder-mix entry) go through the scoring path
    together, ``batch_size`` sequences per forward batch.
    """
    groups: dict[str, list[tuple[int, int]]] = defaultdict(list)  # decoder json -> (item, k)
    decoders: dict[str, DecoderConfig] = {}
    for k, (_, decoder) in enumerate(plan.candidates):
        key = decoder.to_json()
        decoders[key] = decoder
        groups[key].extend((item_index, k) for item_index in range(len(items)))
    records: dict[tuple[int, int], dict[str, Any]] = {}
    for key, rows in groups.items():
        seeds = [candidate_seed(config.seed, items[i].example.id, k) for i, k in rows]
        scored = decode_and_score(
            model, spec, tokenizer, task, [items[i] for i, _ in rows], decoders[key], seeds,
            config.batch_size, plan.redundancy,
        )  # fmt: skip
        for (item_index, k), seed, decoded in zip(rows, seeds, scored, strict=True):
            item = items[item_index]
            records[(item_index, k)] = check_record({
                "prompt_id": item.example.id,
                "prompt_index": item.index,
                "candidate": k,
                "prompt": item.text,
                "prompt_ids": item.ids,
                "seed": seed,
                "decoder": key,
                "reference": item.example.reference,
                **decoded,
            })  # fmt: skip
    return [records[key] for key in sorted(records)]


def _accelerator(config: CollectConfig) -> Any:
    from accelerate import Accelerator, InitProcessGroupKwargs

    # Long barrier timeout: processes finish their shares at different times.
    handler = InitProcessGroupKwargs(timeout=timedelta(seconds=config.dist_timeout_s))
    return Accelerator(kwargs_handlers=[handler])


def merge_outputs(
    store: ShardStore,
    items: list[PromptItem],
    config: CollectConfig,
    plan: CollectPlan,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Merge shards into ``candidates/`` and ``selected/``; write summary.json and README.md."""
    from datasets import Dataset

    table = store.read_candidates([item.example.id for item in items])
    collected = set(table.column("prompt_id").to_pylist())
    missing = [item.example.id for item in items if item.example.id not in collected]
    if missing:
        raise RuntimeError(
            f"{len(missing)} prompt(s) have no candidates after collection (e.g. {missing[:3]}); "
            "a process may have died. Re-run the same command to collect them."
        )
    # Statistics need only the scalar columns; the datasets keep everything.
    light = table.select(["prompt_id", "candidate", "correct", "r_s", "r_t", "r_total",
                          "r_total_per_token", "nfe", "seed", "decoder"]).to_pylist()  # fmt: skip
    labels = plan.labels()
    for position, record in enumerate(light):
        record["_row"] = position
        record["decoder"] = labels.get(record["decoder"], record["decoder"])
    selection = select_per_prompt(light, config.selection)
    summary = summarize(light, selection)
    summary.update(extra)
    summary["selection"] = config.selection
    summary["config"] = config.to_dict()
    summary["decoder"] = json.loads(plan.base.to_json())
    summary["decoders"] = plan.decoders()
    summary["redundancy"] = plan.redundancy.to_dict()

    candidates = Dataset(table)
    selected = candidates.select([record["_row"] for record in selection.selected])
    root = Path(config.output_dir)
    save_dataset_atomically(candidates, root / "candidates")
    save_dataset_atomically(selected, root / "selected")
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    card = render_card(config, summary)
    atomic_write_text(root / "README.md", card)
    if config.push_to_hub:
        push_selected(selected, card, config.push_to_hub, private=config.hub_private,
                      saved_at=root / "selected")  # fmt: skip
    return summary


def run_collect(config: CollectConfig) -> dict[str, Any] | None:
    """Run (or resume) a collection; returns the summary on the main process, else None."""
    start = time.monotonic()
    plan = config.plan()  # resolved at parse time: the decoders every shard and the merge use
    accelerator = _accelerator(config)
    task = config.make_task()
    examples = task.load(config.split, limit=config.num_prompts)
    load_skipped = list(task.skipped)
    if not examples:
        raise InvalidPromptError(
            f"task {config.task!r} split {config.split!r} gave no prompts; check --data_path "
            "and --split."
        )
    if Path(config.model) == EMBEDDED_MODEL_DIR and not EMBEDDED_MODEL_DIR.exists():
        raise FileNotFoundError(
            f"the embedded model {EMBEDDED_MODEL_DIR} is missing from this checkout; rebuild it "
            "with `python launch/pretrain_embedded.py` or pass --model."
        )
    require_model_download(config.model)  # an unreachable Hub: named now, not after retries
    # Inputs checked before the (possibly long) model load.
    store = ShardStore(config.output_dir)
    inputs = (config.fingerprint(), model_fingerprint(config.model), prompt_hashes(examples))
    resumed = store.check_compatible(*inputs)  # on every rank: all fail alike
    if config.push_to_hub:
        check_hub_access(config.push_to_hub)
    try:
        loaded = load_model(config.model, dtype=config.dtype, device=accelerator.device)
    except ModelLoadError:
        raise  # already names the model and the fix
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"collect: cannot load --model {config.model!r}: {error}. Give a local dLLM folder "
            "(config.json, weights, tokenizer) or a Hub id of a supported family (llada, dream, "
            "masked_lm)."
        ) from error
    model, tokenizer, spec = loaded.model, loaded.tokenizer, loaded.spec
    if accelerator.is_main_process:  # after the load: a failed load leaves no output folder
        store.prepare(*inputs)
    items, invalid = prepare_prompts(
        task, examples, tokenizer, plan.base.gen_length, model_max_length(model),
        config.max_prompt_tokens, config.skip_invalid,
    )  # fmt: skip

    accelerator.wait_for_everyone()  # the main process has prepared the output directory
    done = store.finished_prompt_ids()
    # Nobody writes a shard before everyone has listed the finished prompts.
    accelerator.wait_for_everyone()
    remaining = [item for item in items if item.example.id not in done]
    mine = remaining[accelerator.process_index :: accelerator.num_processes]
    per_shard = config.shard_prompts()
    if accelerator.is_main_process:
        logger.info(
            "collect: %d prompts, %d already done, %d to do over %d process(es)",
            len(items), len(items) - len(remaining), len(remaining), accelerator.num_processes,
        )  # fmt: skip
    progress = tqdm(
        total=len(mine) * config.num_candidates,
        unit="cand",
        desc=f"collect (rank 0 of {accelerator.num_processes})",
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    decode_start = time.monotonic()
    correct_so_far = seen_so_far = 0
    for offset in range(0, len(mine), per_shard):
        chunk = mine[offset : offset + per_shard]
        records = decode_candidates(model, spec, tokenizer, task, chunk, config, plan)
        store.write_shard(records, f"p{chunk[0].index:08d}-r{accelerator.process_index}")
        seen_so_far += len(records)
        correct_so_far += sum(record["correct"] for record in records)
        progress.update(len(records))
        progress.set_postfix(accuracy=f"{correct_so_far / seen_so_far:.3f}")
    progress.close()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None
    decode_seconds = time.monotonic() - decode_start
    new_candidates = len(remaining) * config.num_candidates
    extra = {
        "invalid_prompts": len(invalid) + len(load_skipped),
        "invalid_prompt_details": invalid + [{"reason": reason} for reason in load_skipped],
        "resumed": resumed,
        "prompts_collected_this_run": len(remaining),
        "num_processes": accelerator.num_processes,
        "decode_seconds": decode_seconds,
        "candidates_per_second": new_candidates / decode_seconds if new_candidates else None,
        "wall_seconds": time.monotonic() - start,  # up to the merge (load + decode + score)
    }
    if task.runs_code:
        extra["sandbox"] = isolation_report()
    return merge_outputs(store, items, config, plan, extra)
