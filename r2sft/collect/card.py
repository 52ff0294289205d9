"""Dataset card (README.md) of a collection, and pushing the selected set to the Hub."""

from __future__ import annotations

import json
from typing import Any

from r2sft.collect.config import CollectConfig
from r2sft.collect.selection import get_policy
from r2sft.hub import hub_upload
from r2sft.records import columns_markdown


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def render_card(config: CollectConfig, summary: dict[str, Any]) -> str:
    """Markdown card: what was collected, from what, counts, statistics and settings."""
    stats = summary["stats"]
    rows = []
    for label, key in (
        ("selected", "selected"),
        ("all correct", "all_correct"),
        ("all candidates", "all_candidates"),
    ):
        group = stats[key]
        rows.append(
            f"| {label} | {group['count']} | {_fmt(group['mean_nfe'])} | "
            f"{_fmt(group['median_nfe'])} | {_fmt(group['mean_r_total'])} | "
            f"{_fmt(group['median_r_total'])} | {_fmt(group['mean_r_s'])} | "
            f"{_fmt(group['mean_r_t'])} |"
        )
    decoder_rows = [
        f"| {label} | {group['candidates']} | {_fmt(group['accuracy'])} | "
        f"{group['selected']['count']} | {_fmt(group['selected']['mean_nfe'])} | "
        f"{_fmt(group['all_correct']['mean_nfe'])} | {_fmt(group['selected']['mean_r_total'])} | "
        f"{_fmt(group['all_correct']['mean_r_total'])} |"
        for label, group in summary.get("per_decoder", {}).items()
    ]
    policy = get_policy(summary.get("selection", "r_total")).description
    without = summary["prompt_ids_without_correct"]
    shown_without = ", ".join(without[:20]) + (" ..." if len(without) > 20 else "")
    settings = json.dumps(
        {"collect": config.to_dict(), "decoders": summary.get("decoders"),
         "redundancy": summary.get("redundancy")},
        indent=2,
    )  # fmt: skip
    counts = {
        "prompts": summary["prompts"],
        "candidates": summary["candidates"],
        "candidate accuracy": _fmt(summary["candidate_accuracy"]),
        "prompts with a correct candidate": summary["prompts_with_correct"],
        "selected": summary["selected"],
        "prompts without": summary["prompts_without_correct"],
        "invalid prompts skipped": summary.get("invalid_prompts", 0),
    }
    counts_table = "\n".join(
        [
            "| " + " | ".join(counts) + " |",
            "|" + "---|" * len(counts),
            "| " + " | ".join(str(value) for value in counts.values()) + " |",
        ]
    )
    processes = summary.get("num_processes", 1)
    return f"""---
tags:
- r2sft
- diffusion-llm
- dllm
- decoding-trajectories
- r2-dllm
---

# R² trajectories: {config.task} ({config.split}) decoded by {config.model}

Per prompt, {config.num_candidates} candidate decodes of a diffusion LLM, each scored for
correctness and for spatio-temporal redundancy R_total = lambda_s * R_s + lambda_t * R_t
(R²-dLLM, arXiv 2604.18995); `selected` keeps, per prompt, one correct candidate: {policy}.
Made with r2sft `collect.py`; train on it with
`accelerate launch train.py --data_dir <this folder>/selected`.

## Counts

{counts_table}

Prompts without a correct candidate (dropped from `selected`): {shown_without or "none"}.

## Statistics

NFE: forward passes of the decode. R_s: spatial events, R_t: redundant (forward, position)
pairs, both measured with the redundancy settings below.

| set | rows | mean NFE | median NFE | mean R_total | median R_total | mean R_s | mean R_t |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Per decoder of the candidate mix (settings below):

| decoder | candidates | accuracy | selected | NFE sel. | NFE corr. | R_total sel. | R_total corr. |
|---|---|---|---|---|---|---|---|
{chr(10).join(decoder_rows)}

## Columns

{columns_markdown()}

## Settings

```json
{settings}
```

Collection wall time: {_fmt(summary.get("wall_seconds"))} s over {processes} process(es).
"""


def push_selected(
    selected: Any, card: str, repo_id: str, private: bool = False, saved_at: Any = None
) -> None:
    """Push the selected dataset and its card to the Hub dataset repo ``repo_id``.

    The token comes from the environment (``HF_TOKEN``) or ``hf auth login``, never from a
    flag, so it is not echoed in logs or configs. The card goes up first: ``push_to_hub``
    then merges its ``dataset_info`` metadata into that README instead of writing its own.
    A failure is one :class:`r2sft.hub.HubError` saying the data stays in ``saved_at``.
    """
    from huggingface_hub import HfApi

    later = (
        f"The selected set is saved in {saved_at}; re-run the same collect.py command to push "
        "it (nothing is decoded again)."
    )
    with hub_upload(repo_id, "the selected set", later):
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_file(
            path_or_fileobj=card.encode(),
            path_in_repo="README.md",
            repo_id=repo_id,
            repo_type="dataset",
            commit_message="r2sft collect: dataset card",
        )
        selected.push_to_hub(repo_id, private=private, commit_message="r2sft collect: selected")
