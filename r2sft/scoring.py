"""The one decode-and-score path: prompts in, scored trajectories out.

``collect.py`` (K candidates per prompt) and :func:`evaluate` (behind ``python -m
r2sft.evaluate``, training's checkpoint tracking, ``r2sft.tune`` and ``r2sft.report``) all go
through :func:`prepare_prompts` and :func:`decode_and_score`:

1. :func:`prepare_prompts` chat-renders and tokenises each example and checks it against
   the model (empty, prompt + canvas longer than its positions), failing or skipping;
2. :func:`decode_and_score` decodes rows in order of prompt length (little padding; a row's
   output does not depend on its batch), measures each trajectory's redundancy, detokenises
   (:func:`decode_rows`) and lets the task judge every response at once (code tasks run
   sandboxes in parallel). Its rows carry the ``decode`` columns of :mod:`r2sft.records`;
   :func:`cost_summary` averages their NFE and redundancy;
3. :func:`evaluate` runs both on a task's examples and returns the metrics of one decoder.

The lm-evaluation-harness model (``r2sft.harness``) decodes with :func:`decode_rows` and
leaves the judging to lm-eval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from r2sft.decoding import DecoderConfig, RedundancyConfig, generate, measure_redundancy
from r2sft.specs import LoadedModel, decode_response, render_prompt
from r2sft.tasks.base import Example, Task


class InvalidPromptError(ValueError):
    """A prompt cannot be decoded (empty, too long for the model, duplicate id)."""


@dataclass(frozen=True)
class PromptItem:
    """A checked prompt: its position in the task split, example, chat text and token ids."""

    index: int
    example: Example
    text: str
    ids: list[int]


def model_max_length(model: Any) -> int | None:
    """Longest sequence the model allows (its config's max positions), None if unbounded."""
    for key in ("max_sequence_length", "max_position_embeddings", "n_positions"):
        value = getattr(getattr(model, "config", None), key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def prepare_prompts(
    task: Task,
    examples: Sequence[Example],
    tokenizer: Any,
    gen_length: int,
    max_length: int | None,
    max_prompt_tokens: int | None = None,
    skip_invalid: bool = False,
) -> tuple[list[PromptItem], list[dict[str, str]]]:
    """Chat-render and tokenise each example; return the valid ones and the invalid ones
    (id + reason). Without ``skip_invalid`` any invalid prompt raises, before any decoding.

    A prompt is invalid when its question is empty or not text, or when prompt plus the
    ``gen_length`` canvas exceed ``max_length`` (the model's positions) or the prompt
    exceeds ``max_prompt_tokens``. Duplicate ids always raise (they key resume/selection).
    """
    limit = max_prompt_tokens
    if max_length is not None:
        room = max_length - gen_length
        if room < 1:
            raise InvalidPromptError(
                f"the canvas of gen_length {gen_length} leaves no room for a prompt in the "
                f"model's {max_length} positions; choose a smaller --gen_length."
            )
        limit = room if limit is None else min(limit, room)
    items, invalid, seen = [], [], set()
    for index, example in enumerate(examples):
        if example.id in seen:
            raise InvalidPromptError(
                f"task {task.name!r} gives prompt id {example.id!r} twice; ids must be unique "
                "(they key resumption and selection). Fix the data file."
            )
        seen.add(example.id)
        reason = None
        if not isinstance(example.question, str) or not example.question.strip():
            reason = "empty prompt (blank or non-text question)"
        else:
            text = render_prompt(tokenizer, task.user_message(example))
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if limit is not None and len(ids) > limit:
                bounds = [f"the model's {max_length} positions minus gen_length {gen_length}"]
                if max_prompt_tokens is not None:
                    bounds.append(f"--max_prompt_tokens {max_prompt_tokens}")
                reason = f"prompt has {len(ids)} tokens, more than the {limit} allowed by " + (
                    " and ".join(bounds) if max_length is not None else bounds[-1]
                )
        if reason is not None:
            invalid.append({"prompt_id": example.id, "reason": reason})
            continue
        items.append(PromptItem(index, example, text, ids))
    if invalid and not skip_invalid:
        shown = "; ".join(f"{bad['prompt_id']}: {bad['reason']}" for bad in invalid[:5])
        raise InvalidPromptError(
            f"{len(invalid)} invalid prompt(s) in task {task.name!r}: {shown}. Fix the data, "
            "shorten prompts / gen_length, or pass --skip_invalid."
        )
    return items, invalid


def decode_rows(
    model: Any,
    spec: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    decoder: DecoderConfig,
    seeds: Sequence[int],
    batch_size: int,
    redundancy_config: RedundancyConfig | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Decode ``prompts[i]`` (token ids) with seed ``seeds[i]``, measure its redundancy and
    detokenise it: every ``decode`` column of :mod:`r2sft.records` but ``correct``.

    Rows are decoded in order of prompt length (little padding; a row's output does not
    depend on its batch) and returned in the order of ``prompts``. Callers that judge the
    responses themselves (lm-evaluation-harness, ``r2sft.harness``) use this directly;
    :func:`decode_and_score` adds the task's verdict.
    """
    if len(seeds) != len(prompts):
        raise ValueError(f"decode_rows got {len(seeds)} seeds for {len(prompts)} prompts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if decoder.record_trace is False:
        decoder = DecoderConfig(**{**decoder.to_dict(), "record_trace": True})
    redundancy_config = redundancy_config or RedundancyConfig()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    rows: list[dict[str, Any]] = [{} for _ in prompts]
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        result = generate(model, spec, [prompts[i] for i in batch], decoder,
                          seeds=[seeds[i] for i in batch])  # fmt: skip
        scores = measure_redundancy(result, redundancy_config, eos_token_id=spec.eos_token_id)
        tokens, nfe = result.tokens.tolist(), result.nfe.tolist()
        step_map, rule_map = result.step_map.tolist(), result.rule_map.tolist()
        score_lists = {
            name: getattr(scores, name).tolist()
            for name in ("r_s", "r_t", "r_total", "r_total_per_token", "response_length")
        }
        for position, i in enumerate(batch):
            rows[i] = {
                "response": decode_response(tokenizer, spec, tokens[position]),
                "response_ids": tokens[position],
                "step_map": step_map[position],
                "rule_map": rule_map[position],
                "nfe": int(nfe[position]),
                "response_length": int(score_lists["response_length"][position]),
                **{name: float(score_lists[name][position])
                   for name in ("r_s", "r_t", "r_total", "r_total_per_token")},
            }  # fmt: skip
        if on_batch is not None:
            on_batch(len(batch))
    return rows


def decode_and_score(
    model: Any,
    spec: Any,
    tokenizer: Any,
    task: Task,
    items: Sequence[PromptItem],
    decoder: DecoderConfig,
    seeds: Sequence[int],
    batch_size: int,
    redundancy_config: RedundancyConfig | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Decode ``items[i]`` with seed ``seeds[i]``, measure, detokenise and score it.

    Args:
        model, spec, tokenizer: the loaded model (``r2sft.specs.LoadedModel``'s parts).
        task: judges the responses (``is_correct_batch``).
        items: checked prompts (:func:`prepare_prompts`).
        decoder: the decoder of every row (its trace is always recorded: R_total needs it).
        seeds: one seed per item (Gumbel noise, random token clusters).
        batch_size: rows per forward batch.
        redundancy_config: R_s / R_t settings (None: the defaults).
        on_batch: called with the number of rows after each decoded batch (progress bars).

    Returns:
        One dict per item, in the order of ``items``, with the ``decode`` columns of
        :mod:`r2sft.records` (response, response_ids, step_map, rule_map, nfe, scores,
        correct).
    """
    rows = decode_rows(model, spec, tokenizer, [item.ids for item in items], decoder, seeds,
                       batch_size, redundancy_config, on_batch)  # fmt: skip
    verdicts = task.is_correct_batch(
        [item.example for item in items], [row["response"] for row in rows]
    )
    for row, verdict in zip(rows, verdicts, strict=True):
        row["correct"] = bool(verdict)
    return rows


def cost_summary(rows: Sequence[dict[str, Any]], gen_length: int) -> dict[str, float | int]:
    """What decoding ``rows`` (:func:`decode_rows`' dicts, one canvas of ``gen_length``
    each) cost: ``mean_nfe``, ``tokens_per_forward`` (canvas positions per forward, over
    all rows), the mean redundancies ``mean_r_s`` / ``mean_r_t`` / ``mean_r_total`` /
    ``mean_r_total_per_token``, ``mean_response_tokens`` and ``num_examples``."""
    if not rows:
        raise ValueError("cost_summary got no rows")
    count = len(rows)

    def mean(key: str) -> float:
        return sum(float(row[key]) for row in rows) / count

    total_nfe = sum(int(row["nfe"]) for row in rows)
    return {
        "mean_nfe": total_nfe / count,
        "tokens_per_forward": gen_length * count / total_nfe,
        "mean_r_s": mean("r_s"),
        "mean_r_t": mean("r_t"),
        "mean_r_total": mean("r_total"),
        "mean_r_total_per_token": mean("r_total_per_token"),
        "mean_response_tokens": mean("response_length"),
        "num_examples": count,
    }


def evaluate(
    loaded: LoadedModel,
    task: Task,
    examples: list[Example],
    decoder: DecoderConfig,
    batch_size: int = 16,
    progress: bool = True,
    redundancy_config: RedundancyConfig | None = None,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Decode ``examples`` with ``decoder`` and score them (:func:`decode_and_score`).

    Every prompt is checked first (empty, prompt + canvas beyond the model's positions:
    an error before any decoding). Example ``i`` uses seed ``seed + i``. ``on_batch``
    (called with each batch's size) replaces the progress bar, for callers with their own.

    Returns a JSON-ready dict: ``accuracy``, ``mean_nfe``, ``tokens_per_forward``
    (generated canvas positions per forward), ``mean_r_s``, ``mean_r_t``, ``mean_r_total``,
    ``mean_r_total_per_token``, ``mean_response_tokens``, ``num_examples``,
    ``wall_seconds``, ``decoder`` and ``redundancy`` (the configs as dicts) and
    ``per_example`` (id, correct, nfe, r_s, r_t, r_total, response).
    """
    if not examples:
        raise ValueError("evaluate() got no examples; check the task split and --limit.")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    redundancy_config = redundancy_config or RedundancyConfig()
    start = time.perf_counter()
    items, _ = prepare_prompts(
        task, examples, loaded.tokenizer, decoder.gen_length, model_max_length(loaded.model)
    )
    own_bar = progress and on_batch is None
    with tqdm(total=len(items), desc=f"decode {decoder.name}", disable=not own_bar) as bar:
        rows = decode_and_score(
            loaded.model, loaded.spec, loaded.tokenizer, task, items, decoder,
            seeds=[seed + i for i in range(len(items))], batch_size=batch_size,
            redundancy_config=redundancy_config, on_batch=on_batch or bar.update,
        )  # fmt: skip
    return {
        "accuracy": sum(row["correct"] for row in rows) / len(rows),
        **cost_summary(rows, decoder.gen_length),
        "wall_seconds": time.perf_counter() - start,
        "decoder": {**decoder.to_dict(), "record_trace": True},
        "redundancy": redundancy_config.to_dict(),
        "per_example": [
            {
                "id": item.example.id,
                "correct": row["correct"],
                "nfe": row["nfe"],
                "r_s": row["r_s"],
                "r_t": row["r_t"],
                "r_total": row["r_total"],
                "response": row["response"],
            }
            for item, row in zip(items, rows, strict=True)
        ],  # fmt: skip
    }
